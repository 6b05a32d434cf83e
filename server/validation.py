"""Every trained update is checked before it can reach the global model.

Refused, each with its reason:
- a reply that is an error (a client that crashed) or carries no weights;
- weights of another key, dtype or length than the model's (`shared.wire.weights_vector`);
- NaN or Inf anywhere;
- an update (trained minus global weights) whose L2 norm exceeds `max_norm_ratio` times the
  round's median update norm: a client that scales its update to drag the average.
The median is over the structurally valid, finite updates of the same round, so one outlier
cannot move the bar it is measured against; with fewer than three updates there is no median
worth trusting and the norm check is skipped.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from flwr.app import Message

from shared.errors import FedrecError
from shared.wire import weights_vector

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


def _problem(msg: Message, global_flat: torch.Tensor) -> tuple[str, float]:
    """Why the reply cannot be aggregated ('' if it can), and its update's L2 norm."""
    if msg.has_error():
        return f"client error: {msg.error.reason[:200]}", 0.0
    if "arrays" not in msg.content:
        return "no weights in the reply", 0.0
    try:
        flat = weights_vector(msg.content["arrays"], global_flat.numel())
    except FedrecError as err:
        return f"malformed weights: {err}", 0.0
    # In float64 the norm of finite float32 values cannot overflow: it is finite exactly when
    # every weight is, which saves a separate scan (a quarter of the check's time).
    norm = float(torch.linalg.vector_norm(flat.double() - global_flat))
    if not math.isfinite(norm):
        return f"non-finite weights: {int((~torch.isfinite(flat)).sum())} NaN/Inf values", 0.0
    return "", norm


def validate_updates(
    replies: list[Message], global_flat: torch.Tensor, max_norm_ratio: float, fixed_bar: float = 0.0
) -> tuple[list[Message], list[Rejection]]:
    """The replies whose updates may be aggregated, and a Rejection for each of the others;
    `global_flat` is the round's global weights (`shared.wire.weights_vector`). With `fixed_bar`
    (central DP: at or above the clipping norm) an update is refused above that bar instead of a
    multiple of the round's median: clipping already bounds every honest update, and a bar that
    moves with the other clients' updates would make one client's inclusion depend on theirs,
    which DP-FedAvg's analysis does not allow for."""
    checked, rejected = [], []
    global_flat = global_flat.double()
    for msg in replies:
        reason, norm = _problem(msg, global_flat)
        if reason:
            rejected.append(Rejection(int(msg.metadata.src_node_id), reason))
        else:
            checked.append((msg, norm))
    if fixed_bar > 0:
        kept = [(m, n) for m, n in checked if n <= fixed_bar]
        rejected += [Rejection(int(m.metadata.src_node_id), f"update norm {n:.3g} > the clipping bar {fixed_bar:.3g}")
                     for m, n in checked if n > fixed_bar]  # fmt: skip
        return [m for m, _ in kept], rejected
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
