"""The preprocessed dataset: per-user time-ordered sequences, item texts, side features, splits.

`build_dataset` turns `RawData` into a `Dataset`:
1. implicit feedback: every rating at or above `rating_threshold` is an interaction;
2. users with fewer than `min_interactions` are dropped (and counted);
3. each user's interactions are put in time order, ties kept in file order;
4. items get contiguous indices 1..I in the order of the item file, 0 is padding;
5. leave-one-out: the last item is the test item, the second-to-last the validation item.

Sequences are stored as one flat array plus offsets (CSR), which keeps ML-1M's million
interactions in a few megabytes and makes slicing a user's history O(1).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from functools import cached_property, lru_cache
from pathlib import Path

import numpy as np
import pandas as pd

from shared.config import DataConfig
from shared.data.catalog import item_texts  # noqa: F401  (re-exported: tests and callers use it here)
from shared.data.public_catalog import ITEM_FIELDS, Catalog, content_fingerprint, item_fields, load_catalog
from shared.data.readers import RawData, read_directory, read_private_files
from shared.data.sources import resolve
from shared.data.tables import Table
from shared.errors import FedrecError

log = logging.getLogger(__name__)

PAD = 0
STAGES = ("valid", "test")
CATALOG_KEY = "catalog"  # the catalog fingerprint in a message's config


@dataclass(frozen=True)
class DatasetStats:
    raw_users: int
    raw_items: int
    raw_interactions: int
    below_threshold: int  # interactions dropped by the rating threshold
    dropped_users: int  # users with fewer than min_interactions
    dropped_interactions: int


@dataclass(frozen=True, eq=False)
class Dataset:
    name: str
    user_ids: np.ndarray  # (U,) original ids as strings
    item_ids: np.ndarray  # (I+1,) original ids; [0] is padding
    item_text: list[str]  # (I+1,) text for the item encoder; [0] == ""
    item_titles: list[str]  # (I+1,)
    item_year: np.ndarray  # (I+1,) int, 0 when unknown
    genre_names: list[str]
    item_genres: np.ndarray  # (I+1, G) uint8 multi-hot
    user_features: dict[str, np.ndarray]  # name -> (U,) int codes, 0 = unknown
    user_feature_vocab: dict[str, list[str]]  # name -> code -> value; [0] == "<unknown>"
    offsets: np.ndarray  # (U+1,) int64: user u's sequence is items[offsets[u]:offsets[u+1]]
    items: np.ndarray  # (N,) int32 item indices, time-ordered within each user
    timestamps: np.ndarray  # (N,) int64
    stats: DatasetStats
    consent: np.ndarray | None = None  # (U,) bool: users.csv's `consent` column, when it has one
    # The item-text embeddings' cache key: a catalog artifact's fingerprint, or "" (a hash of
    # the texts: what a dataset that brings its own items has always used).
    embedding_key: str = ""

    @property
    def num_users(self) -> int:
        return len(self.user_ids)

    @property
    def num_items(self) -> int:
        """Real items, not counting padding; valid indices are 1..num_items."""
        return len(self.item_ids) - 1

    @property
    def num_interactions(self) -> int:
        return len(self.items)

    def sequence(self, user: int) -> np.ndarray:
        return self.items[self.offsets[user] : self.offsets[user + 1]]

    def history(self, user: int, stage: str) -> np.ndarray:
        """What the model may see when predicting `stage`'s item: everything before it."""
        check_stage(stage)
        end = self.offsets[user + 1] - (2 if stage == "valid" else 1)
        return self.items[self.offsets[user] : end]

    def train_sequence(self, user: int) -> np.ndarray:
        """The training part: the sequence without its validation and test items."""
        return self.history(user, "valid")

    @cached_property
    def valid_items(self) -> np.ndarray:
        return self.items[self.offsets[1:] - 2]

    @cached_property
    def test_items(self) -> np.ndarray:
        return self.items[self.offsets[1:] - 1]

    def targets(self, stage: str) -> np.ndarray:
        check_stage(stage)
        return self.valid_items if stage == "valid" else self.test_items

    @cached_property
    def train_mask(self) -> np.ndarray:
        """(N,) True for interactions in the training part of each sequence."""
        mask = np.ones(self.num_interactions, dtype=bool)
        mask[self.offsets[1:] - 1] = False
        mask[self.offsets[1:] - 2] = False
        return mask

    @cached_property
    def user_of(self) -> np.ndarray:
        """(N,) the user index of each interaction."""
        return np.repeat(np.arange(self.num_users), np.diff(self.offsets))


def check_stage(stage: str) -> None:
    if stage not in STAGES:
        raise FedrecError(f"unknown stage '{stage}' (choose one of: {', '.join(STAGES)})")


def _natural_order(ids: pd.Series) -> np.ndarray:
    """Numeric ids in numeric order ('2' before '10'), anything else in string order."""
    numeric = pd.to_numeric(ids, errors="coerce")
    if numeric.notna().all():
        return np.argsort(numeric.to_numpy(), kind="stable")
    return np.argsort(ids.to_numpy().astype(str), kind="stable")


def _region(zip_code: str) -> str:
    """First digit of a US zip code: ten regions. Non-US postal codes form one 'other' region."""
    return zip_code[0] if zip_code[:1].isdigit() else "other"


def _user_features(
    users: pd.DataFrame | None, user_ids: np.ndarray, vocab_of: dict[str, list[str]] | None = None
) -> tuple[dict[str, np.ndarray], dict[str, list[str]]]:
    """Integer codes per user feature. With `vocab_of` (a federation's shared vocabularies) the
    codes are that vocabulary's, every one of its features is present, and values it does not
    know are coded unknown (0), so every node's model has the same embedding tables."""
    features: dict[str, np.ndarray] = {}
    vocab: dict[str, list[str]] = {}
    table = users.set_index("user_id").reindex(pd.Index(user_ids)) if users is not None else pd.DataFrame(index=user_ids)
    if "zip" in table.columns:
        table["region"] = table["zip"].map(lambda z: _region(z) if isinstance(z, str) else None)
    for name in ("age", "gender", "occupation", "region"):
        if vocab_of is not None:
            if name not in vocab_of:
                continue
            values = vocab_of[name][1:]
        elif name not in table.columns:
            continue
        column = (table[name].where(table[name].notna() & (table[name] != ""), None)
                  if name in table.columns else pd.Series([None] * len(table)))  # fmt: skip
        if vocab_of is None:
            values = sorted(set(column.dropna()), key=lambda v: (len(v), v))
        index = {v: k + 1 for k, v in enumerate(values)}
        features[name] = np.array([index.get(v, 0) for v in column], dtype=np.int64)
        vocab[name] = ["<unknown>", *values]
    return features, vocab


def _check_known_items(raw: RawData, catalog: Catalog | Dataset, table: Table | None) -> None:
    """Every interaction's item must be in the federation's catalog (a node's update for an item
    the catalog lacks would land on another item's weights): the first that is not is named with
    its file and line. Checked before any filtering, so no bad row hides in a dropped user."""
    inter = raw.interactions
    unknown = np.flatnonzero(~inter["item_id"].isin(set(catalog.item_ids[1:])).to_numpy())
    if len(unknown):
        row = int(unknown[0])
        place = f"{table.path} line {table.first_line + row}" if table is not None else str(raw.directory)
        count = inter["item_id"].iloc[unknown].nunique()
        raise FedrecError(
            f"{place}: item_id '{inter['item_id'].iat[row]}' is not in the catalog of '{catalog.name}' "
            f"({count} unknown item(s)): a node's data must use the federation's item ids"
        )


def _own_catalog(raw: RawData, inter: pd.DataFrame, config: DataConfig) -> tuple[np.ndarray, dict]:
    """Items with at least one kept interaction, in the item file's order: each interaction's
    item index, and the catalog's fields (ITEM_FIELDS). Any item columns will do (see
    shared.data.catalog): side features the file lacks are left empty."""
    items = raw.items[raw.items["item_id"].isin(set(inter["item_id"])).to_numpy()]
    items = items.reset_index(drop=True).astype(str)
    item_code = pd.Index(items["item_id"]).get_indexer(inter["item_id"]) + 1
    return item_code, item_fields(items, config.text_column_list, f"{raw.directory.name} items")


def build_dataset(
    raw: RawData, config: DataConfig, catalog: Catalog | Dataset | None = None, table: Table | None = None
) -> Dataset:  # fmt: skip
    """`raw` preprocessed; with `catalog` (an edge node's private data) the items, their texts
    and the user-feature vocabularies are the catalog's, so the node's model is the federation's.
    `table` is the interaction file as read, for naming the line of an item the catalog lacks.
    Filtering and the leave-one-out split are the same either way: on a node, over its users."""
    if catalog is not None:
        _check_known_items(raw, catalog, table)
    inter = raw.interactions
    stats_raw = (inter["user_id"].nunique(), inter["item_id"].nunique(), len(inter))
    keep = inter["rating"].isna() | (inter["rating"] >= config.rating_threshold)
    below = int((~keep).sum())
    inter = inter[keep.to_numpy()]

    counts = inter["user_id"].value_counts()
    short = counts[counts < config.min_interactions]
    if len(short):
        log.warning(
            "dropped %d users with fewer than %d interactions (%d interactions)",
            len(short), config.min_interactions, int(short.sum()),
        )  # fmt: skip
        inter = inter[~inter["user_id"].isin(short.index).to_numpy()]
    if inter.empty:
        raise FedrecError(
            f"{raw.directory}: no user has {config.min_interactions} or more interactions "
            f"at rating >= {config.rating_threshold}"
        )

    users_sorted = inter["user_id"].drop_duplicates()
    user_ids = users_sorted.to_numpy()[_natural_order(users_sorted)].astype(str)
    if config.max_users and config.max_users < len(user_ids):
        user_ids = user_ids[: config.max_users]
        inter = inter[inter["user_id"].isin(set(user_ids)).to_numpy()]
    user_code = pd.Index(user_ids).get_indexer(inter["user_id"])

    embedding_key = ""
    if catalog is None:
        item_code, items_part = _own_catalog(raw, inter, config)
        features, vocab = _user_features(raw.users, user_ids)
    else:
        item_code = pd.Index(catalog.item_ids[1:]).get_indexer(inter["item_id"]) + 1
        items_part = {k: getattr(catalog, k) for k in ITEM_FIELDS}
        features, vocab = _user_features(raw.users, user_ids, catalog.user_feature_vocab)
        embedding_key = catalog_fingerprint(catalog) if isinstance(catalog, Catalog) and catalog.path else ""

    timestamps = inter["timestamp"].to_numpy(np.int64)
    order = np.lexsort((np.arange(len(inter)), timestamps, user_code))
    offsets = np.zeros(len(user_ids) + 1, dtype=np.int64)
    np.cumsum(np.bincount(user_code, minlength=len(user_ids)), out=offsets[1:])
    consent = None
    if raw.users is not None and "consent" in raw.users.columns:
        from shared.data.consent import parse_consent

        flags = raw.users.set_index("user_id")["consent"].reindex(pd.Index(user_ids)).fillna("0")
        consent = parse_consent(list(flags.astype(str)), f"{raw.directory} users")
    return Dataset(
        name=catalog.name if catalog is not None else config.dataset,
        embedding_key=embedding_key,
        consent=consent,
        user_ids=user_ids,
        **items_part,
        user_features=features,
        user_feature_vocab=vocab,
        offsets=offsets,
        items=item_code[order].astype(np.int32),
        timestamps=timestamps[order],
        stats=DatasetStats(
            raw_users=int(stats_raw[0]),
            raw_items=int(stats_raw[1]),
            raw_interactions=int(stats_raw[2]),
            below_threshold=below,
            dropped_users=len(short),
            dropped_interactions=int(short.sum()),
        ),
    )


def load_dataset(config: DataConfig) -> Dataset:
    """Resolve, read and preprocess `config.dataset` in one call; on the catalog at
    `config.catalog_path` when there is one (its items, order and vocabularies)."""
    directory = resolve(config.dataset, config.data_path or None, config.cache_path)
    if config.catalog_path:
        catalog = catalog_artifact(config.catalog_path)
        if catalog.name != config.dataset:
            raise FedrecError(f"catalog {config.catalog_path} describes '{catalog.name}', not '{config.dataset}'")
        table, inter, users = read_private_files(directory)
        raw = RawData(inter, pd.DataFrame({"item_id": pd.Series([], dtype=str)}), users, "dataset", directory)
        return build_dataset(raw, config, catalog, table)
    return build_dataset(read_directory(directory), config)


def load_node_dataset(directory: Path, config: DataConfig, catalog: Catalog | Dataset) -> Dataset:
    """An edge node's private data (its interactions and users, usually `fedrec data
    export-partition`'s csv) indexed against the federation's catalog. Only the interaction and
    user files are read: items are the catalog's, an item it lacks is an error naming the line."""
    table, inter, users = read_private_files(directory)
    raw = RawData(inter, pd.DataFrame({"item_id": pd.Series([], dtype=str)}), users, "node", directory)
    return build_dataset(raw, config, catalog, table)


def catalog_of(dataset: Dataset) -> Catalog:
    """The catalog a simulation derives from its one dataset (the items someone interacted with,
    the vocabularies of its users): what both sides reach items through when there is no
    catalog artifact."""
    return Catalog(name=dataset.name, user_feature_vocab=dataset.user_feature_vocab,
                   **{k: getattr(dataset, k) for k in ITEM_FIELDS})  # fmt: skip


@lru_cache(maxsize=2)  # one per process and path: a simulation's clients share it
def catalog_artifact(path: str) -> Catalog:
    """The catalog directory at `path` (`fedrec catalog build`), loaded and checked once."""
    return load_catalog(path)


def empty_dataset(catalog: Catalog) -> Dataset:
    """A dataset with the catalog's items and vocabularies and no user: what the server, which
    holds no interaction, builds the model from."""
    features, vocab = _user_features(None, np.array([], dtype=str), catalog.user_feature_vocab)
    empty = np.zeros(0, dtype=np.int64)
    return Dataset(
        name=catalog.name, user_ids=np.array([], dtype=str), **{k: getattr(catalog, k) for k in ITEM_FIELDS},
        user_features=features, user_feature_vocab=vocab, offsets=np.zeros(1, dtype=np.int64),
        items=empty.astype(np.int32), timestamps=empty, stats=DatasetStats(0, 0, 0, 0, 0, 0),
        embedding_key=catalog_fingerprint(catalog) if catalog.path else "",
    )  # fmt: skip


@lru_cache(maxsize=8)  # per object: every message of a simulation checks it
def catalog_fingerprint(catalog: Catalog | Dataset) -> str:
    """Identifies the item catalog (ids, order, texts) and user-feature vocabularies: two parties
    whose fingerprints match index items and features alike."""
    return content_fingerprint(catalog.item_ids, catalog.item_text, catalog.user_feature_vocab)


def check_catalog_fingerprint(dataset: Dataset, expected: str) -> None:
    """Refuse to train or evaluate on another catalog than the server's."""
    mine = catalog_fingerprint(dataset)
    if expected and mine != expected:
        raise FedrecError(
            f"this node's item catalog ({mine}) differs from the server's ({expected}): both must "
            "use the same catalog (`fedrec catalog build`), or the same dataset and preprocessing settings"
        )
