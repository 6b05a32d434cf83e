"""Edge deployment for real: a SuperLink and three SuperNodes as separate processes, each on a host
of its own (a network namespace with a veth pair to the server's; loopback, said so, where they
cannot be made), TLS on every connection, only registered node keys admitted. Each node holds
its own users' data and a copy of the public catalog; the server holds the catalog only, and an
audit hook on its processes shows it opened no interaction file.

Slow (every ClientApp message starts a process), so tiny data, a tiny model and one round.
"""

import json
import re
import shutil
import warnings

import pytest
from conftest import make_tiny, write_csv

from client.message_audit import violations
from cli import main
from cli.local.deployment import LocalDeployment

ROUNDS = 1  # each SecAgg+ round is four messages per node, each a fresh ClientApp process
NODES = 3
# Two minutes on a quiet machine; on a busy shared one a round took four, past the suite's 900 s.
pytestmark = [pytest.mark.timeout(2400), pytest.mark.slow]
# Loaded by every Python process of the server (the SuperLink, and the SuperExec and ServerApp it
# starts), through PYTHONPATH: appends each file they open under the test's directory to a log.
OPEN_AUDIT = """
import os, sys, threading
_log, _under, _busy = os.environ["FEDREC_TEST_OPEN_LOG"], os.environ["FEDREC_TEST_OPEN_UNDER"], threading.local()
def _hook(event, args):
    if event != "open" or getattr(_busy, "on", False) or isinstance(args[0], int):
        return
    path = os.path.abspath(os.fsdecode(args[0]))
    if path.startswith(_under):
        _busy.on = True
        try:
            with open(_log, "a") as f:
                f.write(path + "\\n")
        finally:
            _busy.on = False
sys.addaudithook(_hook)
"""


@pytest.fixture(scope="module")
def deployment(tmp_path_factory):
    work = tmp_path_factory.mktemp("edge")
    owner = write_csv(make_tiny(num_users=36, num_items=40, seed=1), work / "owner")  # the data owner's files
    server = work / "server"
    assert main(["catalog", "build", "--dataset", "csv", "--path", str(owner), "--out", str(server / "catalog")]) == 0
    for k in range(NODES + 1):  # node 3 holds a key that is never registered
        assert main(["data", "export-partition", "--dataset", "csv", "--path", str(owner), "--partitioning", "iid",
                     "--num-partitions", str(NODES), "--partition-id", str(k % NODES),
                     "--out", str(work / f"node-{k}" / "data")]) == 0  # fmt: skip
        shutil.copytree(server / "catalog", work / f"node-{k}" / "catalog")
    (work / "audit").mkdir()
    (work / "audit" / "sitecustomize.py").write_text(OPEN_AUDIT)
    server_env = {"PYTHONPATH": str(work / "audit"), "FEDREC_TEST_OPEN_LOG": str(work / "server-opened.log"),
                  "FEDREC_TEST_OPEN_UNDER": str(work)}  # fmt: skip
    env = {"FEDREC_OFFLINE": "1", "FEDREC_CACHE": str(work / "cache")}
    with LocalDeployment(work, [work / f"node-{k}" / "data" for k in range(NODES)],
                         [work / f"node-{k}" / "catalog" for k in range(NODES + 1)], env=env, netns=True,
                         server_env=server_env) as dep:  # fmt: skip
        if dep.network != "network namespaces":
            warnings.warn(f"test_deployment runs on {dep.network}")
        print(f"deployment network: {dep.network}")
        rc = dep.flwr_run({
            # The server's whole view of the data: the catalog. No data-path.
            "dataset": "csv", "catalog-path": str(server / "catalog"), "cache-dir": str(work / "cache"),
            "num-server-rounds": ROUNDS, "min-train-nodes": 3, "dim": 16, "num-layers": 1, "max-len": 12,
            "batch-size": 4, "num-negatives": 8, "retrieve-top-n": 10, "target-epsilon": 3.0,
            "output-dir": str(work / "out"), "audit-messages": True,
            # The most demanding setting: local DP-SGD under SecAgg+ (3 shares, 2 to unmask).
            "secure-aggregation": True, "secagg-num-shares": 3, "secagg-reconstruction-threshold": 2,
        })  # fmt: skip
        yield dep, rc, work


def test_three_tls_nodes_train_a_dp_round_under_secure_aggregation(deployment) -> None:
    dep, rc, work = deployment
    assert rc == 0, (work / "flwr-run.log").read_text()[-2000:]
    (run_dir,) = (work / "out").glob("run-*")
    assert (run_dir / f"round-00{ROUNDS}" / "model.safetensors").exists()
    report = json.loads((run_dir / "privacy_report.json").read_text())
    assert report["unit"] == "user" and report["num_clients"] == NODES
    # Each node trained every round, and the epsilon the report computes from its history is within
    # the budget the run asked for (target-epsilon 3).
    for c in report["clients"]:
        assert len(c["history"]) == ROUNDS and 0 < c["epsilon"] <= c["budget"] <= 3.0
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


def test_each_node_holds_only_its_users_and_the_server_opened_no_interaction_file(deployment) -> None:
    dep, rc, work = deployment
    assert rc == 0
    users = []
    for k in range(NODES):
        assert sorted(p.name for p in (work / f"node-{k}" / "data").iterdir()) == ["interactions.csv", "users.csv"]
        users.append({line.split(",")[0] for line in (work / f"node-{k}" / "data" / "users.csv").read_text().splitlines()[1:]})
    assert not (users[0] & users[1]) and not (users[0] & users[2]) and not (users[1] & users[2])
    assert sorted(p.name for p in (work / "server").iterdir()) == ["catalog"]
    opened = set((work / "server-opened.log").read_text().splitlines())
    assert str(work / "server" / "catalog" / "items.csv") in opened  # the hook saw the ServerApp read
    private = [p for p in opened if p.endswith(("interactions.csv", "users.csv")) or "/owner/" in p or "/node-" in p]
    assert private == []


def test_a_run_on_another_catalog_fails_before_round_1_with_the_nodes_reasons(deployment) -> None:
    dep, rc, work = deployment
    assert rc == 0
    other = work / "server" / "other-catalog"
    assert main(["catalog", "build", "--dataset", "csv", "--path", str(work / "owner"), "--text-columns", "title",
                 "--out", str(other)]) == 0  # fmt: skip
    try:
        dep.flwr_run({"dataset": "csv", "catalog-path": str(other), "cache-dir": str(work / "cache"), "dim": 16,
                      "num-layers": 1, "max-len": 12, "min-train-nodes": 3, "output-dir": str(work / "out-other")},
                     timeout=600, log="flwr-run-other.log")  # fmt: skip
    finally:
        shutil.rmtree(other)
    log = (work / "flwr-run-other.log").read_text()
    assert "fedrec: error: before round 1: 0 of 3 connected nodes hold the server's catalog" in log, log[-3000:]
    assert log.count("differs from the server's") >= 3
    run_id = re.search(r"run_id `(\d+)`", log).group(1)
    (run,) = [r for r in dep.runs() if r["run-id"] == run_id]
    assert run["status"] == "finished:failed", run  # not finished:completed
    assert not list((work / "out-other").glob("run-*/round-*"))  # nobody trained


def test_a_node_with_an_unregistered_key_is_refused(deployment) -> None:
    dep, _, work = deployment
    k = NODES  # made by the credentials helper, never registered
    # No retries: a registered key is refused only while its node still counts as online.
    proc = dep.start_node(k, data=work / "node-0" / "data", wait=0)
    assert proc.wait(timeout=120) == 2  # refused by `fedrec deploy supernode`, before flower-supernode starts
    last = (work / f"node-{k}.log").read_text().strip().splitlines()[-1]
    assert last.startswith("fedrec: error: the SuperLink at") and "is not registered" in last, last
