"""ItemPop: recommend the items most interacted with in training, the same list for everyone.

The floor every learned model must clear, and the literature's ItemPop row (NCF paper: sampled-100
HR@10 about 0.45 on ML-1M). Federated, it needs no model at all: each client's normalised item
frequencies, averaged with FedAvg weighted by interaction counts, are exactly the global ones.
"""

from __future__ import annotations

import numpy as np

from shared.data.dataset import STAGES, Dataset, check_stage


class Popularity:
    """Scores an item by how often it occurs in the interactions visible before `stage`."""

    def __init__(self, frequencies: dict[str, np.ndarray]) -> None:
        """frequencies: stage -> (I+1,) counts or frequencies; index 0 (padding) is ignored."""
        self._scores = {}
        for stage in STAGES:
            scores = np.asarray(frequencies[stage], dtype=np.float64).copy()
            scores[0] = -np.inf  # padding is never recommended
            self._scores[stage] = scores

    @staticmethod
    def count(dataset: Dataset, users: np.ndarray | None = None) -> dict[str, np.ndarray]:
        """Per-stage item counts over `users` (default all): training interactions for the
        validation item, plus the validation interactions for the test item, as any model has."""
        n = dataset.num_items + 1
        train = dataset.train_mask
        valid = dataset.valid_items
        if users is not None:
            train = train & np.isin(dataset.user_of, users)
            valid = valid[users]
        train_counts = np.bincount(dataset.items[train], minlength=n).astype(np.float64)
        return {"valid": train_counts, "test": train_counts + np.bincount(valid, minlength=n)}

    @classmethod
    def fit(cls, dataset: Dataset) -> Popularity:
        return cls(cls.count(dataset))

    def score_all(self, users: np.ndarray, stage: str) -> np.ndarray:
        check_stage(stage)
        return np.broadcast_to(self._scores[stage], (len(users), len(self._scores[stage])))
