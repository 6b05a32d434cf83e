"""The consented users' transitions: how often item j came right after item i in their histories.

ML-1M is strongly sequential: the item a user rated last says much about the next. A text-only
item tower cannot memorise which item follows which, and 10% of the users are too few to teach
the transformer that; their transition counts, read directly, carry it. The server, which may use
the consented users' data centrally, counts their training histories' (item, next item) pairs;
every score then adds

    weight x log(1 + count(last item, j) / smoothing)

for candidate j after the user's last item. It is zero for a pair never seen, so the table stays
sparse, and it shifts no user's row by a constant, so it only reorders. The two constants are
chosen on the consented users' validation items (`tune`).

What it discloses: the table is part of the model every node and every reader of a checkpoint
holds, and it is computed from the consented users alone, who authorised central use of their
data; it is not differentially private with respect to them, as the pretraining is not. The
users who did not consent never enter it (a DP release of their transitions keeps almost none of
the signal: simulations/results/transition_prior.md).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy import sparse

FILE = "transitions.safetensors"
WEIGHTS = (0.25, 0.5, 1.0, 2.0)
SMOOTHINGS = (0.02, 0.1, 0.5)


@dataclass(frozen=True)
class Transitions:
    table: sparse.csr_matrix  # (I+1, I+1) counts; row = the last item, column = the next
    weight: float = 1.0
    smoothing: float = 0.1

    def rows(self, last: np.ndarray) -> np.ndarray:
        """(B, I+1) float32: the term for every item after each row's last item (0: no history)."""
        picked = self.table[np.asarray(last, dtype=np.int64)].toarray()
        return (self.weight * np.log1p(picked / self.smoothing)).astype(np.float32)

    def pairs(self, last: np.ndarray, candidates: np.ndarray) -> np.ndarray:
        """(B, C) float32: the term for each row's candidates (B, C) after its last item (B,)."""
        return np.take_along_axis(self.rows(last), np.asarray(candidates, dtype=np.int64), axis=1)

    def with_constants(self, weight: float, smoothing: float) -> Transitions:
        return Transitions(self.table, float(weight), float(smoothing))

    def save(self, directory: Path) -> None:
        from safetensors.numpy import save_file

        coo = self.table.tocoo()
        save_file({"sources": coo.row.astype(np.int64), "targets": coo.col.astype(np.int64),
                   "counts": coo.data.astype(np.float32), "shape": np.asarray(coo.shape, dtype=np.int64),
                   "constants": np.asarray([self.weight, self.smoothing], dtype=np.float64)},
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
        return cls(table, float(t["constants"][0]), float(t["constants"][1]))


def count_transitions(sequences: list[np.ndarray], num_items: int) -> Transitions:
    """Every (item, next item) pair of the given training sequences, counted."""
    src = np.concatenate([s[:-1] for s in sequences if len(s) > 1] or [np.zeros(0, np.int64)])
    dst = np.concatenate([s[1:] for s in sequences if len(s) > 1] or [np.zeros(0, np.int64)])
    keep = (src > 0) & (dst > 0)
    table = sparse.csr_matrix((np.ones(int(keep.sum()), dtype=np.float32), (src[keep], dst[keep])),
                              shape=(num_items + 1, num_items + 1))  # fmt: skip
    table.sum_duplicates()
    return Transitions(table)


def tune(model, dataset, users: np.ndarray, transitions: Transitions,  # type: ignore[no-untyped-def]
         sample: int = 2000, seed: int = 0) -> tuple[Transitions | None, list[dict]]:  # fmt: skip
    """The (weight, smoothing) whose two-stage full NDCG@10 on `users`' validation items is best,
    or None when none beats the model without the table; every setting tried, as rows."""
    from shared.models.training import evaluate_model

    users = np.asarray(users)
    if len(users) > sample:
        users = np.random.default_rng(seed).choice(users, sample, replace=False)
    previous, rows = model.transitions, []
    best: tuple[float, Transitions | None] = (-1.0, None)
    try:
        for candidate in [None, *(transitions.with_constants(w, s) for w in WEIGHTS for s in SMOOTHINGS)]:
            model.transitions = candidate
            ndcg = float(evaluate_model(model, dataset, "valid", users=users)["ranking"]["full"]["ndcg@10"])
            rows.append({"weight": 0.0 if candidate is None else candidate.weight,
                         "smoothing": None if candidate is None else candidate.smoothing, "valid-full-ndcg@10": ndcg})  # fmt: skip
            if ndcg > best[0]:
                best = (ndcg, candidate)
    finally:
        model.transitions = previous
    return best[1], rows
