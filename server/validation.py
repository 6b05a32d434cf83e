"""Every trained update is checked before it can reach the global model.

Refused, each with its reason:
- a reply that is an error (a client that crashed) or carries no weights;
- weights of another key, dtype or length than the model's (`shared.wire.from_record`);
- NaN or Inf anywhere;
- an update (trained minus global weights) whose L2 norm exceeds `max_norm_ratio` times the
  round's median update norm: a client that scales its update to drag the average.
The median is over the structurally valid, finite updates of the same round, so one outlier
cannot move the bar it is measured against; with fewer than three updates there is no median
worth trusting and the norm check is skipped.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from flwr.app import Message

from shared.errors import FedrecError
from shared.models.params import flatten
from shared.wire import from_record

MIN_FOR_MEDIAN = 3


@dataclass(frozen=True)
class Rejection:
    node_id: int
    reason: str


@dataclass
class RoundUpdates:
    """One attempt at a round's training, as the server saw it."""

    replies: list[Message]  # every reply (the ledger records them all)
    kept: list[Message]  # the replies whose updates may be aggregated
    rejections: list[Rejection]  # why each of the others was refused
    sampled: list[Message]  # the instructions sent: central DP averages over all of them
    upload_bytes: int = 0  # under SecAgg+, one client's masked vector (else the weights' size)


def _problem(model: torch.nn.Module, msg: Message) -> tuple[str, torch.Tensor | None]:
    if msg.has_error():
        return f"client error: {msg.error.reason[:200]}", None
    if "arrays" not in msg.content:
        return "no weights in the reply", None
    try:
        flat = flatten(from_record(model, msg.content["arrays"]))
    except FedrecError as err:
        return f"malformed weights: {err}", None
    if not torch.isfinite(flat).all():
        return f"non-finite weights: {int((~torch.isfinite(flat)).sum())} NaN/Inf values", None
    return "", flat


def validate_updates(
    replies: list[Message], model: torch.nn.Module, global_flat: torch.Tensor, max_norm_ratio: float
) -> tuple[list[Message], list[Rejection]]:
    """The replies whose updates may be aggregated, and a Rejection for each of the others."""
    checked, rejected = [], []
    for msg in replies:
        reason, flat = _problem(model, msg)
        if reason:
            rejected.append(Rejection(int(msg.metadata.src_node_id), reason))
        else:
            checked.append((msg, float(torch.linalg.vector_norm((flat - global_flat).double()))))
    if max_norm_ratio > 0 and len(checked) >= MIN_FOR_MEDIAN:
        median = float(torch.tensor([n for _, n in checked]).median())
        bar = max_norm_ratio * median
        kept = []
        for msg, norm in checked:
            if median > 0 and norm > bar:
                rejected.append(Rejection(int(msg.metadata.src_node_id),
                                          f"update norm {norm:.3g} > {max_norm_ratio:g} x the round's median {median:.3g}"))  # fmt: skip
            else:
                kept.append((msg, norm))
        checked = kept
    return [msg for msg, _ in checked], rejected
