"""End to end through Flower's real processes: a private SuperLink, `flwr run`, simulated SuperNodes.

The slow tier's one real simulation is also its crash test and its Ray cluster test (about a
minute per run: Ray and the SuperLink start each time). The ServerApp is killed with SIGKILL
mid-round 2; the run, resumed from round 1's checkpoint on an existing Ray cluster (a head
started for the test, as a researcher's cluster would be), then finishes as if nothing happened:
the last completed checkpoint is intact, the ledger counts every client and round once, and
checkpoints, metrics, node state and the privacy report are all written. Resume, budgets,
central DP and the rest of the federated behaviour run in one process (tests/test_federation.py).
"""

import json
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path

import psutil
import pytest
import torch
from conftest import as_pairs, make_tiny, tiny_run_config, write_csv
from safetensors.torch import load_file

from cli import main
from cli.local.superlink import _stop, free_port, listening
from server import ledger
from shared.deploy.process import BIN, flower_env
from shared.models.checkpoint import load_checkpoint

ROUNDS = 2
pytestmark = pytest.mark.slow  # real Flower processes


def config(data: Path, out: Path, cache: Path) -> list[str]:
    # A fixed noise multiplier and a budget no run here can spend: a redone round is spent twice
    # by its clients (both trainings happened), which must not end the run early. min-eval-users=1:
    # the tiny nodes hold 10 users each, below the default 20 that sends no metrics.
    return ["--num-supernodes", "3", "--run-config", *as_pairs(tiny_run_config(
        data, cache, out, num_server_rounds=ROUNDS, noise_multiplier=1.0, target_epsilon=1000,
        server_eval=True, min_eval_users=1))]  # fmt: skip


def rounds_trained(state: Path) -> list[int]:
    return [h["round"] for h in json.loads(state.read_text() or "{}").get("history", [])]


@contextmanager
def ray_head() -> Iterator[tuple[str, Path]]:
    """A one-machine Ray cluster of this test's own; yields its address and its temp dir.

    It takes a free port and a short temp dir (Ray's socket paths must fit 107 characters). It is
    stopped by ending the processes it started, never with `ray stop`, which would stop every Ray
    instance on the machine."""
    port, temp = free_port(), Path(tempfile.mkdtemp(prefix="fr-ray-", dir="/tmp"))
    cmd = [str(BIN / "ray"), "start", "--head", "--port", str(port), "--num-cpus", "2", "--disable-usage-stats",
           "--include-dashboard=false", "--temp-dir", str(temp), "--block"]  # fmt: skip
    with open(temp / "head.log", "w") as log:
        proc = subprocess.Popen(cmd, env=flower_env(), stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        while not listening(port):
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"the Ray head did not start: {(temp / 'head.log').read_text()[-1500:]}")
            time.sleep(0.5)
        time.sleep(3)  # the GCS answers before the raylet has registered the node
        yield f"127.0.0.1:{port}", temp
    finally:
        _stop(proc)
        shutil.rmtree(temp, ignore_errors=True)


@dataclass(frozen=True)
class Resumed:
    run_dir: Path
    before: set[str]  # the clients that had trained round 2 before the kill
    ray_logs: list[str]  # the files in the Ray cluster's session logs after the resumed run


@pytest.fixture(scope="module")
def resumed(tmp_path_factory) -> Resumed:
    """A run whose ServerApp was killed -9 while its clients trained round 2, then resumed from
    round 1's checkpoint on a Ray cluster started after the kill (so the first run's own Ray
    never sees it)."""
    tmp = tmp_path_factory.mktemp("crash")
    data = write_csv(make_tiny(num_users=30, seed=4), tmp / "csv")
    out, cache = tmp / "out", tmp / "cache"
    proc = subprocess.Popen([sys.executable, "-m", "cli", "simulate", *config(data, out, cache)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    try:
        deadline = time.monotonic() + 600
        while True:  # until a client has trained round 2: the server is mid-round
            states = list(out.glob("run-*/node-state/privacy-*.json"))
            if any(ROUNDS in rounds_trained(s) for s in states):
                break
            assert time.monotonic() < deadline and proc.poll() is None, "round 2 never started"
            time.sleep(0.1)
        servers = [p for p in psutil.Process(proc.pid).children(recursive=True) if "flwr-simulation" in " ".join(p.cmdline())]
        assert servers, "no ServerApp process found"
        for p in servers:
            p.send_signal(signal.SIGKILL)
        # Flower notices the ServerApp is gone only when its heartbeat lapses (about 40 s); the
        # operator of a crashed server stops what is left of the run, and fedrec simulate must
        # not wait for Flower either (it once did, in `flwr run`'s own wait for the run).
        time.sleep(1)
        proc.terminate()
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    (run_dir,) = out.glob("run-*")
    assert not (run_dir / f"round-00{ROUNDS}").exists()
    before = {s.stem.removeprefix("privacy-") for s in (run_dir / "node-state").glob("privacy-*.json")
              if ROUNDS in rounds_trained(s)}  # fmt: skip
    checkpoint = (run_dir / "round-001" / "model.safetensors").read_bytes()
    with ray_head() as (address, temp):
        resume = ["--ray-address", address, *config(data, tmp / "out2", cache), f"resume-from={run_dir / 'round-001'}"]
        assert main(["simulate", *resume]) == 0
        ray_logs = sorted(p.name for p in temp.glob("session_*/logs/*"))
    assert (run_dir / "round-001" / "model.safetensors").read_bytes() == checkpoint
    return Resumed(run_dir, before, ray_logs)


def test_the_resumed_run_writes_every_round_s_checkpoint_and_metrics(resumed) -> None:
    run_dir = resumed.run_dir
    assert (run_dir / "summary.md").exists()
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert [r["round"] for r in metrics["history"]] == list(range(1, ROUNDS + 1))
    assert "train-loss" not in metrics["history"][0]["train"]  # DP: no loss leaves a node
    for r in range(1, ROUNDS + 1):
        model = load_checkpoint(run_dir / f"round-00{r}")  # the models' checkpoint format
        assert model.config["num_items"] > 0
    assert all(torch.isfinite(w).all() for w in load_file(run_dir / f"round-00{ROUNDS}" / "model.safetensors").values())
    assert 0 <= metrics["test"]["ranking-full-ndcg@10"] <= 1


def test_the_ledger_counts_each_client_and_round_once_and_the_nodes_every_training(resumed) -> None:
    run_dir, before = resumed.run_dir, resumed.before
    entries = ledger.read_ledger(run_dir)
    assert sorted((e["client_id"], e["round"]) for e in entries) == [
        (f"iid-{p}", r) for p in range(3) for r in range(1, ROUNDS + 1)]
    report = json.loads((run_dir / "privacy_report.json").read_text())
    assert report["unit"] == "user" and report["accountant"] == "pld"
    assert report["neighbouring_relation"] == "replace_one"
    assert all(0 < c["epsilon"] <= c["budget"] for c in report["clients"])
    assert "data:image/png;base64," in (run_dir / "privacy_report.html").read_text()
    assert before, "no client had trained round 2 before the kill"
    for p in range(3):  # each node's own accountant: a round trained before the crash is spent again
        rounds = rounds_trained(run_dir / "node-state" / f"privacy-iid-{p}.json")
        assert rounds == [1, 2, 2] if f"iid-{p}" in before else rounds in ([1, 2], [1, 2, 2]), (p, rounds)


def test_the_resumed_run_ran_on_the_existing_ray_cluster(resumed) -> None:
    # The simulation joined that cluster (the test itself never does): the head's session logged a
    # driver that connected to it, and the workers that ran its clients.
    logs = resumed.ray_logs
    assert any(n.startswith("python-core-driver-") for n in logs), logs
    assert any(n.startswith("worker-") for n in logs), logs


def test_server_side_evaluation_agrees_with_federated_evaluation(resumed) -> None:
    metrics = json.loads((resumed.run_dir / "metrics.json").read_text())
    federated, server = metrics["test"], metrics["test_server"]
    for key, value in server.items():
        assert federated[key] == pytest.approx(value, abs=1e-6), key


def command_lines(pid: int) -> list[str]:
    """The command lines of every process below `pid` (those that end meanwhile left out)."""
    lines = []
    for p in psutil.Process(pid).children(recursive=True):
        with suppress(psutil.Error):
            lines.append(" ".join(p.cmdline()))
    return lines


def test_sigterm_mid_run_stops_every_process_the_run_started(tmp_path) -> None:
    """SuperExec runs the simulation in a session of its own: a SIGTERM (a timeout, a CI runner,
    `kill`) once stopped only the SuperLink, and the orphaned simulation kept training."""
    data = write_csv(make_tiny(), tmp_path / "csv")
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "cli", "simulate", "--num-supernodes", "3", "--run-config",
           *as_pairs(tiny_run_config(data, tmp_path / "cache", out, dp=False, num_server_rounds=100))]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 600
        while not any("ray::" in line for line in command_lines(proc.pid)):  # Ray's workers: mid-run
            assert time.monotonic() < deadline and proc.poll() is None, "the simulation never started its clients"
            time.sleep(0.2)
        started = psutil.Process(proc.pid).children(recursive=True)
        assert any("flwr-simulation" in " ".join(p.cmdline()) for p in started)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 143
        _, alive = psutil.wait_procs(started, timeout=10)
        assert [" ".join(p.cmdline())[:80] for p in alive] == []
    finally:
        if proc.poll() is None:
            proc.kill()
