"""Readers for the three on-disk formats, all producing the same `RawData`.

- the official GroupLens files (`u.data`/`u.item`/`u.user` for 100k;
  `ratings.dat`/`movies.dat`/`users.dat` for 1m),
- RecBole's atomic files (`*.inter`, `*.item`, `*.user`),
- the generic CSV format (`interactions.csv`, `items.csv`, optional `users.csv`).

The format is recognised from the file names in the directory, so a user can point `--path` at
any of them. Every reader returns strings for ids, integers for timestamps and a normalised set of
columns; preprocessing never needs to know where the data came from.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from shared.data.tables import Table, numeric_column, read_table, unique_column
from shared.errors import FedrecError

# u.item's 19 genre flags, in file order (from the ML-100k README and u.genre).
ML100K_GENRES = (
    "unknown", "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime",
    "Documentary", "Drama", "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery", "Romance",
    "Sci-Fi", "Thriller", "War", "Western",
)  # fmt: skip
USER_FEATURES = ("age", "gender", "occupation", "zip")
_TITLE_YEAR = re.compile(r"^(.*?)\s*\((\d{4})\)\s*$")


@dataclass(frozen=True)
class RawData:
    """Interactions, item metadata and (optionally) user metadata, with normalised columns.

    interactions: user_id (str), item_id (str), timestamp (int64), rating (float64, NaN if absent)
    items:        item_id (str) and text columns as strings; MovieLens gives title, year, genres
                  (genres joined with '|')
    users:        user_id (str) and any of age, gender, occupation, zip (strings)
    """

    interactions: pd.DataFrame
    items: pd.DataFrame
    users: pd.DataFrame | None
    format: str
    directory: Path


def split_title_year(titles: pd.Series) -> tuple[pd.Series, pd.Series]:
    """'Toy Story (1995)' -> ('Toy Story', '1995'); titles without a year keep '' as year."""
    parts = titles.str.extract(_TITLE_YEAR)
    title = parts[0].fillna(titles).str.strip()
    return title, parts[1].fillna("")


def _interactions(table: Table, cols: dict[str, str]) -> pd.DataFrame:
    """Normalise an interaction table whose source column names are given by `cols`."""
    frame = table.frame
    out = pd.DataFrame(
        {
            "user_id": frame[cols["user_id"]].to_numpy(),
            "item_id": frame[cols["item_id"]].to_numpy(),
            "timestamp": numeric_column(table, cols["timestamp"], integer=True),
        }
    )
    rating = cols.get("rating")
    out["rating"] = numeric_column(table, rating) if rating in frame.columns else np.nan
    for key in ("user_id", "item_id"):
        empty = np.flatnonzero((out[key] == "").to_numpy())
        if empty.size:
            raise FedrecError(f"{table.where(int(empty[0]), cols[key])}: empty {key}")
    return out


def _check_items_known(inter: pd.DataFrame, inter_table: Table, items: Table, key: str) -> None:
    known = set(items.frame[key])
    unknown = np.flatnonzero(~inter["item_id"].isin(known).to_numpy())
    if unknown.size:
        row = int(unknown[0])
        raise FedrecError(
            f"{inter_table.where(row)}: item_id '{inter['item_id'].iat[row]}' "
            f"is not in {items.path.name}"
        )


def _ratings_100k(directory: Path) -> tuple[Table, pd.DataFrame]:
    data = read_table(
        directory / "u.data", sep="\t", names=["user_id", "item_id", "rating", "timestamp"]
    )
    return data, _interactions(data, {k: k for k in ("user_id", "item_id", "timestamp", "rating")})


def _items_100k(directory: Path) -> tuple[Table, pd.DataFrame]:
    item_cols = ["item_id", "title", "release", "video", "url", *ML100K_GENRES]
    items_t = read_table(directory / "u.item", sep="|", names=item_cols, encoding="latin-1")
    unique_column(items_t, "item_id")
    flags = items_t.frame[list(ML100K_GENRES)].to_numpy() == "1"
    genres = ["|".join(g for g, on in zip(ML100K_GENRES, row) if on) for row in flags]
    title, year = split_title_year(items_t.frame["title"])
    items = pd.DataFrame(
        {"item_id": items_t.frame["item_id"], "title": title, "year": year, "genres": genres}
    )
    return items_t, items


def _users_100k(directory: Path) -> pd.DataFrame | None:
    if not (directory / "u.user").exists():
        return None
    users_t = read_table(directory / "u.user", sep="|", names=["user_id", *USER_FEATURES])
    unique_column(users_t, "user_id")
    return users_t.frame


def read_official_100k(directory: Path) -> RawData:
    data, inter = _ratings_100k(directory)
    items_t, items = _items_100k(directory)
    _check_items_known(inter, data, items_t, "item_id")
    return RawData(inter, items, _users_100k(directory), "movielens official (100k)", directory)


def _ratings_1m(directory: Path) -> tuple[Table, pd.DataFrame]:
    data = read_table(
        directory / "ratings.dat",
        sep="::",
        names=["user_id", "item_id", "rating", "timestamp"],
        encoding="latin-1",
    )
    return data, _interactions(data, {k: k for k in ("user_id", "item_id", "timestamp", "rating")})


def _items_1m(directory: Path) -> tuple[Table, pd.DataFrame]:
    movies = read_table(
        directory / "movies.dat", sep="::", names=["item_id", "title", "genres"],
        encoding="latin-1",
    )  # fmt: skip
    unique_column(movies, "item_id")
    title, year = split_title_year(movies.frame["title"])
    items = pd.DataFrame(
        {"item_id": movies.frame["item_id"], "title": title, "year": year,
         "genres": movies.frame["genres"]}
    )  # fmt: skip
    return movies, items


def _users_1m(directory: Path) -> pd.DataFrame | None:
    if not (directory / "users.dat").exists():
        return None
    names = ["user_id", "gender", "age", "occupation", "zip"]
    users_t = read_table(directory / "users.dat", sep="::", names=names, encoding="latin-1")
    unique_column(users_t, "user_id")
    return users_t.frame


def read_official_1m(directory: Path) -> RawData:
    data, inter = _ratings_1m(directory)
    movies, items = _items_1m(directory)
    _check_items_known(inter, data, movies, "item_id")
    return RawData(inter, items, _users_1m(directory), "movielens official (1m)", directory)


def _atomic(path: Path) -> Table:
    """RecBole atomic file: tab-separated, header cells are `name:type`."""
    table = read_table(path, sep="\t")
    table.frame.columns = [c.split(":", 1)[0] for c in table.frame.columns]
    return table


def _strip_domain_prefix(ids: pd.Series) -> pd.Series:
    """RecBole's cross-domain dumps prefix every user id with its domain ('1m_1'); drop it so
    user ids match the official files."""
    prefix = ids.iat[0].split("_", 1)[0] + "_" if "_" in ids.iat[0] else ""
    if prefix and ids.str.startswith(prefix).all():
        return ids.str.slice(len(prefix))
    return ids


def _recbole_stem(directory: Path) -> str:
    for pattern in ("*.inter", "*.item"):
        found = sorted(directory.glob(pattern))
        if found:
            return found[0].stem
    raise FedrecError(f"{directory}: no RecBole atomic files (*.inter, *.item)")


def _recbole_interactions(directory: Path) -> tuple[Table, pd.DataFrame]:
    data = _atomic(directory / f"{_recbole_stem(directory)}.inter")
    for column in ("user_id", "item_id", "timestamp"):
        if column not in data.frame.columns:
            found = ", ".join(data.frame.columns)
            raise FedrecError(f"{data.path.name}: missing column '{column}' (columns found: {found})")
    inter = _interactions(data, {k: k for k in ("user_id", "item_id", "timestamp", "rating")})
    inter["user_id"] = _strip_domain_prefix(inter["user_id"])
    return data, inter


def _recbole_items(directory: Path) -> tuple[Table, pd.DataFrame]:
    items_t = _atomic(directory / f"{_recbole_stem(directory)}.item")
    if "item_id" not in items_t.frame.columns:
        found = ", ".join(items_t.frame.columns)
        raise FedrecError(f"{items_t.path.name}: missing column 'item_id' (columns found: {found})")
    unique_column(items_t, "item_id")
    src = items_t.frame
    genre_col = next((c for c in ("genre", "class", "genres") if c in src.columns), None)
    title_col = next((c for c in ("movie_title", "title") if c in src.columns), None)
    items = pd.DataFrame({"item_id": src["item_id"]})
    items["title"] = src[title_col] if title_col else src["item_id"]
    year = src["release_year"] if "release_year" in src.columns else pd.Series("", index=src.index)
    # RecBole writes years as floats ('1995.0') in some dumps.
    items["year"] = year.str.replace(r"\.0$", "", regex=True)
    items["genres"] = src[genre_col].str.split().str.join("|") if genre_col else ""
    return items_t, items


def _recbole_users(directory: Path) -> pd.DataFrame | None:
    path = directory / f"{_recbole_stem(directory)}.user"
    if not path.exists():
        return None
    users_t = _atomic(path)
    unique_column(users_t, "user_id")
    users = users_t.frame.rename(columns={"zip_code": "zip"})
    users["user_id"] = _strip_domain_prefix(users["user_id"])
    users = users[[c for c in ("user_id", *USER_FEATURES) if c in users.columns]].copy()
    if "age" in users.columns:
        users["age"] = users["age"].str.replace(r"\.0$", "", regex=True)
    if "occupation" in users.columns:
        users["occupation"] = users["occupation"].str.replace(r"\.0$", "", regex=True)
    return users


def read_recbole(directory: Path) -> RawData:
    data, inter = _recbole_interactions(directory)
    items_t, items = _recbole_items(directory)
    _check_items_known(inter, data, items_t, "item_id")
    return RawData(inter, items, _recbole_users(directory), f"recbole atomic ({_recbole_stem(directory)})", directory)


def _csv_interactions(directory: Path) -> tuple[Table, pd.DataFrame]:
    data = read_table(
        directory / "interactions.csv", required=("user_id", "item_id", "timestamp")
    )
    return data, _interactions(data, {k: k for k in ("user_id", "item_id", "timestamp", "rating")})


def _csv_items(directory: Path) -> tuple[Table, pd.DataFrame]:
    items_t = read_table(directory / "items.csv", required=("item_id",))
    unique_column(items_t, "item_id")
    return items_t, items_t.frame.copy()


def _csv_users(directory: Path) -> pd.DataFrame | None:
    if not (directory / "users.csv").exists():
        return None
    users_t = read_table(directory / "users.csv", required=("user_id",))
    unique_column(users_t, "user_id")
    return users_t.frame


def read_generic_csv(directory: Path) -> RawData:
    data, inter = _csv_interactions(directory)
    items_t, items = _csv_items(directory)
    _check_items_known(inter, data, items_t, "item_id")
    return RawData(inter, items, _csv_users(directory), "generic csv", directory)


# Checked in order: the first whose marker file is present reads the directory.
FORMATS: tuple[tuple[str, Callable[[Path], bool], Callable[[Path], RawData]], ...] = (
    ("csv", lambda d: (d / "interactions.csv").exists(), read_generic_csv),
    ("official-1m", lambda d: (d / "ratings.dat").exists(), read_official_1m),
    ("official-100k", lambda d: (d / "u.data").exists(), read_official_100k),
    ("recbole", lambda d: any(d.glob("*.inter")), read_recbole),
)


def detect_format(directory: Path) -> str | None:
    for name, present, _ in FORMATS:
        if present(directory):
            return name
    return None


def read_directory(directory: Path) -> RawData:
    """Read whichever supported format `directory` holds."""
    if not directory.is_dir():
        raise FedrecError(f"{directory}: no such directory")
    for _, present, reader in FORMATS:
        if present(directory):
            return reader(directory)
    raise FedrecError(
        f"{directory}: no dataset found (expected interactions.csv, ratings.dat, u.data or *.inter)"
    )


# The same formats, split into their item file (what a public catalog is built from) and their
# interaction and user files (what an edge node holds of its own).
ITEM_FILES: dict[str, tuple[Callable[[Path], bool], Callable[[Path], tuple[Table, pd.DataFrame]]]] = {
    "csv": (lambda d: (d / "items.csv").exists(), _csv_items),
    "official-1m": (lambda d: (d / "movies.dat").exists(), _items_1m),
    "official-100k": (lambda d: (d / "u.item").exists(), _items_100k),
    "recbole": (lambda d: any(d.glob("*.item")), _recbole_items),
}
PRIVATE_FILES: dict[str, tuple[Callable[[Path], tuple[Table, pd.DataFrame]], Callable[[Path], pd.DataFrame | None]]] = {
    "csv": (_csv_interactions, _csv_users),
    "official-1m": (_ratings_1m, _users_1m),
    "official-100k": (_ratings_100k, _users_100k),
    "recbole": (_recbole_interactions, _recbole_users),
}


def read_item_file(directory: Path) -> tuple[str, Table, pd.DataFrame]:
    """Only the item metadata of `directory` (items.csv, movies.dat, u.item or *.item): the
    format, the file as read, and its normalised item table. No interaction file is opened."""
    if not directory.is_dir():
        raise FedrecError(f"{directory}: no such directory")
    for name, (present, reader) in ITEM_FILES.items():
        if present(directory):
            table, items = reader(directory)
            return name, table, items
    raise FedrecError(f"{directory}: no item file found (expected items.csv, movies.dat, u.item or *.item)")


def read_private_files(directory: Path) -> tuple[Table, pd.DataFrame, pd.DataFrame | None]:
    """An edge node's own files: its interactions (the file as read, and normalised) and its
    users, if it has a user file. Item files there, if any, are not read: items come from the
    federation's catalog."""
    if not directory.is_dir():
        raise FedrecError(f"{directory}: no such directory")
    for name, present, _ in FORMATS:
        if present(directory):
            interactions, users = PRIVATE_FILES[name]
            table, inter = interactions(directory)
            return table, inter, users(directory)
    raise FedrecError(
        f"{directory}: no interactions found (expected interactions.csv, ratings.dat, u.data or *.inter)"
    )
