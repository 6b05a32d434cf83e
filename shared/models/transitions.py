"""The consented users' co-occurrences: how often item j came soon after item i in their histories.

ML-1M is strongly sequential: the items a user rated last say much about the next. A text-only
item tower cannot memorise which items go together, and 10% of the users are too few to teach
the transformer that; their counts, read directly, carry it (an item-based neighbourhood model
beside the two towers). The server, which may use the consented users' data centrally, counts
every pair (i, j) of their training histories in which j came at most WINDOW items after i,
weighted WINDOW_DECAY^(gap - 1). Every score then adds

    weight x sum over the user's last `recent` items h_k (k = 0 the last) of
             recent_decay^k x log(1 + count(h_k, j) / smoothing)

for candidate j. It is zero for a pair never seen, so the table stays sparse, and it shifts no
user's row by a constant, so it only reorders. WINDOW, its decay, `recent` and its decay were
chosen on validation items (simulations/results/cooccurrence.md); `weight` and `smoothing` are
chosen for each pretraining on the consented users' validation items (`tune`).

What it discloses: the table is part of the model every node and every reader of a checkpoint
holds, and it is computed from the consented users alone, who authorised central use of their
data; it is not differentially private with respect to them, as the pretraining is not. The
users who did not consent never enter it (a DP release of their transitions keeps almost none of
the signal: simulations/results/transition_prior.md).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np
from scipy import sparse

FILE = "transitions.safetensors"
WINDOW, WINDOW_DECAY = 10, 0.8  # which pairs are counted, and how much a gap of one more item weighs
RECENT, RECENT_DECAY = 20, 0.8  # how many of the user's last items vote, and how much one further back weighs
WEIGHTS = (0.5, 1.0, 2.0, 4.0)
SMOOTHINGS = (0.2, 0.5, 2.0)


@dataclass(frozen=True)
class Transitions:
    table: sparse.csr_matrix  # (I+1, I+1) weighted counts; row = the earlier item, column = the later
    weight: float = 1.0
    smoothing: float = 0.1
    recent: int = RECENT
    recent_decay: float = RECENT_DECAY

    @cached_property
    def _logs(self) -> sparse.csr_matrix:
        """log(1 + count / smoothing) for every counted pair; a pair never seen stays 0 (sparse)."""
        logs = self.table.astype(np.float32, copy=True).tocsr()
        logs.data = np.log1p(logs.data / self.smoothing)
        return logs

    def votes(self, history: np.ndarray) -> sparse.csr_matrix:
        """(B, I+1): how much each item of each row's last `recent` items votes (0: padding).
        `history` (B, L) left-padded item ids, oldest first; (B,) reads as the last item alone."""
        history = np.asarray(history, dtype=np.int64)
        recent = (history[:, None] if history.ndim == 1 else history)[:, -self.recent :]
        k = recent.shape[1]
        shares = np.broadcast_to(self.recent_decay ** np.arange(k - 1, -1, -1, dtype=np.float32), recent.shape)
        rows = np.repeat(np.arange(len(recent)), k)
        votes = sparse.csr_matrix((shares.ravel(), (rows, recent.ravel())), shape=(len(recent), self.table.shape[0]))
        votes.sum_duplicates()
        return votes

    def rows(self, history: np.ndarray) -> np.ndarray:
        """(B, I+1) float32: the term for every item after each row's history (see `votes`)."""
        # The log is taken per pair, then summed over the recent items: a sparse product.
        picked = (self.votes(history) @ self._logs).toarray()
        picked[:, 0] = 0.0  # padding votes for nothing (its row is empty), and is never a candidate
        return (self.weight * picked).astype(np.float32)

    def pairs(self, history: np.ndarray, candidates: np.ndarray) -> np.ndarray:
        """(B, C) float32: the term for each row's candidates (B, C) after its history."""
        return np.take_along_axis(self.rows(history), np.asarray(candidates, dtype=np.int64), axis=1)

    def shares(self, history: np.ndarray, item: int) -> np.ndarray:
        """(L,) float32: how much of `item`'s term each item of one history (L,) gives; they sum to
        the term (explanations attribute it to the history items that vote)."""
        history = np.asarray(history, dtype=np.int64)
        out = np.zeros(len(history), dtype=np.float32)
        k = min(self.recent, len(history))
        if k:
            recent = history[len(history) - k :]
            logs = self._logs[recent, int(item)].toarray().ravel()
            out[len(history) - k :] = self.weight * self.recent_decay ** np.arange(k - 1, -1, -1) * logs
        return out

    def with_constants(self, weight: float, smoothing: float) -> Transitions:
        return Transitions(self.table, float(weight), float(smoothing), self.recent, self.recent_decay)

    def save(self, directory: Path) -> None:
        from safetensors.numpy import save_file

        coo = self.table.tocoo()
        save_file({"sources": coo.row.astype(np.int64), "targets": coo.col.astype(np.int64),
                   "counts": coo.data.astype(np.float32), "shape": np.asarray(coo.shape, dtype=np.int64),
                   "constants": np.asarray([self.weight, self.smoothing, self.recent, self.recent_decay],
                                           dtype=np.float64)},
                  str(Path(directory) / FILE))  # fmt: skip

    @classmethod
    def load(cls, directory: Path) -> Transitions | None:
        """The checkpoint's table, or None when it has none."""
        path = Path(directory) / FILE
        if not path.is_file():
            return None
        from safetensors.numpy import load_file

        t = load_file(str(path))
        table = sparse.csr_matrix((t["counts"], (t["sources"], t["targets"])), shape=tuple(int(n) for n in t["shape"]))
        c = t["constants"]
        # A table saved before `recent` existed scored after the last item alone.
        recent, decay = (int(c[2]), float(c[3])) if len(c) >= 4 else (1, 1.0)
        return cls(table, float(c[0]), float(c[1]), recent, decay)


def count_transitions(sequences: list[np.ndarray], num_items: int, window: int = WINDOW,
                      decay: float = WINDOW_DECAY) -> Transitions:  # fmt: skip
    """Every pair (i, j) of the given training sequences in which j came at most `window` items
    after i, counted with weight decay^(gap - 1); padding (0) is skipped."""
    src, dst, val = [], [], []
    for s in sequences:
        s = np.asarray(s, dtype=np.int64)
        for gap in range(1, min(window, len(s) - 1) + 1):
            src.append(s[:-gap])
            dst.append(s[gap:])
            val.append(np.full(len(s) - gap, decay ** (gap - 1), dtype=np.float32))
    src, dst, val = (np.concatenate(x) if x else np.zeros(0, t) for x, t in ((src, np.int64), (dst, np.int64), (val, np.float32)))
    keep = (src > 0) & (dst > 0)
    table = sparse.csr_matrix((val[keep], (src[keep], dst[keep])), shape=(num_items + 1, num_items + 1))
    table.sum_duplicates()
    return Transitions(table)


def tune(model, dataset, users: np.ndarray, transitions: Transitions,  # type: ignore[no-untyped-def]
         sample: int = 2000, seed: int = 0) -> tuple[Transitions | None, list[dict]]:  # fmt: skip
    """The (weight, smoothing) whose two-stage full NDCG@10 on `users`' validation items is best,
    or None when none beats the model without the table; every setting tried, as rows (with the
    sampled HR@10 beside it, for the record)."""
    from shared.eval.protocols import evaluate_full, evaluate_sampled, sampled_candidates
    from shared.models.score_terms import ScoreTerms
    from shared.models.scoring import ModelScorer

    users = np.asarray(users)
    if len(users) > sample:
        users = np.random.default_rng(seed).choice(users, sample, replace=False)
    # One scorer: the user states do not depend on the table, so they are computed once.
    scorer = ModelScorer(model, dataset, users=users)
    others = model.score_terms(with_transitions=False)  # the public text's neighbours stay on
    negatives = sampled_candidates(dataset, "valid", users=users)
    rows: list[dict] = []
    best: tuple[float, Transitions | None] = (-1.0, None)
    for candidate in [None, *(transitions.with_constants(w, s) for w in WEIGHTS for s in SMOOTHINGS)]:
        scorer.terms = ScoreTerms.of(candidate, others)
        ndcg = float(evaluate_full(dataset, scorer.two_stage, "valid", users=users)["ndcg@10"])
        hr = float(evaluate_sampled(dataset, scorer.two_stage, "valid", candidates=negatives, users=users)["hr@10"])
        rows.append({"weight": 0.0 if candidate is None else candidate.weight,
                     "smoothing": None if candidate is None else candidate.smoothing,
                     "valid-full-ndcg@10": ndcg, "valid-sampled-hr@10": hr})  # fmt: skip
        if ndcg > best[0]:
            best = (ndcg, candidate)
    return best[1], rows
