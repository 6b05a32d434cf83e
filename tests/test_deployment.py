"""Edge deployment for real: a SuperLink and three SuperNodes as separate processes on loopback,
TLS on every connection, only registered node keys admitted, each node on its own exported data.

Slow (two minutes: every ClientApp message starts a process), so tiny data and a tiny model.
"""

import json

import pytest
from conftest import make_tiny, write_csv

from client.audit import violations
from shared.cli import main
from simulations.edge import LocalDeployment

ROUNDS = 2


@pytest.fixture(scope="module")
def deployment(tmp_path_factory):
    work = tmp_path_factory.mktemp("edge")
    source = write_csv(make_tiny(num_users=36, num_items=40, seed=1), work / "global")
    for k in range(3):
        assert main(["data", "export-partition", "--dataset", "csv", "--path", str(source), "--partitioning",
                     "iid", "--num-partitions", "3", "--partition-id", str(k), "--out", str(work / f"data-{k}")]) == 0  # fmt: skip
    assert main(["catalog", "build", "--dataset", "csv", "--path", str(source), "--out", str(work / "catalog")]) == 0
    env = {"FEDREC_OFFLINE": "1", "FEDREC_CACHE": str(work / "cache")}
    with LocalDeployment(work, [work / f"data-{k}" for k in range(3)],
                         ["--catalog", str(work / "catalog")], env=env) as dep:  # fmt: skip
        rc = dep.flwr_run({
            "dataset": "csv", "catalog-path": str(work / "catalog"), "cache-dir": str(work / "cache"),
            "num-server-rounds": ROUNDS, "min-train-nodes": 3, "dim": 16, "num-layers": 1, "max-len": 12,
            "batch-size": 4, "num-negatives": 8, "retrieve-top-n": 10, "target-epsilon": 3.0,
            "output-dir": str(work / "out"), "audit-messages": True,
            # The most demanding setting: local DP-SGD under SecAgg+ (3 shares, 2 to unmask).
            "secure-aggregation": True, "secagg-num-shares": 3, "secagg-reconstruction-threshold": 2,
        })  # fmt: skip
        yield dep, rc, work


def test_three_tls_nodes_train_two_dp_rounds_under_secure_aggregation(deployment) -> None:
    dep, rc, work = deployment
    assert rc == 0, (work / "flwr-run.log").read_text()[-2000:]
    (run_dir,) = (work / "out").glob("run-*")
    assert (run_dir / f"round-00{ROUNDS}" / "model.safetensors").exists()
    report = json.loads((run_dir / "privacy_report.json").read_text())
    assert report["all_recomputations_agree"] and report["unit"] == "user"
    entries = [json.loads(line) for line in (run_dir / "privacy_ledger.jsonl").read_text().splitlines()]
    assert sorted((e["client_id"], e["round"]) for e in entries) == [
        (f"node-{k}", r) for k in range(3) for r in range(1, ROUNDS + 1)]
    for k in range(3):  # each node's accountant history stays on the node
        state = json.loads((dep.state_dir(k) / f"privacy-node-{k}.json").read_text())
        assert [h["round"] for h in state["history"]] == list(range(1, ROUNDS + 1))
    # Every link ran with TLS: the SuperLink's APIs and each node's own runtime API say so.
    log = (work / "superlink.log").read_text()
    assert "https://" in log and "--insecure" not in log
    for k in range(3):
        node_log = (work / f"node-{k}.log").read_text()
        assert "Uvicorn running on https://" in node_log and "http://" not in node_log


def test_no_update_leaves_a_node_in_the_clear_only_masked_with_metrics_and_privacy(deployment) -> None:
    dep, rc, _ = deployment
    assert rc == 0
    for k in range(3):
        lines = [json.loads(line) for f in dep.state_dir(k).glob("messages-*.jsonl") for line in f.read_text().splitlines()]
        assert {line["message_type"] for line in lines} == {"query.catalog", "train", "evaluate"}
        assert [v for line in lines for v in violations(line, 0)] == []
        assert all(not rec.get("arrays") for line in lines for rec in line["records"].values())
        masked = [line for line in lines if "masked_params" in line["records"].get("secaggplus_configs", {}).get("keys", {})]
        assert len(masked) == ROUNDS and all("privacy" in line["records"] for line in masked)


def test_a_node_with_an_unregistered_key_is_refused(deployment) -> None:
    dep, _, work = deployment
    k = 3  # made by the credentials helper, never registered
    proc = dep.start_node(k, data=work / "data-0")
    assert proc.wait(timeout=120) != 0
    assert "Failed to activate SuperNode" in (work / f"node-{k}.log").read_text()
