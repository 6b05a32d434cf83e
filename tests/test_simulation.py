"""End to end through Flower: a private SuperLink, `flwr run`, simulated SuperNodes.

Slow (about a minute per run: Ray and the SuperLink start each time), so the slow tier keeps one
such run, and a SIGTERM of another; resume, budgets, central DP and the rest of the federated
behaviour run in one process (tests/test_federation.py).
"""

import json
from pathlib import Path

import pytest
from conftest import as_pairs, make_tiny, tiny_run_config, write_csv

from cli import main
from shared.models.checkpoint import load_checkpoint

pytestmark = pytest.mark.slow  # real Flower processes


def simulate(csv_dir: Path, out: Path, cache: Path, *extra: str) -> int:
    return main(["simulate", "--num-supernodes", "3", "--run-config",
                 *as_pairs(tiny_run_config(csv_dir, cache, out)), *extra])  # fmt: skip


@pytest.fixture(scope="module")
def first_run(tmp_path_factory, tiny_csv_module):
    out = tmp_path_factory.mktemp("out")
    cache = tmp_path_factory.mktemp("cache")
    # min-eval-users=1: the tiny nodes hold 4 users each, below the default 20 that sends no metrics
    assert simulate(tiny_csv_module, out, cache, "num-server-rounds=2", "server-eval=true", "min-eval-users=1") == 0
    (run_dir,) = out.glob("run-*")
    return run_dir, cache


@pytest.fixture(scope="module")
def tiny_csv_module(tmp_path_factory):
    return write_csv(make_tiny(), tmp_path_factory.mktemp("data") / "csv")


def test_three_supernodes_two_rounds_write_checkpoints_and_metrics(first_run) -> None:
    run_dir, _ = first_run
    assert (run_dir / "summary.md").exists()
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert [r["round"] for r in metrics["history"]] == [1, 2]
    assert "train-loss" not in metrics["history"][0]["train"]  # DP: no loss leaves a node
    for r in (1, 2):
        model = load_checkpoint(run_dir / f"round-00{r}")  # the models' checkpoint format
        assert model.config["num_items"] > 0
    assert 0 <= metrics["test"]["ranking-full-ndcg@10"] <= 1


def test_dp_run_writes_ledger_node_state_and_privacy_report(first_run) -> None:
    run_dir, _ = first_run
    entries = [json.loads(line) for line in (run_dir / "privacy_ledger.jsonl").read_text().splitlines()]
    assert sorted((e["client_id"], e["round"]) for e in entries) == [
        (f"iid-{p}", r) for p in range(3) for r in (1, 2)]
    report = json.loads((run_dir / "privacy_report.json").read_text())
    assert report["unit"] == "user" and report["accountant"] == "pld"
    assert report["neighbouring_relation"] == "replace_one"
    assert all(0 < c["epsilon"] <= c["budget"] and len(c["history"]) == 2 for c in report["clients"])
    assert "data:image/png;base64," in (run_dir / "privacy_report.html").read_text()
    for p in range(3):  # each node's own accountant history, beside the run in simulation
        state = json.loads((run_dir / "node-state" / f"privacy-iid-{p}.json").read_text())
        assert [h["round"] for h in state["history"]] == [1, 2]


def test_server_side_evaluation_agrees_with_federated_evaluation(first_run) -> None:
    metrics = json.loads((first_run[0] / "metrics.json").read_text())
    federated, server = metrics["test"], metrics["test_server"]
    for key, value in server.items():
        assert federated[key] == pytest.approx(value, abs=1e-6), key


def test_sigterm_mid_run_stops_every_process_the_run_started(tiny_csv_module, tmp_path) -> None:
    """SuperExec runs the simulation in a session of its own: a SIGTERM (a timeout, a CI runner,
    `kill`) once stopped only the SuperLink, and the orphaned simulation kept training."""
    import signal
    import subprocess
    import sys
    import time

    import psutil

    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "cli", "simulate", "--num-supernodes", "3", "--run-config",
           *as_pairs(tiny_run_config(tiny_csv_module, tmp_path / "cache", out, dp=False, num_server_rounds=100))]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 600
        while not list(out.glob("run-*/round-001")):  # the simulation is mid-run
            assert time.monotonic() < deadline and proc.poll() is None, "round 1 never finished"
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
