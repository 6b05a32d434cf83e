"""A run that cannot train says why, node by node, and a node on another catalog is found before
round 1 (server/outcomes.py); metrics of a model no round trained are marked as such."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from server.outcomes import CATALOG_QUERY, check_node_catalogs, reasons_line
from server.summary import summary_markdown
from shared.errors import FedrecError


@pytest.fixture(autouse=True)
def _inside_a_run(monkeypatch: pytest.MonkeyPatch) -> None:
    """Flower builds a message for the run it is in; outside a ServerApp there is none."""
    from flwr.supercore.task_identity import TaskIdentity

    monkeypatch.setattr(TaskIdentity, "_run_id", 1)
    monkeypatch.setattr(TaskIdentity, "_node_id", 1)
    monkeypatch.setattr(TaskIdentity, "_task_id", 1)


def reply(node: int, content: dict | None = None, error: str = "", to: str = "") -> SimpleNamespace:
    return SimpleNamespace(metadata=SimpleNamespace(src_node_id=node, reply_to_message_id=to),
                           has_error=lambda: bool(error), error=SimpleNamespace(reason=error), content=content or {})  # fmt: skip


class CatalogGrid:
    """Nodes answering the catalog query with their fingerprints ('' raises, as a ClientApp error)."""

    def __init__(self, fingerprints: dict[int, str]) -> None:
        self.fingerprints, self.sent = fingerprints, {}

    def get_node_ids(self) -> list[int]:
        return list(self.fingerprints)

    def push_messages(self, messages):  # type: ignore[no-untyped-def]
        ids = []
        for m in messages:
            assert m.metadata.message_type == CATALOG_QUERY
            self.sent[f"m{m.metadata.dst_node_id}"] = m.metadata.dst_node_id
            ids.append(f"m{m.metadata.dst_node_id}")
        return ids

    def pull_messages(self, ids):  # type: ignore[no-untyped-def]
        out = []
        for i in ids:
            node = self.sent[i]
            fp = self.fingerprints[node]
            out.append(reply(node, {"catalog": {"fingerprint": fp}}, to=i) if fp else
                       reply(node, error="<class 'shared.errors.FedrecError'>:<'data-path: no such directory'>", to=i))
        return out


def test_the_reasons_are_the_nodes_own_words() -> None:
    replies = [
        reply(1, error="<class 'shared.errors.FedrecError'>:<'this node's item catalog (ab) differs from the server's (cd)'>"),
        reply(2, {"refusal": {"key": "dp", "reason": "this node requires DP"}}),
        reply(3, {"privacy": {"status": "budget-exhausted"}}),
        reply(4, {"arrays": {}, "metrics": {}}),  # trained: no reason
    ]
    line = reasons_line(replies, [(1, "client error"), (5, "norm 1e6 exceeds 10x the median")])
    assert line == ("node 1: this node's item catalog (ab) differs from the server's (cd); "
                    "node 2: refused by its privacy policy: dp: this node requires DP; node 3: declined: budget-exhausted; "
                    "node 5: update refused: norm 1e6 exceeds 10x the median")  # fmt: skip
    assert reasons_line([reply(n, error="<class 'ValueError'>:<'boom'>") for n in range(8)]).endswith("; and 3 more")
    assert "node 0: ValueError: boom" in reasons_line([reply(0, error="<class 'ValueError'>:<'boom'>")])


def test_a_catalog_mismatch_fails_before_round_1_with_every_nodes_reason() -> None:
    with pytest.raises(FedrecError) as err:
        check_node_catalogs(CatalogGrid({10: "other", 11: "other", 12: ""}), "mine", min_nodes=2, timeout=5)
    text = str(err.value)
    assert text.startswith("before round 1: 0 of 3 connected nodes hold the server's catalog mine")
    assert "node 10: its catalog (other) differs from the server's (mine)" in text
    assert "node 12: data-path: no such directory" in text


def test_enough_matching_nodes_go_on_and_the_others_are_named(caplog) -> None:
    with caplog.at_level("WARNING", logger="flwr.fedrec"):
        check_node_catalogs(CatalogGrid({1: "mine", 2: "mine", 3: "other"}), "mine", min_nodes=2, timeout=5)
    assert "node 3: its catalog (other) differs" in caplog.text


def test_test_metrics_of_a_model_no_round_trained_are_marked() -> None:
    summary = {"rounds": 0, "best_round": 0, "test": {"ranking-full-ndcg@10": 0.01}, "history": [],
               "stopped": "round 1: fewer than min-train-nodes (3) valid updates in 2 attempts (node 1: ...)",
               "test_weights": "the untrained initial weights (no federated round completed)"}  # fmt: skip
    text = summary_markdown("7", summary)
    assert "**Not a result of this run:** these test metrics are of the untrained initial weights" in text


class DecliningGrid:
    """Nodes whose privacy budget is spent: each declines training (as client/privacy.py does) and
    answers evaluation with metrics of whatever model it is sent."""

    def __init__(self, nodes: list[int]) -> None:
        self.nodes, self.pushed = nodes, {}

    def get_node_ids(self) -> list[int]:
        return list(self.nodes)

    def push_messages(self, messages):  # type: ignore[no-untyped-def]
        ids = []
        for m in messages:
            m.metadata.__dict__["_message_id"] = f"m{len(self.pushed)}"
            self.pushed[m.metadata.message_id] = m
            ids.append(m.metadata.message_id)
        return ids

    def pull_messages(self, ids):  # type: ignore[no-untyped-def]
        from flwr.app import ConfigRecord, Message, MetricRecord, RecordDict

        out = []
        for i in ids:
            msg = self.pushed.pop(i)
            node = msg.metadata.dst_node_id
            if msg.metadata.message_type == "train":
                content = RecordDict({"privacy": ConfigRecord({
                    "client-id": f"node-{node}", "partition-id": node, "unit": "user", "status": "budget-exhausted",
                    "noise-multiplier": 1.0, "sample-rate": 0.1, "steps": 0, "max-grad-norm": 1.0, "epsilon": 8.0,
                    "delta": 1e-6, "budget": 8.0, "accountant": "pld", "history": "[]"})})  # fmt: skip
            else:
                content = RecordDict({"metrics": MetricRecord({"num-examples": 4, "ranking-full-ndcg@10": 0.01})})
            reply = Message(content, reply_to=msg)
            reply.metadata.__dict__["_src_node_id"] = node
            out.append(reply)
        return out


@pytest.mark.parametrize("resumed", [False, True])
def test_a_run_in_which_every_node_declined_marks_its_test_metrics_as_no_result(tmp_path, resumed: bool) -> None:
    import torch

    from server.checkpoints import ServerState
    from server.rounds import run_rounds
    from server.strategy import make_strategy
    from shared.config import FederationConfig

    cfg = FederationConfig(num_server_rounds=3, min_train_nodes=2, round_timeout=5)
    state = ServerState(round=2, best_round=0) if resumed else ServerState()
    summary = run_rounds(DecliningGrid([1, 2]), make_strategy(cfg), torch.nn.Linear(3, 1), cfg, tmp_path, state)
    assert "declined: its privacy budget is spent" in summary["stopped"]
    assert summary["test"]["ranking-full-ndcg@10"] == pytest.approx(0.01)  # still evaluated ...
    assert summary["no_node_trained"] is True  # ... and said to be no result
    expected = "round 2's weights from the checkpoint this run resumed" if resumed else "the untrained initial weights"
    assert summary["test_weights"] == f"{expected}: no node trained in this run"
    text = summary_markdown("7", summary)
    assert f"## Test metrics of {expected}: no node trained in this run" in text
