"""The server's view of privacy: what each reply spent, who has no budget left, central DP's account.

Clients account for themselves (they alone know their data's size); the server records what
they report in the ledger and stops sampling a client once it declines with `budget-exhausted`.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from flwr.app import ArrayRecord, Message, MetricRecord, RecordDict
from flwr.serverapp import Grid
from flwr.serverapp.strategy import DifferentialPrivacyClientSideFixedClipping, Strategy

from server import ledger
from shared.privacy.accounting import EXHAUSTED, accountant_version, central_epsilon
from shared.privacy.central import UNIFORM_WEIGHT

log = logging.getLogger("flwr.fedrec")


def ledger_entry(msg: Message, server_round: int) -> dict | None:
    if msg.has_error() or "privacy" not in msg.content:
        return None
    p = msg.content["privacy"]
    return {
        "round": server_round, "client_id": str(p["client-id"]), "node_id": int(msg.metadata.src_node_id),
        "partition_id": int(p["partition-id"]), "unit": str(p["unit"]), "status": str(p["status"]),
        "noise_multiplier": float(p["noise-multiplier"]), "sample_rate": float(p["sample-rate"]),
        "steps": int(p["steps"]) if p["status"] != EXHAUSTED else 0,
        "max_grad_norm": float(p["max-grad-norm"]), "epsilon": float(p["epsilon"]),
        "delta": float(p["delta"]), "budget": float(p["budget"]), "accountant": str(p["accountant"]),
        "history": json.loads(str(p["history"])),
        "time": time.time(),
    }  # fmt: skip


REFUSAL, REFUSED = "refusal", "refused"  # a node whose own privacy policy forbids the run config


def refusal_entry(msg: Message, server_round: int) -> dict | None:
    """The ledger line of a node that refused the run config, with its key and reason."""
    if msg.has_error() or REFUSAL not in msg.content:
        return None
    r = msg.content[REFUSAL]
    return {"round": server_round, "node_id": int(msg.metadata.src_node_id), "partition_id": int(r["partition-id"]),
            "status": REFUSED, "key": str(r["key"]), "reason": str(r["reason"]), "time": time.time()}  # fmt: skip


def is_refusal(msg: Message) -> bool:
    return not msg.has_error() and REFUSAL in msg.content


def declined(msg: Message) -> bool:
    """A normal reply that carries no update because the client's budget is spent."""
    return (not msg.has_error() and "privacy" in msg.content and "arrays" not in msg.content
            and str(msg.content["privacy"]["status"]) == EXHAUSTED)  # fmt: skip


class PrivacyTracker:
    """Writes each round's ledger entries and remembers the nodes that declined."""

    def __init__(self, run_dir: Path) -> None:
        self.run_dir = run_dir
        self.exhausted: set[int] = {e["node_id"] for e in ledger.read_ledger(run_dir) if e.get("status") == EXHAUSTED}

    def record(self, server_round: int, replies: Iterable[Message], rejected: dict[int, str] | None = None) -> list[Message]:
        """Ledger the round, with the reason where the server refused a client's update (its
        spending stands: the client trained); return the replies that carry a trained update."""
        trained, entries = [], []
        for msg in replies:
            refusal = refusal_entry(msg, server_round)
            if refusal is not None:
                entries.append(refusal)
                log.warning("node %d (partition %d) refused round %d: %s: %s", refusal["node_id"],
                            refusal["partition_id"], server_round, refusal["key"], refusal["reason"])  # fmt: skip
                continue
            entry = ledger_entry(msg, server_round)
            if entry is not None:
                if rejected and entry["node_id"] in rejected:
                    entry["update_rejected"] = rejected[entry["node_id"]]
                entries.append(entry)
                if entry["status"] == EXHAUSTED:
                    self.exhausted.add(entry["node_id"])
                    log.info("client %s (node %d) declined round %d: budget exhausted at epsilon %.3f",
                             entry["client_id"], entry["node_id"], server_round, entry["epsilon"])  # fmt: skip
                    continue
            trained.append(msg)
        ledger.append(self.run_dir, entries)
        return trained


class ActiveGrid:
    """The grid as a strategy sees it when sampling for training: without exhausted nodes."""

    def __init__(self, grid: Grid, exhausted: set[int]) -> None:
        self._grid, self._exhausted = grid, exhausted

    def get_node_ids(self) -> list[int]:
        return [n for n in self._grid.get_node_ids() if n not in self._exhausted]

    def __getattr__(self, name: str):  # type: ignore[no-untyped-def]
        return getattr(self._grid, name)


def is_central_dp(strategy: Strategy) -> bool:
    return isinstance(strategy, DifferentialPrivacyClientSideFixedClipping)


def fixed_denominator(kept: list[Message], sampled: list[Message], global_arrays: ArrayRecord) -> list[Message]:
    """Central DP's average over every client sampled for the round, those whose update is
    missing (dropped out, refused) counting as a zero update: DP-FedAvg's fixed-denominator
    estimator (McMahan et al., 2018, "Learning Differentially Private Recurrent Language
    Models"). The noise Flower adds, sigma*C/m for m sampled clients, is calibrated to exactly
    that average's sensitivity C/m whoever drops out; Flower's wrapper would otherwise skip every
    round with a dropout. The stand-ins carry the answering clients' mean metrics, so the
    round's training metrics stay theirs."""
    answered = {m.metadata.src_node_id for m in kept}
    missing = [m for m in sampled if m.metadata.dst_node_id not in answered]
    if not kept or not missing:
        return kept
    metrics = {k: sum(float(m.content["metrics"][k]) for m in kept) / len(kept) for k in kept[0].content["metrics"]}
    metrics[UNIFORM_WEIGHT] = 1
    return kept + [Message(RecordDict({"arrays": global_arrays, "metrics": MetricRecord(metrics)}), reply_to=m)
                   for m in missing]  # fmt: skip


def discard_unreleased(strategy: Strategy, server_round: int) -> None:
    """Before a round is sampled again: forget the privacy event Flower's DP wrapper prepared for
    the failed attempt, which it refuses to prepare twice. Nothing of that attempt was released
    (it was never aggregated), so nothing of it is spent."""
    pending = getattr(strategy, "_pending_events", None)
    if isinstance(pending, dict):
        pending.pop(server_round, None)


def central_spent(strategy: Strategy, earlier_releases: int) -> dict[str, Any] | None:
    """DP-FedAvg's account after this round, when the strategy is Flower's DP wrapper; None otherwise.

    `epsilon` is the guarantee the privacy report quotes: dp_accounting's PLD over every noised
    release of the run, `earlier_releases` (the history's, a resumed run's included) and this one.
    Flower's own RDP account is kept beside it, named as Flower's, because the run's log prints it
    ("Privacy spent: ..."): it usually reads higher than the PLD for the same releases (above the
    budget the noise was calibrated to, at times) and restarts at zero when a run resumes, so a
    reader comparing the two must see which is which."""
    spent = strategy.privacy_spent() if hasattr(strategy, "privacy_spent") else None
    if spent is None:
        return None
    noise, releases = float(strategy.noise_multiplier), earlier_releases + 1  # type: ignore[attr-defined]
    return {"epsilon": central_epsilon(noise, releases, spent.delta), "delta": spent.delta, "releases": releases,
            "accountant": accountant_version(), "noise_multiplier": noise,
            "clipping_norm": strategy.clipping_norm, "clients_per_round": strategy.num_sampled_clients,  # type: ignore[attr-defined]
            "flower_epsilon": spent.epsilon, "flower_accountant": spent.accounting_method,
            "flower_releases": spent.num_releases}  # fmt: skip
