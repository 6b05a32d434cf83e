"""A run that cannot train says why, node by node, and a node on another catalog is found before
round 1 (server/outcomes.py); metrics of a model no round trained are marked as such."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from server.outcomes import CATALOG_QUERY, check_catalogs, reasons_line
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
        check_catalogs(CatalogGrid({10: "other", 11: "other", 12: ""}), "mine", min_nodes=2, timeout=5)
    text = str(err.value)
    assert text.startswith("before round 1: 0 of 3 connected nodes hold the server's catalog mine")
    assert "node 10: its catalog (other) differs from the server's (mine)" in text
    assert "node 12: data-path: no such directory" in text


def test_enough_matching_nodes_go_on_and_the_others_are_named(caplog) -> None:
    with caplog.at_level("WARNING", logger="flwr.fedrec"):
        check_catalogs(CatalogGrid({1: "mine", 2: "mine", 3: "other"}), "mine", min_nodes=2, timeout=5)
    assert "node 3: its catalog (other) differs" in caplog.text


def test_test_metrics_of_a_model_no_round_trained_are_marked() -> None:
    summary = {"rounds": 0, "best_round": 0, "test": {"ranking-full-ndcg@10": 0.01}, "history": [],
               "stopped": "round 1: fewer than min-train-nodes (3) valid updates in 2 attempts (node 1: ...)",
               "test_weights": "the untrained initial weights (no federated round completed)"}  # fmt: skip
    text = summary_markdown("7", summary)
    assert "**Not a result of this run:** these test metrics are of the untrained initial weights" in text
