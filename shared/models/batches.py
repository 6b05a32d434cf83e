"""From a Dataset to the per-sample tensors the model reads.

One training example is one user's training sequence (without its validation and test items),
left-padded to `max_len`: position t reads items[..t] and is trained to predict items[t+1].
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from shared.config import TrainConfig
from shared.data.dataset import Dataset
from shared.models.recommender import USER_FEATURES, hard_negative_pool


def left_pad(sequences: list[np.ndarray], length: int) -> np.ndarray:
    """The last `length` items of each sequence, right-aligned, zeros in front."""
    out = np.zeros((len(sequences), length), dtype=np.int64)
    for row, seq in enumerate(sequences):
        tail = seq[-length:]
        if len(tail):
            out[row, length - len(tail) :] = tail
    return out


def feature_names(dataset: Dataset) -> list[str]:
    return [f for f in USER_FEATURES if f in dataset.user_features]


def feature_matrix(dataset: Dataset, users: np.ndarray) -> np.ndarray:
    """(U, F) int codes, F = the side features this dataset has, in USER_FEATURES order."""
    names = feature_names(dataset)
    if not names:
        return np.zeros((len(users), 0), dtype=np.int64)
    return np.stack([dataset.user_features[f][users] for f in names], axis=1).astype(np.int64)


@dataclass(frozen=True)
class Sequences:
    """Training inputs and next-item targets for a set of users, left-padded."""

    users: np.ndarray  # (U,)
    history: np.ndarray  # (U, L)
    targets: np.ndarray  # (U, L), 0 where there is nothing to predict
    features: np.ndarray  # (U, F)

    def __len__(self) -> int:
        return len(self.users)


def training_sequences(dataset: Dataset, users: np.ndarray, max_len: int) -> Sequences:
    """Users whose training part has fewer than two items have nothing to learn and are left out."""
    seqs = [dataset.train_sequence(int(u)) for u in users]
    keep = np.array([len(s) >= 2 for s in seqs], dtype=bool)
    users = np.asarray(users)[keep]
    seqs = [s for s, k in zip(seqs, keep) if k]
    return Sequences(
        users=users,
        history=left_pad([s[:-1] for s in seqs], max_len),
        targets=left_pad([s[1:] for s in seqs], max_len),
        features=feature_matrix(dataset, users),
    )


def interaction_examples(dataset: Dataset, users: np.ndarray, max_len: int) -> Sequences:
    """One example per training interaction: the items before it, left-padded, with the
    interaction as the only target. Record-level DP protects one example, so for it to protect
    one interaction an example must hold only one as its target."""
    rows, histories, targets = [], [], []
    for u in users:
        seq = dataset.train_sequence(int(u))
        for t in range(1, len(seq)):
            rows.append(int(u))
            histories.append(seq[:t])
            targets.append(seq[t])
    users_arr = np.asarray(rows, dtype=np.int64)
    target_matrix = np.zeros((len(rows), max_len), dtype=np.int64)
    target_matrix[:, -1] = targets
    return Sequences(
        users=users_arr,
        history=left_pad(histories, max_len),
        targets=target_matrix,
        features=feature_matrix(dataset, users_arr),
    )


def eval_histories(dataset: Dataset, users: np.ndarray, stage: str, max_len: int) -> np.ndarray:
    return left_pad([dataset.history(int(u), stage) for u in users], max_len)


def base_batch(
    data: Sequences, rows: np.ndarray, num_items: int, cfg: TrainConfig, rng: np.random.Generator
) -> dict[str, torch.Tensor]:
    """One training batch. The ranker's hard negatives need the model's states, so the batch
    carries only the draws that pick them (see Recommender.ranking_candidates)."""
    history, targets = data.history[rows], data.targets[rows]
    b, length = targets.shape
    negatives = rng.integers(1, num_items + 1, size=(b, cfg.num_negatives))
    # Ranking queries: the last position always, then random other positions with a target.
    r = cfg.rank_positions
    rank_pos = np.zeros((b, r), dtype=np.int64)
    rank_valid = np.zeros((b, r), dtype=bool)
    for i in range(b):
        valid = np.flatnonzero(targets[i] > 0)
        others = rng.permutation(valid[:-1])[: r - 1]
        chosen = np.concatenate([valid[-1:], others])
        rank_pos[i, : len(chosen)] = chosen
        rank_valid[i, : len(chosen)] = True
    pick = rng.random((b, r, hard_negative_pool(num_items))).argsort(-1)[..., : cfg.rank_hard_negatives]
    uniform = rng.integers(1, num_items + 1, size=(b, r, cfg.rank_random_negatives))
    return {
        "history": torch.from_numpy(history),
        "targets": torch.from_numpy(targets),
        "negatives": torch.from_numpy(negatives),
        "features": torch.from_numpy(data.features[rows]),
        "rank_pos": torch.from_numpy(rank_pos),
        "rank_valid": torch.from_numpy(rank_valid),
        "rank_pick": torch.from_numpy(pick),
        "rank_random": torch.from_numpy(uniform),
    }
