"""Whole federated runs in one process (tests/inprocess.py): fedrec's ServerApp over simulated
nodes, every message answered by its ClientApp, mods included. A DP run and what it writes, its
resume, spent budgets, central DP, early stopping and the final test's reach; the same apps run
through real Flower processes once, in tests/test_simulation.py."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from conftest import make_tiny, tiny_run_config, write_csv
from inprocess import run_federation
from safetensors.torch import load_file

from shared.models.checkpoint import load_checkpoint
from shared.privacy.accounting import EXHAUSTED

NODES = 3


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    return write_csv(make_tiny(), tmp_path_factory.mktemp("data") / "csv")


@pytest.fixture(scope="module")
def dp_run(tmp_path_factory, data, text_cache):
    """Three nodes, two rounds of local DP-SGD (the default), the server evaluating on its own
    copy too. min-eval-users=1: the tiny nodes hold 4 users each, below the default 20."""
    out = tmp_path_factory.mktemp("out")
    run = run_federation(tiny_run_config(data, text_cache, out, num_server_rounds=2, server_eval=True,
                                         min_eval_users=1), NODES)  # fmt: skip
    assert run.code == 0, run.error
    return run


def test_two_rounds_write_checkpoints_and_metrics(dp_run) -> None:
    run_dir = dp_run.run_dir
    assert (run_dir / "summary.md").exists()
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert [r["round"] for r in metrics["history"]] == [1, 2]
    assert "train-loss" not in metrics["history"][0]["train"]  # DP: no loss leaves a node
    for r in (1, 2):
        assert load_checkpoint(run_dir / f"round-00{r}").config["num_items"] > 0  # the models' format
    assert 0 <= metrics["test"]["ranking-full-ndcg@10"] <= 1


def test_a_dp_run_writes_ledger_node_state_and_privacy_report(dp_run) -> None:
    run_dir = dp_run.run_dir
    entries = [json.loads(line) for line in (run_dir / "privacy_ledger.jsonl").read_text().splitlines()]
    assert sorted((e["client_id"], e["round"]) for e in entries) == [(f"iid-{p}", r) for p in range(NODES) for r in (1, 2)]
    report = json.loads((run_dir / "privacy_report.json").read_text())
    assert report["unit"] == "user" and report["accountant"] == "pld"
    assert report["neighbouring_relation"] == "replace_one"
    assert all(0 < c["epsilon"] <= c["budget"] and len(c["history"]) == 2 for c in report["clients"])
    assert "data:image/png;base64," in (run_dir / "privacy_report.html").read_text()
    for p in range(NODES):  # each node's own accountant history, beside the run in simulation
        state = json.loads((run_dir / "node-state" / f"privacy-iid-{p}.json").read_text())
        assert [h["round"] for h in state["history"]] == [1, 2]


def test_server_side_evaluation_agrees_with_federated_evaluation(dp_run) -> None:
    metrics = json.loads((dp_run.run_dir / "metrics.json").read_text())
    federated, server = metrics["test"], metrics["test_server"]
    for key, value in server.items():
        assert federated[key] == pytest.approx(value, abs=1e-6), key


def test_resume_continues_at_the_right_round_from_the_checkpoint(dp_run, tmp_path) -> None:
    """A DP run resumed after round 1 trains round 2 from round 1's model and spends round 2
    once. Not the same weights as the uninterrupted run: under DP the noise is drawn afresh from
    the OS and can be replayed by nobody, a resumed server included (tests/test_privacy.py);
    without DP local training is seeded per (seed, round, node) (tests/test_client.py)."""
    run_dir = dp_run.run_dir
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
    resumed_run = run_federation({**dp_run.config, "server-eval": False, "resume-from": str(copy / "round-001")}, NODES)
    assert resumed_run.code == 0, resumed_run.error
    metrics = json.loads((copy / "metrics.json").read_text())
    assert [r["round"] for r in metrics["history"]] == [1, 2]
    resumed = load_file(copy / "round-002" / "model.safetensors")
    assert resumed.keys() == uninterrupted.keys()

    def step(model: dict) -> float:  # the round-2 update's size, over the trained tensors
        return sum(float((model[k] - start[k]).norm()) ** 2 for k in model if not torch.equal(uninterrupted[k], start[k])) ** 0.5

    assert 0.5 < step(resumed) / step(uninterrupted) < 2  # one round's step from round 1's model
    entries = [json.loads(ln) for ln in ledger.read_text().splitlines() if "client_id" in json.loads(ln)]
    assert sorted((e["client_id"], e["round"]) for e in entries) == [(f"iid-{p}", r) for p in range(NODES) for r in (1, 2)]


def test_spent_budgets_stop_a_restarted_run_before_any_training(dp_run, tmp_path) -> None:
    """Server and clients restarted on the same run and node state, asked for a third round: the
    budget was calibrated for two, so every client declines and the run fails saying why."""
    copy = tmp_path / "run-copy"
    shutil.copytree(dp_run.run_dir, copy)
    before = (copy / "round-002" / "model.safetensors").read_bytes()
    run = run_federation({**dp_run.config, "server-eval": False, "num-server-rounds": 3,
                          "resume-from": str(copy / "round-002")}, NODES)  # fmt: skip
    assert run.code == 2 and "privacy budget is spent" in run.error
    entries = [json.loads(ln) for ln in (copy / "privacy_ledger.jsonl").read_text().splitlines()]
    assert sorted(e["status"] for e in entries if e["round"] == 3) == [EXHAUSTED] * NODES
    for state in (copy / "node-state").glob("*.json"):
        history = json.loads(state.read_text())["history"]
        assert [h["round"] for h in history] == [1, 2] and history[-1]["epsilon"] <= 8.0
    assert not (copy / "round-003").exists()
    assert (copy / "round-002" / "model.safetensors").read_bytes() == before
    assert "privacy budget is spent" in json.loads((copy / "metrics.json").read_text())["stopped"]


@pytest.fixture(scope="module")
def central_run(tmp_path_factory, data, text_cache):
    """Two rounds of central DP (DP-FedAvg, no local DP-SGD), validation asking two of the three
    nodes each round (fraction-evaluate 0.5, at least min-train-nodes)."""
    out = tmp_path_factory.mktemp("central")
    run = run_federation(tiny_run_config(data, text_cache, out, min_train_nodes=2, num_server_rounds=2, dp=False,
                                         central_dp=True, central_noise_multiplier=0.8, central_clipping_norm=0.5,
                                         fraction_evaluate=0.5, min_eval_users=1), NODES)  # fmt: skip
    assert run.code == 0, run.error
    return run


def test_central_dp_reports_a_growing_client_level_epsilon(central_run) -> None:
    run_dir = central_run.run_dir
    central = json.loads((run_dir / "privacy_report.json").read_text())["central"]
    assert central["noise_multiplier"] == 0.8 and central["clipping_norm"] == 0.5
    eps = [h["epsilon"] for h in central["history"]]
    assert len(eps) == 2 and 0 < eps[0] < eps[1] == central["epsilon"]
    assert "Central DP across the federation" in (run_dir / "privacy_report.html").read_text()
    history = json.loads((run_dir / "metrics.json").read_text())["history"]
    assert [r["central_dp"]["releases"] for r in history] == [1, 2]


def test_the_final_test_asks_every_node_while_validation_samples_a_fraction(central_run) -> None:
    def asked(stage: str) -> list[list[int]]:  # the nodes each evaluation of `stage` reached, per round
        rounds: dict[int, list[int]] = {}
        for m in central_run.grid.delivered:
            if m.metadata.message_type == "evaluate" and m.content["config"]["stage"] == stage:
                rounds.setdefault(m.content["config"]["server-round"], []).append(m.metadata.dst_node_id)
        return list(rounds.values())

    assert [len(v) for v in asked("valid")] == [2, 2]  # fraction-evaluate 0.5 of 3, at least min-train-nodes
    (test,) = asked("test")
    assert sorted(test) == sorted(central_run.grid.get_node_ids())


@pytest.fixture(scope="module")
def stalled_run(tmp_path_factory, data, text_cache):
    """Two nodes and a learning rate too small to change any float32 weight: no round after the
    first can improve validation NDCG@10."""
    out = tmp_path_factory.mktemp("stalled")
    run = run_federation(tiny_run_config(data, text_cache, out, nodes=2, num_server_rounds=4, dp=False, lr=1e-12,
                                         early_stopping_rounds=1, min_eval_users=1), 2)  # fmt: skip
    assert run.code == 0, run.error
    return run


def test_early_stopping_ends_the_run_after_that_many_rounds_without_gain(stalled_run) -> None:
    summary = json.loads((stalled_run.run_dir / "metrics.json").read_text())
    assert [r["round"] for r in summary["history"]] == [1, 2]  # round 2 gained nothing: stop, of 4
    assert summary["rounds"] == 2 and summary["best_round"] == 1 and summary["test_round"] == 1
    assert not (stalled_run.run_dir / "round-003").exists()
