"""End to end through Flower: a private SuperLink, `flwr run`, simulated SuperNodes.

Slow (about a minute per run: Ray and the SuperLink start each time), so tiny data and a tiny model.
"""

import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from shared.cli import main
from shared.models.checkpoint import load_checkpoint


def simulate(csv_dir: Path, out: Path, cache: Path, *extra: str) -> int:
    return main(["simulate", "--num-supernodes", "3", "--run-config",
                 "dataset=csv", f"data-path={csv_dir}", f"cache-dir={cache}", "partitioning=iid",
                 "num-partitions=3", "min-train-nodes=3", "dim=16", "num-layers=1", "max-len=12",
                 "batch-size=8", "num-negatives=8", "retrieve-top-n=10", f"output-dir={out}",
                 *extra])  # fmt: skip


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
    from conftest import make_tiny, write_csv

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
    assert report["unit"] == "user" and report["accountant"] == "pld" and report["all_recomputations_agree"]
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


def test_resume_continues_at_the_right_round_from_the_checkpoint(first_run, tiny_csv_module, tmp_path) -> None:
    """A DP run resumed after round 1 trains round 2 from round 1's model and spends round 2
    once. Not the same weights as the uninterrupted run: under DP the noise is drawn afresh from
    the OS and can be replayed by nobody, a resumed server included (tests/test_privacy.py);
    without DP local training is seeded per (seed, round, node) (tests/test_client.py)."""
    run_dir, cache = first_run
    start = load_file(run_dir / "round-001" / "model.safetensors")
    uninterrupted = load_file(run_dir / "round-002" / "model.safetensors")
    copy = tmp_path / "run-copy"
    shutil.copytree(run_dir, copy)
    shutil.rmtree(copy / "round-002")  # as if the server died after round 1 ...
    for state_file in (copy / "node-state").glob("*.json"):  # ... and before the clients spent round 2
        state = json.loads(state_file.read_text())
        state["history"] = [h for h in state["history"] if h["round"] == 1]
        state_file.write_text(json.dumps(state))
    ledger = copy / "privacy_ledger.jsonl"
    ledger.write_text("".join(ln + "\n" for ln in ledger.read_text().splitlines() if json.loads(ln)["round"] == 1))
    out = tmp_path / "out2"
    assert simulate(tiny_csv_module, out, cache, "num-server-rounds=2", "min-eval-users=1",
                    f"resume-from={copy / 'round-001'}") == 0  # fmt: skip
    metrics = json.loads((copy / "metrics.json").read_text())
    assert [r["round"] for r in metrics["history"]] == [1, 2]
    resumed = load_file(copy / "round-002" / "model.safetensors")
    assert resumed.keys() == uninterrupted.keys()

    def step(model: dict) -> float:  # the round-2 update's size, over the trained tensors
        return sum(float((model[k] - start[k]).norm()) ** 2 for k in model if not torch.equal(uninterrupted[k], start[k])) ** 0.5

    assert 0.5 < step(resumed) / step(uninterrupted) < 2  # one round's step from round 1's model
    entries = [json.loads(ln) for ln in ledger.read_text().splitlines() if "client_id" in json.loads(ln)]
    assert sorted((e["client_id"], e["round"]) for e in entries) == [(f"iid-{p}", r) for p in range(3) for r in (1, 2)]


def test_spent_budgets_stop_a_restarted_run_before_any_training(first_run, tiny_csv_module, tmp_path) -> None:
    # Restart server and clients on the same run and node state, asking for a third round: the
    # budget was calibrated for two, so every client declines and the run says why.
    run_dir, cache = first_run
    copy = tmp_path / "run-copy"
    shutil.copytree(run_dir, copy)
    before = (copy / "round-002" / "model.safetensors").read_bytes()
    code = simulate(tiny_csv_module, tmp_path / "o", cache, "num-server-rounds=3",
                    f"resume-from={copy / 'round-002'}")  # fmt: skip
    assert code == 2
    entries = [json.loads(ln) for ln in (copy / "privacy_ledger.jsonl").read_text().splitlines()]
    assert sorted(e["status"] for e in entries if e["round"] == 3) == ["budget-exhausted"] * 3
    for state in (copy / "node-state").glob("*.json"):
        history = json.loads(state.read_text())["history"]
        assert [h["round"] for h in history] == [1, 2] and history[-1]["epsilon"] <= 8.0
    assert not (copy / "round-003").exists()
    assert (copy / "round-002" / "model.safetensors").read_bytes() == before
    assert "privacy budget is spent" in json.loads((copy / "metrics.json").read_text())["stopped"]


def test_central_dp_reports_a_growing_client_level_epsilon(tiny_csv_module, tmp_path) -> None:
    out = tmp_path / "out"
    assert simulate(tiny_csv_module, out, tmp_path / "cache", "num-server-rounds=2", "dp=false",
                    "central-dp=true", "central-noise-multiplier=0.8", "central-clipping-norm=0.5") == 0
    (run_dir,) = out.glob("run-*")
    central = json.loads((run_dir / "privacy_report.json").read_text())["central"]
    assert central["noise_multiplier"] == 0.8 and central["clipping_norm"] == 0.5
    eps = [h["epsilon"] for h in central["history"]]
    assert len(eps) == 2 and 0 < eps[0] < eps[1] == central["epsilon"]
    assert "Central DP across the federation" in (run_dir / "privacy_report.html").read_text()


def test_sigterm_mid_run_stops_every_process_the_run_started(tiny_csv_module, tmp_path) -> None:
    """SuperExec runs the simulation in a session of its own: a SIGTERM (a timeout, a CI runner,
    `kill`) once stopped only the SuperLink, and the orphaned simulation kept training."""
    import signal
    import subprocess
    import sys
    import time

    import psutil

    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "shared.cli", "simulate", "--num-supernodes", "3", "--run-config",
           "dataset=csv", f"data-path={tiny_csv_module}", f"cache-dir={tmp_path / 'cache'}", "partitioning=iid",
           "num-partitions=3", "min-train-nodes=3", "dim=16", "num-layers=1", "max-len=12", "batch-size=8",
           "num-negatives=8", "retrieve-top-n=10", "dp=false", "num-server-rounds=100", f"output-dir={out}"]  # fmt: skip
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
