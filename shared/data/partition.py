"""Grouping users into federated clients.

- `user`:       one client per user (cross-device: every MovieLens user is a phone).
- `region`:     first digit of the zip code, 10 regional edge servers on ML-1M.
- `occupation`: one client per occupation.
- `dirichlet`:  K clients, non-IID over each user's dominant genre (Dirichlet(alpha) label skew);
                on a catalog without genres, over each user's dominant popularity tier.
- `iid`:        K clients of (nearly) equal size after a seeded shuffle.

A user's whole history goes to exactly one client: a client is a place where data was collected,
and a user's interactions are collected in one place. Region, occupation, dirichlet and iid use
flwr-datasets' partitioners over a one-row-per-user table; `user` is the identity and needs none.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from shared.config import PartitionConfig
from shared.data.dataset import Dataset
from shared.errors import FedrecError


@dataclass(frozen=True)
class Partition:
    scheme: str
    assignment: np.ndarray  # (U,) partition id of each user
    labels: list[str]  # (K,) what each partition is: a region digit, an occupation, ...

    @property
    def num_partitions(self) -> int:
        return len(self.labels)

    def users(self, partition_id: int) -> np.ndarray:
        if not 0 <= partition_id < self.num_partitions:
            raise FedrecError(
                f"partition-id {partition_id} is out of range: partitioning '{self.scheme}' "
                f"has {self.num_partitions} partitions (0..{self.num_partitions - 1})"
            )
        return np.flatnonzero(self.assignment == partition_id)

    def stats(self, dataset: Dataset) -> dict[str, Any]:
        users = np.bincount(self.assignment, minlength=self.num_partitions)
        inter = np.bincount(
            self.assignment, weights=np.diff(dataset.offsets), minlength=self.num_partitions
        ).astype(np.int64)

        def spread(x: np.ndarray) -> dict[str, float]:
            return {"min": int(x.min()), "median": float(np.median(x)), "max": int(x.max())}

        return {
            "scheme": self.scheme,
            "num_partitions": self.num_partitions,
            "users": spread(users),
            "interactions": spread(inter),
            "partitions": [
                {"id": k, "label": lab, "users": int(u), "interactions": int(i)}
                for k, (lab, u, i) in enumerate(zip(self.labels, users, inter))
            ],
        }


POPULARITY_TIERS = 10


def dominant_genre(dataset: Dataset) -> np.ndarray:
    """(U,) index of the genre a user watched most in training; ties go to the first genre."""
    if not dataset.genre_names:
        raise FedrecError(f"{dataset.name} has no item genres")
    train = dataset.train_mask
    counts = np.zeros((dataset.num_users, len(dataset.genre_names)), dtype=np.int64)
    np.add.at(counts, dataset.user_of[train], dataset.item_genres[dataset.items[train]])
    return counts.argmax(axis=1)


def popularity_tier(dataset: Dataset, tiers: int = POPULARITY_TIERS) -> np.ndarray:
    """(U,) the popularity tier a user's training items mostly fall in: items are ranked by
    training interactions and cut into `tiers` groups holding equal shares of them, tier 0 the
    few blockbusters, the last the long tail. Any catalog has it, so `dirichlet` needs nothing
    but interactions; it skews clients by mainstream versus niche taste, as genres do by taste."""
    train = dataset.train_mask
    items = dataset.items[train]
    counts = np.bincount(items, minlength=dataset.num_items + 1)[1:]
    order = np.argsort(-counts, kind="stable")
    # The share of training interactions on items more popular than each one.
    before = (np.cumsum(counts[order]) - counts[order]) / max(int(counts.sum()), 1)
    tier_of = np.zeros(dataset.num_items + 1, dtype=np.int64)
    tier_of[order + 1] = np.minimum(before * tiers, tiers - 1).astype(np.int64)
    per_user = np.zeros((dataset.num_users, tiers), dtype=np.int64)
    np.add.at(per_user, (dataset.user_of[train], tier_of[items]), 1)
    return per_user.argmax(axis=1)


def dirichlet_labels(dataset: Dataset) -> np.ndarray:
    """The label `dirichlet` skews clients over: the dominant genre, or, on a catalog without
    genres, the dominant popularity tier."""
    return dominant_genre(dataset) if dataset.genre_names else popularity_tier(dataset)


def _feature(dataset: Dataset, name: str, scheme: str) -> np.ndarray:
    if name not in dataset.user_features:
        need = "zip codes" if name == "region" else f"{name}s"
        raise FedrecError(f"partitioning '{scheme}' needs users' {need}; {dataset.name} has none")
    return dataset.user_features[name]


def _flwr_partition(table: dict[str, np.ndarray], partitioner: object) -> np.ndarray:
    """Run a flwr-datasets partitioner over a per-user table; returns (U,) partition ids."""
    import datasets  # see partition_users

    partitioner.dataset = datasets.Dataset.from_dict(table)  # type: ignore[attr-defined]
    assignment = np.full(len(table["user"]), -1, dtype=np.int64)
    for pid in range(partitioner.num_partitions):  # type: ignore[attr-defined]
        assignment[partitioner.load_partition(pid)["user"]] = pid  # type: ignore[attr-defined]
    return assignment


def partition_users(dataset: Dataset, config: PartitionConfig) -> Partition:
    # Imported here, not above: flwr-datasets and datasets take two seconds to import (plotting
    # included), and a deployed node, which starts a process per message, never partitions.
    from flwr_datasets.partitioner import DirichletPartitioner, IidPartitioner, NaturalIdPartitioner

    scheme, k = config.partitioning, config.num_partitions
    users = np.arange(dataset.num_users)
    if scheme in ("dirichlet", "iid") and k > dataset.num_users:
        raise FedrecError(
            f"num-partitions {k} is more than the {dataset.num_users} users in {dataset.name}"
        )
    if scheme == "user":
        assignment, labels = users.copy(), [str(u) for u in dataset.user_ids]
    elif scheme in ("region", "occupation"):
        codes = _feature(dataset, scheme, scheme)
        part = NaturalIdPartitioner(partition_by=scheme)
        assignment = _flwr_partition({"user": users, scheme: codes}, part)
        vocab = dataset.user_feature_vocab[scheme]
        labels = [vocab[c] for c in sorted(set(codes.tolist()))]
    elif scheme == "iid":
        # IidPartitioner shards contiguously, so the seeded shuffle is what makes it IID.
        shuffled = np.random.default_rng(config.seed).permutation(users)
        assignment = _flwr_partition({"user": shuffled}, IidPartitioner(num_partitions=k))
        labels = [f"iid-{i}" for i in range(k)]
    else:
        part = DirichletPartitioner(
            num_partitions=k, partition_by="genre", alpha=config.dirichlet_alpha,
            min_partition_size=1, self_balancing=False, shuffle=False, seed=config.seed,
        )  # fmt: skip
        try:
            assignment = _flwr_partition({"user": users, "genre": dirichlet_labels(dataset)}, part)
        except ValueError as err:
            raise FedrecError(f"partitioning 'dirichlet' failed: {err}") from None
        labels = [f"dirichlet-{i}" for i in range(k)]
    if (assignment < 0).any():
        raise AssertionError("a user was left out of every partition")
    if k and scheme in ("user", "region", "occupation") and k != len(labels):
        raise FedrecError(
            f"partitioning '{scheme}' gives {len(labels)} partitions on {dataset.name}, "
            f"but num-partitions is {k} (use 0 to take the data's count)"
        )
    return Partition(scheme=scheme, assignment=assignment, labels=labels)
