"""Faults rehearsed in simulation: crashing and NaN/scaled-update clients never reach the global model,
and nothing but the weights, whitelisted metrics and the privacy record leaves a node."""

import json

import pytest
import torch
from safetensors.torch import load_file

from client.audit import violations
from client.faults import CRASH, NAN, SCALED, fault_for
from shared.cli import main
from shared.config import FaultConfig, from_run_config
from shared.errors import FedrecError

NODES, ROUNDS, SEED = 10, 2, 42
FAULTS = {"fault-crash-fraction": 0.3, "fault-nan-fraction": 0.1, "fault-scale-fraction": 0.1}


def test_faults_are_disjoint_shares_drawn_per_round_and_node() -> None:
    cfg = from_run_config(FaultConfig, FAULTS)
    draws = [fault_for(cfg, 0, r, p) for r in range(50) for p in range(40)]
    assert draws == [fault_for(cfg, 0, r, p) for r in range(50) for p in range(40)]  # repeatable
    share = {k: draws.count(k) / len(draws) for k in (CRASH, NAN, SCALED)}
    assert abs(share[CRASH] - 0.3) < 0.03 and abs(share[NAN] - 0.1) < 0.02 and abs(share[SCALED] - 0.1) < 0.02
    with pytest.raises(FedrecError, match="add up to"):
        from_run_config(FaultConfig, {"fault-crash-fraction": 0.8, "fault-nan-fraction": 0.3})


def test_a_crash_raises_and_a_hang_outlasts_the_time_it_is_given() -> None:
    import time

    from client.faults import HANG, InjectedCrash, before_training

    with pytest.raises(InjectedCrash):
        before_training(CRASH, 0.0)
    start = time.monotonic()
    before_training(HANG, 0.2)
    assert time.monotonic() - start >= 0.2
    before_training("", 10.0)  # no fault: returns at once


@pytest.fixture(scope="module")
def faulty_run(tmp_path_factory):
    from conftest import make_tiny, write_csv

    data = write_csv(make_tiny(num_users=40, num_items=40, seed=2), tmp_path_factory.mktemp("d") / "csv")
    out = tmp_path_factory.mktemp("out")
    rc = main(["simulate", "--num-supernodes", str(NODES), "--run-config", "dataset=csv", f"data-path={data}",
               f"cache-dir={tmp_path_factory.mktemp('cache')}", "partitioning=iid", f"num-partitions={NODES}",
               "min-train-nodes=2", "dim=16", "num-layers=1", "max-len=12", "batch-size=8", "num-negatives=8",
               "retrieve-top-n=10", f"output-dir={out}", f"num-server-rounds={ROUNDS}", "dp=false",
               "audit-messages=true", f"seed={SEED}", *(f"{k}={v}" for k, v in FAULTS.items())])  # fmt: skip
    (run_dir,) = out.glob("run-*")
    return rc, run_dir


def test_crashes_and_bad_updates_are_survived_and_refused(faulty_run) -> None:
    rc, run_dir = faulty_run
    assert rc == 0
    weights = load_file(run_dir / f"round-00{ROUNDS}" / "model.safetensors")
    assert all(torch.isfinite(w).all() for w in weights.values())
    cfg = from_run_config(FaultConfig, FAULTS)
    history = json.loads((run_dir / "metrics.json").read_text())["history"]
    for r in history:
        expected = {p: fault_for(cfg, SEED, r["round"], p) for p in range(NODES)}
        reasons = [x["reason"] for x in r["rejected"]]
        assert sum("client error" in x for x in reasons) == sum(v == CRASH for v in expected.values())
        assert sum("non-finite" in x for x in reasons) == sum(v == NAN for v in expected.values())
        assert sum("median" in x for x in reasons) == sum(v == SCALED for v in expected.values())
        assert r["clients_trained"] == sum(v == "" for v in expected.values())


def test_nothing_but_weights_metrics_and_privacy_leaves_a_node(faulty_run) -> None:
    _, run_dir = faulty_run
    model_weights = load_file(run_dir / "round-001" / "model.safetensors")
    lines = [json.loads(line) for f in (run_dir / "node-state").glob("messages-*.jsonl") for line in f.read_text().splitlines()]
    # query.catalog: the server's check, before round 1, that each node holds its catalog
    assert {line["message_type"] for line in lines} == {"train", "evaluate", "query.catalog"}
    train = next(line for line in lines if "arrays" in line["records"])
    num_weights = train["records"]["arrays"]["arrays"]["weights"][1][0]
    assert 0 < num_weights < sum(w.numel() for w in model_weights.values())  # trainable only, not the frozen text
    assert [v for line in lines for v in violations(line, num_weights)] == []


def test_a_hung_client_costs_the_round_its_timeout_and_the_round_goes_on(tmp_path) -> None:
    from conftest import make_tiny, write_csv

    from client.faults import HANG

    nodes, timeout = 4, 20
    cfg = from_run_config(FaultConfig, {"fault-hang-fraction": 0.25})
    hung = [p for p in range(nodes) if fault_for(cfg, SEED, 1, p) == HANG]
    assert len(hung) == 1  # the seed's draw: one of four hangs in round 1
    data = write_csv(make_tiny(num_users=16, num_items=30, seed=3), tmp_path / "csv")
    # Two simulated clients at a time (one core each): the hung one holds one, the others use the
    # second, as separate nodes would. With Flower's default of one, everyone waits behind it.
    # round-retries=2: on a loaded machine a cold client's first message can outlast the timeout too.
    rc = main(["simulate", "--num-supernodes", str(nodes), "--client-cpus", "1", "--run-config", "dataset=csv",
               f"data-path={data}", f"cache-dir={tmp_path / 'cache'}", "partitioning=iid", f"num-partitions={nodes}",
               "min-train-nodes=2", "dim=16", "num-layers=1", "max-len=12", "batch-size=8", "num-negatives=8",
               "retrieve-top-n=10", f"output-dir={tmp_path / 'out'}", "num-server-rounds=1", "dp=false",
               f"seed={SEED}", "fault-hang-fraction=0.25", f"round-timeout={timeout}",
               "round-retries=2"])  # fmt: skip
    assert rc == 0
    (run_dir,) = (tmp_path / "out").glob("run-*")
    (r,) = json.loads((run_dir / "metrics.json").read_text())["history"]
    assert r["clients_trained"] == nodes - 1 and r["rejected"] == []  # went on without it, nothing refused
    assert r["seconds_train"] >= timeout  # it waited for the hung client, then only the timeout
