"""Ranking metrics as pure functions on arrays.

Everything starts from the 0-based rank of each held-out item among the items it competes with.
Ties count against the model: an item scored the same as the target is ranked above it, so a model
that scores everything equally gets the worst rank, never the best.
"""

from __future__ import annotations

import numpy as np

from shared.errors import FedrecError


def _check_scores(scores: np.ndarray) -> None:
    if scores.ndim != 2:
        raise FedrecError(f"scores must be 2-D (users, items), got shape {scores.shape}")
    if np.isnan(scores).any():
        raise FedrecError("scores contain NaN; a NaN would rank as a perfect hit")


def candidate_ranks(scores: np.ndarray) -> np.ndarray:
    """Rank of column 0 among each row's candidates.

    scores: (B, C) float, the target in column 0 and C-1 negatives after it.
    returns: (B,) int, 0 when the target beats every negative.
    """
    _check_scores(scores)
    return (scores[:, 1:] >= scores[:, :1]).sum(axis=1)


def full_ranks(scores: np.ndarray, targets: np.ndarray, excluded: np.ndarray) -> np.ndarray:
    """Rank of each target among all items that are not excluded.

    scores:   (B, I+1) float over the whole catalog; column 0 is padding and never competes.
    targets:  (B,) int item index of each row's held-out item.
    excluded: (B, I+1) bool, True for items the user has already seen; the target itself is
              never excluded, even if the user saw it before.
    returns:  (B,) int.
    """
    _check_scores(scores)
    rows = np.arange(len(targets))
    competes = ~excluded
    competes[:, 0] = False
    competes[rows, targets] = False
    target_scores = scores[rows, targets][:, None]
    return ((scores >= target_scores) & competes).sum(axis=1)


def hit_rate(ranks: np.ndarray, k: int) -> float:
    return float(np.mean(ranks < k))


def ndcg(ranks: np.ndarray, k: int) -> float:
    """NDCG@k with one relevant item per row: 1/log2(rank+2) inside the top k, else 0."""
    gains = np.where(ranks < k, 1.0 / np.log2(ranks + 2.0), 0.0)
    return float(np.mean(gains))


def mrr(ranks: np.ndarray) -> float:
    """Mean reciprocal rank over the whole list (not cut at k)."""
    return float(np.mean(1.0 / (ranks + 1.0)))


def recall_at_k(top_k: np.ndarray, relevant: list[np.ndarray]) -> float:
    """Mean fraction of each row's relevant items that appear in its top k.

    top_k:    (B, k) int item indices, best first.
    relevant: B arrays of held-out item indices (several per user where the protocol has them).
    """
    if len(top_k) != len(relevant):
        raise FedrecError(f"top_k has {len(top_k)} rows but relevant has {len(relevant)}")
    hits = [np.isin(rel, row).sum() / len(rel) for row, rel in zip(top_k, relevant) if len(rel)]
    return float(np.mean(hits)) if hits else 0.0


def summarize(ranks: np.ndarray, ks: tuple[int, ...] = (10,)) -> dict[str, float]:
    """HR@k and NDCG@k for each k, plus MRR, keyed as in the JSON reports ('hr@10', ...)."""
    out: dict[str, float] = {}
    for k in ks:
        out[f"hr@{k}"] = hit_rate(ranks, k)
        out[f"ndcg@{k}"] = ndcg(ranks, k)
    out["mrr"] = mrr(ranks)
    return out
