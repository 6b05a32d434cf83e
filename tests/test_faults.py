"""Faults rehearsed in a federation (in one process, tests/inprocess.py): crashing and NaN/scaled-update
clients never reach the global model, a hung one costs the round its timeout, and nothing but the
weights, whitelisted metrics and the privacy record leaves a node."""

import json
from types import SimpleNamespace

import pytest
import torch
from conftest import make_tiny, tiny_run_config, write_csv
from inprocess import NoReply, run_federation
from safetensors.torch import load_file

from client.message_audit import violations
from client.faults import CRASH, NAN, SCALED, fault_for
from shared.config import FaultConfig, from_run_config
from shared.errors import FedrecError

NODES, ROUNDS, SEED = 10, 2, 42
FAULTS = {"fault-crash-fraction": 0.3, "fault-nan-fraction": 0.1, "fault-scale-fraction": 0.1}
FAULTS_KW = {k.replace("-", "_"): v for k, v in FAULTS.items()}


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


def test_a_deployed_node_rehearses_no_fault_the_run_config_asks_for(tmp_path) -> None:
    import time

    from flwr.app import ConfigRecord, Context, Message, Metadata, RecordDict

    from client.faults import InjectedCrash, fault_mod

    config = {"fault-crash-fraction": 1.0}
    meta = Metadata(run_id=1, message_id="m", src_node_id=0, dst_node_id=1, reply_to_message_id="", group_id="",
                    created_at=time.time(), ttl=3600.0, message_type="train")  # fmt: skip
    msg = Message(RecordDict({"config": ConfigRecord({"server-round": 1})}), metadata=meta)
    simulated = Context(run_id=1, node_id=1, node_config={"partition-id": 0}, state=RecordDict(), run_config=config)
    with pytest.raises(InjectedCrash):
        fault_mod(msg, simulated, lambda m, c: "trained")
    deployed = Context(run_id=1, node_id=1, node_config={"partition-id": 0, "state-dir": str(tmp_path)},
                       state=RecordDict(), run_config=config)  # fmt: skip
    assert fault_mod(msg, deployed, lambda m, c: "trained") == "trained"


@pytest.fixture(scope="module")
def faulty_run(tmp_path_factory, text_cache):
    data = write_csv(make_tiny(num_users=40, num_items=40, seed=2), tmp_path_factory.mktemp("d") / "csv")
    out = tmp_path_factory.mktemp("out")
    run = run_federation(tiny_run_config(data, text_cache, out, nodes=NODES, min_train_nodes=2, num_server_rounds=ROUNDS,
                                         dp=False, audit_messages=True, seed=SEED, **FAULTS_KW), NODES)  # fmt: skip
    return run.code, run.run_dir


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


def test_a_hung_client_costs_the_round_its_timeout_and_the_round_goes_on(tmp_path, text_cache, monkeypatch) -> None:
    from client import faults
    from client.faults import HANG

    nodes, timeout = 4, 1
    cfg = from_run_config(FaultConfig, {"fault-hang-fraction": 0.25})
    hung = [p for p in range(nodes) if fault_for(cfg, SEED, 1, p) == HANG]
    assert len(hung) == 1  # the seed's draw: one of four hangs in round 1
    slept = []

    def hang(seconds: float) -> None:  # past the round's timeout: its reply never comes in time
        slept.append(seconds)
        raise NoReply

    monkeypatch.setattr(faults, "time", SimpleNamespace(sleep=hang))
    data = write_csv(make_tiny(num_users=16, num_items=30, seed=3), tmp_path / "csv")
    run = run_federation(tiny_run_config(data, text_cache, tmp_path / "out", nodes=nodes, min_train_nodes=2,
                                         num_server_rounds=1, dp=False, seed=SEED, fault_hang_fraction=0.25,
                                         round_timeout=timeout), nodes)  # fmt: skip
    assert run.code == 0, run.error
    assert slept == [2 * timeout]  # the hung client would have slept past the round's timeout
    (r,) = json.loads((run.run_dir / "metrics.json").read_text())["history"]
    assert r["clients_trained"] == nodes - 1 and r["rejected"] == []  # went on without it, nothing refused
    assert r["seconds_train"] >= timeout  # it waited for the hung client, then only the timeout


def test_a_scaled_fault_under_central_dp_is_still_clipped_to_the_nodes_norm() -> None:
    """A server writes the run config, fault keys included: a rehearsal must not make a node send
    more than central DP's clipping norm allows."""
    import numpy as np

    from client.faults import clipped_as_sent, corrupt
    from shared.privacy.central import CLIPPING_NORM_KEY

    global_weights = np.zeros(50, dtype=np.float32)
    trained = np.full(50, 0.01, dtype=np.float32)
    sent = corrupt(SCALED, trained, global_weights)
    assert np.linalg.norm(sent) > 5
    clipped = clipped_as_sent(sent, global_weights, {CLIPPING_NORM_KEY: 1.0})
    assert np.linalg.norm(clipped - global_weights) == pytest.approx(1.0, rel=1e-5)
    assert np.array_equal(clipped_as_sent(sent, global_weights, {}), sent)  # no central DP: as corrupted
