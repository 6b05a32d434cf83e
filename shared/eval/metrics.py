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


def precision_recall_f1(ranks: np.ndarray, k: int) -> tuple[float, float, float]:
    """Precision@k, recall@k and F1@k with one held-out item per row, as both protocols have.

    With a single relevant item a row's top k holds it (1 hit) or not (0): recall@k is the hit
    rate, precision@k is the hit rate / k, and a row's F1 is 2/(k+1) on a hit. These are the
    seed's metrics, reported beside HR and NDCG so its tables can be compared; they carry no
    information HR@k lacks. F1 is averaged per row, which here equals the F1 of the mean
    precision and recall (the two are proportional), and which stays exact when the federation
    averages client means weighted by their users."""
    hits = (ranks < k).astype(np.float64)
    return float(np.mean(hits / k)), float(np.mean(hits)), float(np.mean(hits * 2.0 / (k + 1)))


def summarize(ranks: np.ndarray, ks: tuple[int, ...] = (10,)) -> dict[str, float]:
    """HR@k, NDCG@k, precision@k, recall@k and F1@k for each k, plus MRR, keyed as in the JSON
    reports ('hr@10', 'precision@10', ...)."""
    out: dict[str, float] = {}
    for k in ks:
        out[f"hr@{k}"] = hit_rate(ranks, k)
        out[f"ndcg@{k}"] = ndcg(ranks, k)
        out[f"precision@{k}"], out[f"recall@{k}"], out[f"f1@{k}"] = precision_recall_f1(ranks, k)
    out["mrr"] = mrr(ranks)
    return out


def flatten(results: dict[str, dict[str, dict[str, float]]]) -> dict[str, float]:
    """{stage: {protocol: {metric: value}}} -> {'stage-protocol-metric': value}, the flat keys a
    MetricRecord carries and the message audit allows ('ranking-full-ndcg@10', ...): a node's
    report and the server's own evaluation name every metric alike."""
    return {f"{stage}-{protocol}-{metric}": value
            for stage, protocols in results.items()
            for protocol, block in protocols.items()
            for metric, value in block.items()}  # fmt: skip


def paired_gain(base: np.ndarray, ranks: np.ndarray, metric: str = "ndcg@10", resamples: int = 2000,
                seed: int = 0) -> dict[str, float]:  # fmt: skip
    """How much a model gains on `metric` ('hr@K' or 'ndcg@K') over a base model ranked on the
    same rows: the mean per-row difference (ranks' minus base's) and its 95% percentile bootstrap
    interval over rows. Pairing removes what both share (which users are easy), so a gain far
    smaller than either mean's spread over users can be told from chance. The interval is over
    users for these two trained models: it does not cover the spread between training runs (DP
    noise, seeds), which repeats of the run measure."""
    name, _, k = metric.partition("@")
    if resamples < 1:
        raise FedrecError(f"paired_gain: resamples {resamples} must be at least 1")
    if name not in ("hr", "ndcg") or not k.isdecimal():
        raise FedrecError(f"paired_gain: metric {metric!r} is not 'hr@K' or 'ndcg@K'")
    if base.shape != ranks.shape or base.ndim != 1 or not len(base):
        raise FedrecError(f"paired_gain: ranks of shapes {base.shape} and {ranks.shape} are not one row each, paired")

    def gains(r: np.ndarray) -> np.ndarray:
        inside = r < int(k)
        return inside.astype(np.float64) if name == "hr" else np.where(inside, 1.0 / np.log2(r + 2.0), 0.0)

    diff = gains(ranks) - gains(base)
    rng = np.random.default_rng(seed)
    means = np.array([diff[rng.integers(0, len(diff), len(diff))].mean() for _ in range(resamples)])
    low, high = np.percentile(means, [2.5, 97.5])
    return {"mean": float(diff.mean()), "low": float(low), "high": float(high),
            "changed": float(np.mean(base != ranks))}  # fmt: skip
