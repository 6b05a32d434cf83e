"""Membership inference against a trained model: does its score give away what it trained on?

A score-threshold attack (Yeom et al., CSF 2018: a member's loss is lower, so its score higher),
per interaction, on the leave-one-out split. For each user:
- member: the last training interaction, scored as the model scores it in training (the items
  before it as history);
- non-member: the test interaction, never trained on, scored the same way.
The attack's AUC is the chance that a random member outscores a random non-member: 0.5 means
the score leaks nothing about membership. The 95% interval is a percentile bootstrap over users.
Both targets are "the next item given the history", so the model's general skill at next-item
prediction is common to both; what separates them is having trained on one.
"""

from __future__ import annotations

import numpy as np
import torch
from sklearn.metrics import roc_auc_score

from shared.data.dataset import Dataset
from shared.models.batches import feature_matrix, left_pad
from shared.models.recommender import Recommender
from shared.models.scoring import ModelScorer


def _scores(scorer: ModelScorer, dataset: Dataset, users: np.ndarray, cut: int, batch: int = 512) -> np.ndarray:
    """The retrieval logit of item sequence[n - cut] given the items before it, per user."""
    out = []
    for i in range(0, len(users), batch):
        chunk = users[i : i + batch]
        seqs = [dataset.sequence(int(u)) for u in chunk]
        history = left_pad([s[: len(s) - cut] for s in seqs], scorer.max_len)
        targets = torch.as_tensor(np.array([s[len(s) - cut] for s in seqs]))
        states = scorer.encode(history, feature_matrix(dataset, chunk))
        with torch.no_grad():
            out.append(((states * scorer.items[targets]).sum(-1) * scorer.model.scale).double().cpu().numpy())
    return np.concatenate(out)


def membership_audit(model: Recommender, dataset: Dataset, max_users: int = 0, bootstraps: int = 200,
                     seed: int = 0) -> dict[str, float | int]:  # fmt: skip
    """AUC of the attack with its bootstrap 95% interval, over `max_users` users (0: all)."""
    rng = np.random.default_rng(seed)
    users = np.arange(dataset.num_users)
    users = users[np.diff(dataset.offsets) >= 4]  # a training item with a history before it
    if max_users and len(users) > max_users:
        users = np.sort(rng.choice(users, max_users, replace=False))
    scorer = ModelScorer(model, dataset)
    members, others = _scores(scorer, dataset, users, 3), _scores(scorer, dataset, users, 1)
    labels = np.r_[np.ones(len(users)), np.zeros(len(users))]
    auc = float(roc_auc_score(labels, np.r_[members, others]))
    boot = []
    for _ in range(bootstraps):
        pick = rng.integers(0, len(users), len(users))
        boot.append(roc_auc_score(labels, np.r_[members[pick], others[pick]]))
    low, high = np.percentile(boot, [2.5, 97.5])
    return {"auc": auc, "ci_low": float(low), "ci_high": float(high), "users": int(len(users)), "bootstraps": bootstraps}
