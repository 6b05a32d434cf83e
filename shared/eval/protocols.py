"""The two evaluation protocols, shared by baselines, centralized models and the federation.

(a) full:    the held-out item is ranked against the whole catalog, minus the items the user has
             already seen. This is the harder protocol, used by recent sequential-rec papers.
(b) sampled: the held-out item is ranked against 100 items the user never interacted with, drawn
             uniformly with a fixed seed. This is the NCF / SASRec protocol, kept so numbers can sit
             next to the literature's.

Both report HR@K, NDCG@K, precision@K, recall@K, F1@K and MRR (shared.eval.metrics.summarize).

A model plugs in as a `Scorer`: any object that scores users against all items, and optionally
against given candidates (a ranking stage re-scores only those).
"""

from __future__ import annotations

import logging
from typing import Protocol

import numpy as np

from shared.data.dataset import STAGES, Dataset, check_stage
from shared.eval.metrics import candidate_ranks, full_ranks, summarize

log = logging.getLogger(__name__)

SAMPLED_NEGATIVES = 100
SAMPLED_SEED = 20240607  # fixed so every model is evaluated on the same negatives


class Scorer(Protocol):
    """Scores users against the whole catalog. A scorer may also define
    `score_candidates(users (B,), items (B, C), stage) -> (B, C)`; the sampled protocol then
    re-scores just those candidates (a ranking stage does)."""

    def score_all(self, users: np.ndarray, stage: str) -> np.ndarray:
        """users (B,) -> (B, I+1) scores; the model may read each user's history before `stage`."""
        ...


def seen_mask(dataset: Dataset, users: np.ndarray, stage: str) -> np.ndarray:
    """(B, I+1) True where the user interacted with the item before `stage`'s target."""
    histories = [dataset.history(int(u), stage) for u in users]
    rows = np.repeat(np.arange(len(users)), [len(h) for h in histories])
    mask = np.zeros((len(users), dataset.num_items + 1), dtype=bool)
    if rows.size:
        mask[rows, np.concatenate(histories)] = True
    return mask


def sampled_candidates(
    dataset: Dataset,
    stage: str,
    num_negatives: int = SAMPLED_NEGATIVES,
    seed: int = SAMPLED_SEED,
    users: np.ndarray | None = None,
) -> np.ndarray:
    """(U, 1+n): each user's `stage` target in column 0, then n items the user never touched.

    Negatives are drawn without replacement from items absent from the user's *whole* sequence,
    so a later test item is never used as a validation negative. Each user has their own seeded
    generator, so a client evaluating only its users draws exactly the negatives a central
    evaluation would. On a catalog too small for n negatives for every user, n shrinks to what
    every user can supply, and a warning says so.
    """
    check_stage(stage)
    users = np.arange(dataset.num_users) if users is None else np.asarray(users)
    lengths = np.diff(dataset.offsets)  # an upper bound on distinct items; exact for MovieLens
    n = min(num_negatives, dataset.num_items - int(lengths.max()))
    if n < num_negatives:
        distinct = max(len(np.unique(dataset.sequence(u))) for u in range(dataset.num_users))
        n = min(num_negatives, dataset.num_items - distinct)
        if n < num_negatives:
            log.warning("sampled protocol: only %d unseen items for some user; using %d negatives",
                        dataset.num_items - distinct, n)  # fmt: skip
    out = np.empty((len(users), 1 + n), dtype=np.int64)
    out[:, 0] = dataset.targets(stage)[users]
    unseen = np.ones(dataset.num_items + 1, dtype=bool)
    unseen[0] = False
    stage_code = STAGES.index(stage)
    for row, u in enumerate(users):
        seq = dataset.sequence(int(u))
        unseen[seq] = False
        rng = np.random.default_rng([seed, stage_code, int(u)])
        out[row, 1:] = rng.choice(np.flatnonzero(unseen), size=n, replace=False)
        unseen[seq] = True
    return out


def _batches(users: np.ndarray, batch_size: int) -> list[np.ndarray]:
    return [users[i : i + batch_size] for i in range(0, len(users), batch_size)]


def full_ranks_of(
    dataset: Dataset, scorer: Scorer, stage: str, batch_size: int = 1024, users: np.ndarray | None = None,
) -> np.ndarray:  # fmt: skip
    """(U,) each user's 0-based rank of their `stage` item against the whole catalog, seen items
    left out. `users` restricts evaluation to some users (a client's own); default all."""
    check_stage(stage)
    targets = dataset.targets(stage)
    ranks = []
    for batch in _batches(np.arange(dataset.num_users) if users is None else users, batch_size):
        scores = np.asarray(scorer.score_all(batch, stage), dtype=np.float64)
        ranks.append(full_ranks(scores, targets[batch], seen_mask(dataset, batch, stage)))
    return np.concatenate(ranks)


def sampled_ranks_of(
    dataset: Dataset, scorer: Scorer, stage: str, batch_size: int = 1024,
    candidates: np.ndarray | None = None, users: np.ndarray | None = None,
) -> np.ndarray:  # fmt: skip
    """(U,) each user's 0-based rank of their `stage` item among its sampled candidates (one row
    per evaluated user, in `users` order), re-scored with `score_candidates` when the scorer has
    it, else gathered from `score_all`."""
    users = np.arange(dataset.num_users) if users is None else np.asarray(users)
    cands = sampled_candidates(dataset, stage, users=users) if candidates is None else candidates
    ranks = []
    for start in range(0, len(users), batch_size):
        batch, items = users[start : start + batch_size], cands[start : start + batch_size]
        if hasattr(scorer, "score_candidates"):
            scores = scorer.score_candidates(batch, items, stage)
        else:
            scores = np.take_along_axis(scorer.score_all(batch, stage), items, axis=1)
        ranks.append(candidate_ranks(np.asarray(scores, dtype=np.float64)))
    return np.concatenate(ranks)


def evaluate_full(
    dataset: Dataset, scorer: Scorer, stage: str, ks: tuple[int, ...] = (10,),
    batch_size: int = 1024, users: np.ndarray | None = None,
) -> dict[str, float]:  # fmt: skip
    """The full protocol's metrics (see `full_ranks_of`)."""
    return summarize(full_ranks_of(dataset, scorer, stage, batch_size, users), ks)


def evaluate_sampled(
    dataset: Dataset, scorer: Scorer, stage: str, ks: tuple[int, ...] = (10,),
    batch_size: int = 1024, candidates: np.ndarray | None = None,
    users: np.ndarray | None = None,
) -> dict[str, float]:  # fmt: skip
    """The sampled protocol's metrics (see `sampled_ranks_of`)."""
    return summarize(sampled_ranks_of(dataset, scorer, stage, batch_size, candidates, users), ks)


def evaluate(
    dataset: Dataset, scorer: Scorer, stage: str = "test", ks: tuple[int, ...] = (10,),
    users: np.ndarray | None = None,
) -> dict[str, dict[str, float]]:  # fmt: skip
    """Both protocols, shaped as the JSON reports: {"full": {...}, "sampled": {...}}."""
    return {
        "full": evaluate_full(dataset, scorer, stage, ks, users=users),
        "sampled": evaluate_sampled(dataset, scorer, stage, ks, users=users),
    }
