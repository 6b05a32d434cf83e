"""One node's private data as a directory of the generic csv format (`fedrec data export-partition`).

What an operator (or a test) lays out on an edge node: the partition's users' kept interactions
and their side features, no other user's rows and no item file (items are the public catalog's,
which travels separately: `fedrec catalog build`). Read back with the federation's catalog
(`load_node_dataset`), it gives the node the very sequences it holds in simulation. Only the
region of a zip code is written: it is all the model uses.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from shared.atomic import atomic_path
from shared.data.dataset import Dataset
from shared.errors import FedrecError


def _users_frame(dataset: Dataset, users: np.ndarray) -> pd.DataFrame:
    frame = pd.DataFrame({"user_id": dataset.user_ids[users]})
    for name, codes in dataset.user_features.items():
        column = "zip" if name == "region" else name  # the reader derives the region from 'zip'
        vocab = np.array(dataset.user_feature_vocab[name], dtype=object)
        frame[column] = np.where(codes[users] > 0, vocab[codes[users]], "")
    return frame


def export_users(dataset: Dataset, users: np.ndarray, out: Path) -> dict[str, int]:
    """Write `users`' data to `out` (interactions.csv, users.csv), all or nothing."""
    if out.exists() and any(out.iterdir()):
        raise FedrecError(f"{out}: already exists and is not empty (choose another --out or remove it)")
    rows = np.concatenate([np.arange(dataset.offsets[u], dataset.offsets[u + 1]) for u in users])
    items = dataset.items[rows]
    interactions = pd.DataFrame({"user_id": dataset.user_ids[dataset.user_of[rows]],
                                 "item_id": dataset.item_ids[items], "timestamp": dataset.timestamps[rows]})  # fmt: skip
    with atomic_path(out) as staged:
        staged.mkdir()
        interactions.to_csv(staged / "interactions.csv", index=False)
        _users_frame(dataset, users).to_csv(staged / "users.csv", index=False)
    return {"users": len(users), "interactions": len(rows), "items": len(np.unique(items))}
