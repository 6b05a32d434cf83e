"""The public catalog: what every party of a federation shares, and nothing about any user.

A catalog is the item ids, their texts, titles, years and genres, and the user-feature
vocabularies. `fedrec catalog build` makes one from item metadata alone (movies.dat, u.item,
*.item or items.csv) and a fixed user-feature schema (shared/data/user_schema.py); it holds no
user id and no interaction. The server builds the model from it and nothing else; a node reads
its own interactions against it. On disk (a directory):

    catalog.json   name, fingerprint, genres, user-feature vocabularies, where it came from
    items.csv      item_id, title, year, genres, text: one row per item, in catalog order

The fingerprint (shared.data.dataset.catalog_fingerprint: item ids, texts, vocabularies) names
the content: the server sends it with every message, nodes compare, and the item-text embeddings
are cached under it.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pandas as pd

from shared.atomic import atomic_path
from shared.data.catalog import item_genres, item_texts, item_years, text_columns
from shared.data.readers import read_item_file
from shared.data.sources import check_dataset_name, resolve
from shared.data.tables import read_table
from shared.data.user_schema import SCHEMA_FILE, public_vocabularies
from shared.errors import FedrecError

FORMAT = "fedrec-catalog/1"
MANIFEST, ITEMS = "catalog.json", "items.csv"
ITEM_FIELDS = ("item_ids", "item_text", "item_titles", "item_year", "genre_names", "item_genres")


@dataclass(frozen=True, eq=False)
class Catalog:
    """The item side and the user-feature vocabularies; arrays indexed like a Dataset's (row 0
    is padding), so a Dataset built on it shares them as they are."""

    name: str  # the dataset it describes: movielens-1m, movielens-100k, csv
    item_ids: np.ndarray  # (I+1,) original ids; [0] is padding
    item_text: list[str]  # (I+1,) [0] == ""
    item_titles: list[str]  # (I+1,)
    item_year: np.ndarray  # (I+1,) int, 0 when unknown
    genre_names: list[str]
    item_genres: np.ndarray  # (I+1, G) uint8 multi-hot
    user_feature_vocab: dict[str, list[str]]  # name -> code -> value; [0] == "<unknown>"
    path: str = ""  # the directory it was loaded from; "" for one derived from a dataset

    @property
    def num_items(self) -> int:
        return len(self.item_ids) - 1

    @property
    def fingerprint(self) -> str:
        return content_fingerprint(self.item_ids, self.item_text, self.user_feature_vocab)


def content_fingerprint(item_ids: np.ndarray, item_text: list[str], vocab: dict[str, list[str]]) -> str:
    """16 hex digits over the item ids (and their order), texts and user-feature vocabularies:
    two parties whose fingerprints match index items and features alike."""
    digest = hashlib.sha256()
    for part in (list(item_ids[1:]), item_text, vocab):
        digest.update(json.dumps(part, sort_keys=True, default=str).encode())
    return digest.hexdigest()[:16]


def item_fields(items: pd.DataFrame, requested_text: list[str], where: str) -> dict:
    """An item table (any columns but `item_id` optional; see shared.data.catalog) -> the
    catalog's item fields (ITEM_FIELDS), in the table's order."""
    items = items.reset_index(drop=True).astype(str)
    texts = item_texts(items, text_columns(items, requested_text, where))
    genre_names, multi_hot = item_genres(items)
    titles = items["title"] if "title" in items.columns else items["item_id"]
    return {
        "item_ids": np.array(["<pad>", *items["item_id"]], dtype=object), "item_text": ["", *texts],
        "item_titles": ["", *titles], "item_year": item_years(items), "genre_names": genre_names,
        "item_genres": multi_hot,
    }  # fmt: skip


def build_catalog(
    dataset: str, path: str | Path | None, cache_dir: Path | None, text_cols: list[str], schema: Path | None
) -> tuple[Catalog, str]:  # fmt: skip
    """`dataset`'s catalog from its item file alone, every item in it, in file order; the
    user-feature vocabularies from the public schema. Returns it and the item file's name."""
    check_dataset_name(dataset)
    directory = resolve(dataset, path or None, cache_dir)
    _, table, items = read_item_file(directory)
    if schema is None and dataset == "csv" and (directory / SCHEMA_FILE).is_file():
        schema = directory / SCHEMA_FILE
    fields = item_fields(items, text_cols, f"{table.path.name}")
    return Catalog(name=dataset, user_feature_vocab=public_vocabularies(dataset, schema), **fields), table.path.name


def save_catalog(catalog: Catalog, out: Path, source: str, text_cols: list[str]) -> None:
    """Write `catalog` to a new directory `out`, all or nothing."""
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise FedrecError(f"{out}: already exists and is not empty (choose another --out or remove it)")
    genres = np.array(catalog.genre_names, dtype=object)
    frame = pd.DataFrame({
        "item_id": catalog.item_ids[1:], "title": catalog.item_titles[1:],
        "year": [str(y) if y else "" for y in catalog.item_year[1:]],
        "genres": ["|".join(genres[row.astype(bool)]) for row in catalog.item_genres[1:]],
        "text": catalog.item_text[1:],
    })  # fmt: skip
    manifest = {
        "format": FORMAT, "dataset": catalog.name, "fingerprint": catalog.fingerprint,
        "num_items": catalog.num_items, "genres": catalog.genre_names,
        "user_features": {k: v[1:] for k, v in catalog.user_feature_vocab.items()},
        "built_from": source, "text_columns": text_cols,
        "holds": "item metadata and the public user-feature schema: no user id, no interaction",
    }  # fmt: skip
    with atomic_path(out) as staged:
        staged.mkdir()
        frame.to_csv(staged / ITEMS, index=False)
        (staged / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")


def load_catalog(directory: str | Path) -> Catalog:
    """A catalog directory written by `fedrec catalog build`, checked against its fingerprint."""
    directory = Path(directory).expanduser()
    manifest_path = directory / MANIFEST
    if not manifest_path.is_file():
        raise FedrecError(f"catalog {directory}: no {MANIFEST} (make one with `fedrec catalog build`)")
    try:
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
        if manifest.get("format") != FORMAT:
            raise ValueError(f"format {manifest.get('format')!r}, expected {FORMAT!r}")
        name, expected = str(manifest["dataset"]), str(manifest["fingerprint"])
        genre_names = [str(g) for g in manifest["genres"]]
        vocab = {str(k): ["<unknown>", *map(str, v)] for k, v in manifest["user_features"].items()}
    except (OSError, UnicodeDecodeError, ValueError, KeyError, TypeError, AttributeError) as err:
        raise FedrecError(f"{manifest_path}: not a fedrec catalog ({err})") from None
    table = read_table(directory / ITEMS, required=("item_id", "title", "year", "genres", "text"))
    frame = table.frame
    index = {g: k for k, g in enumerate(genre_names)}
    multi_hot = np.zeros((len(frame) + 1, len(genre_names)), dtype=np.uint8)
    for row, cell in enumerate(frame["genres"], start=1):
        names = [g for g in cell.split("|") if g]
        unknown = [g for g in names if g not in index]
        if unknown:
            raise FedrecError(f"{table.where(row - 1, 'genres')}: genre '{unknown[0]}' is not in {MANIFEST}")
        multi_hot[row, [index[g] for g in names]] = 1
    catalog = Catalog(
        name=name, item_ids=np.array(["<pad>", *frame["item_id"]], dtype=object),
        item_text=["", *frame["text"]], item_titles=["", *frame["title"]], item_year=item_years(frame),
        genre_names=genre_names, item_genres=multi_hot, user_feature_vocab=vocab,
    )  # fmt: skip
    if catalog.fingerprint != expected:
        raise FedrecError(f"catalog {directory}: its content ({catalog.fingerprint}) does not match its fingerprint "
                          f"({expected}): it was changed after `fedrec catalog build`")  # fmt: skip
    return replace(catalog, path=str(directory.resolve()))
