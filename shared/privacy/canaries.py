"""Canary users for the one-run privacy audit (shared/privacy/one_run.py): made, planted, scored.

A canary is a made-up user: a sequence of items drawn uniformly from the catalog, with unknown
side features, so no real user looks like one and only training on it can teach a model its
item-to-item steps. `make_canaries` draws m of them and a fair membership coin for each from the
audit seed alone, so the auditor regenerates exactly what the nodes trained on. In a simulation,
slot k joins the training examples (never the evaluation users) of partition k mod K: canary k
if its coin says so, else decoy k, another random user that is never scored. Flipping one coin
then swaps one example for another, the replace-one adjacency the clients' epsilon is accounted
under, and no silo's example count (public: FedAvg's weight) depends on the coins. Under
user-level DP inside a silo (every partitioning but `user`) a canary is one example, one privacy
unit, so the audit bounds the epsilon each client reports.

Scoring: a canary's mean log-probability, over the full catalog, of each of its items given the
ones before it, under the model's retrieval scores. A model that trained on a canary predicts
its steps better than those of canaries it never saw.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from shared.atomic import write_json
from shared.errors import FedrecError
from shared.models.batches import Sequences, left_pad
from shared.models.recommender import Recommender

CANARY_LENGTH = 25  # items per canary: 24 steps to memorise, and shorter than any max-len in use
FILE = "canaries.json"  # in the run directory: what the auditor needs to regenerate them
NOT_A_USER = -1  # the `users` entry of a canary's training example


@dataclass(frozen=True)
class Canaries:
    sequences: np.ndarray  # (m, length) item indices in 1..num_items
    members: np.ndarray  # (m,) bool: trained on
    decoys: np.ndarray  # (m, length): trained on in place of the canaries that are not

    def __len__(self) -> int:
        return len(self.members)

    def for_partition(self, partition_id: int, num_partitions: int) -> np.ndarray:
        """What partition `partition_id` of `num_partitions` trains on: for each of its slots
        k (k mod num_partitions == partition_id), canary k if it is a member, else decoy k."""
        slots = np.arange(len(self)) % num_partitions == partition_id
        return np.where(self.members[:, None], self.sequences, self.decoys)[slots]


def make_canaries(count: int, num_items: int, seed: int, length: int = CANARY_LENGTH) -> Canaries:
    """`count` canaries and decoys of `length` distinct items each, and the canaries' coins,
    from `seed` alone. Each comes from its own stream, so the coins are independent of the
    sequences and of training."""
    if count < 0 or num_items < length:
        raise FedrecError(f"cannot draw {count} canaries of {length} distinct items from {num_items} items")
    members = np.random.default_rng([seed, 1]).random(count) < 0.5
    return Canaries(sequences=_random_users(count, num_items, length, [seed, 0]), members=members,
                    decoys=_random_users(count, num_items, length, [seed, 2]))  # fmt: skip


def _random_users(count: int, num_items: int, length: int, seed: list[int]) -> np.ndarray:
    rng = np.random.default_rng(seed)
    rows = [rng.choice(num_items, length, replace=False) + 1 for _ in range(count)]
    return np.array(rows, dtype=np.int64).reshape(count, length)


def check_partitioning(partitioning: str) -> None:
    """A per-user client trains on one user with record-level DP: a canary user there would be
    many privacy units and double the client's data, so it would audit nothing reported."""
    if partitioning == "user":
        raise FedrecError("audit-canaries needs a silo partitioning (region, occupation, dirichlet, iid), "
                          "where one user's history is one privacy unit; got partitioning 'user'")  # fmt: skip


def canary_examples(sequences: np.ndarray, max_len: int, num_features: int) -> Sequences:
    """Training examples for canary users, shaped like `training_sequences`' (every item is
    training: a canary has no validation or test item), their side features unknown (0)."""
    rows = list(np.asarray(sequences))
    return Sequences(
        users=np.full(len(rows), NOT_A_USER, dtype=np.int64),
        history=left_pad([s[:-1] for s in rows], max_len),
        targets=left_pad([s[1:] for s in rows], max_len),
        features=np.zeros((len(rows), num_features), dtype=np.int64),
    )


def joined(a: Sequences, b: Sequences) -> Sequences:
    """`a`'s examples, then `b`'s."""
    return Sequences(users=np.concatenate([a.users, b.users]), history=np.concatenate([a.history, b.history]),
                     targets=np.concatenate([a.targets, b.targets]),
                     features=np.concatenate([a.features, b.features]))  # fmt: skip


@torch.no_grad()
def canary_scores(model: Recommender, sequences: np.ndarray, batch: int = 256) -> np.ndarray:
    """(m,) each canary's mean full-catalog log-softmax of its next item given its prefix:
    higher, more likely trained on."""
    model.eval()
    max_len = int(model.config["model"]["max_len"])
    num_features = len(model.config["feature_sizes"])
    catalog = model.catalog_vectors()
    bias = torch.as_tensor(model.bias(torch.arange(catalog.shape[0])))  # the items' prior, 0 without one
    out = []
    for i in range(0, len(sequences), batch):
        ex = canary_examples(sequences[i : i + batch], max_len, num_features)
        states, _ = model.encode_history(torch.from_numpy(ex.history), torch.from_numpy(ex.features))
        logits = (states @ catalog.T) * model.scale + bias  # (B, L, I+1): the retrieval scores
        logits[..., 0] = float("-inf")  # padding is never a next item
        targets = torch.from_numpy(ex.targets)
        logp = torch.log_softmax(logits.double(), dim=-1).gather(-1, targets[..., None])[..., 0]
        valid = targets > 0
        out.append((torch.where(valid, logp, 0.0).sum(1) / valid.sum(1)).numpy())
    return np.concatenate(out) if out else np.zeros(0)


def record_canaries(run_dir: Path, count: int, seed: int, num_items: int) -> None:
    """What the auditor needs to regenerate the run's canaries, in the run directory."""
    write_json(run_dir / FILE, {"canaries": count, "seed": seed, "length": CANARY_LENGTH, "num_items": num_items})


def recorded_canaries(run_dir: Path, num_items: int) -> Canaries:
    """The canaries a run recorded with `record_canaries`, regenerated; its model's catalog has
    `num_items` items."""
    path = run_dir / FILE
    if not path.exists():
        raise FedrecError(f"{run_dir}: no {FILE}; was the run made with audit-canaries > 0?")
    try:
        spec = json.loads(path.read_text())
        count, seed, length, items = (int(spec[k]) for k in ("canaries", "seed", "length", "num_items"))
    except (ValueError, KeyError, TypeError):
        raise FedrecError(f"{path}: malformed") from None
    if items != num_items:
        raise FedrecError(f"{path}: canaries drawn from {items} items, but the model's catalog has {num_items}")
    return make_canaries(count, items, seed, length)
