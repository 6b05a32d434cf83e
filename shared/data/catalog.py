"""An item table (any columns but `item_id` optional) -> the catalog's texts and side features.

Nothing here assumes MovieLens: a catalog may have only `item_id,title`, or books' `author` and
`publisher`, or no year, or a year that is not a film's. What it has decides what the model gets:
- the item text, built from `--text-columns`, or else every string column but the id;
- genres (a `genres` column, `|`-separated), used by the ranker and by `dirichlet` partitioning;
- a year (a `year` column), used by the ranker, bucketed over the catalog's own years.
Missing side features are simply absent (no genres, years all 0), never guessed.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from shared.errors import FedrecError

# Rendered as "Title (Year)" ahead of every other column; MovieLens texts depend on it.
TITLE, YEAR = "title", "year"
# Years outside this range are typos or placeholders (0, 9999, -1): they count as unknown.
PLAUSIBLE_YEARS = (1, 2999)


def item_texts(items: pd.DataFrame, columns: list[str]) -> list[str]:
    """One sentence per item, e.g. 'Toy Story (1995). Genres: Animation, Comedy' or
    'Emma (1815). Author: Jane Austen. Publisher: John Murray'."""
    texts = []
    for row in items[columns].itertuples(index=False):
        values = dict(zip(columns, row))
        parts = []
        title = values.pop(TITLE, "")
        year = values.pop(YEAR, "")
        if title or year:
            parts.append(f"{title} ({year})" if title and year else title or year)
        for name, value in values.items():
            if value:
                label = name.replace("_", " ").capitalize()
                parts.append(f"{label}: {value.replace('|', ', ')}")
        texts.append(". ".join(parts))
    return texts


def _is_numeric(column: pd.Series) -> bool:
    """Every non-empty value is a number (a price, a page count, an ISBN): noise to a text model."""
    filled = column[column != ""]
    return bool(len(filled)) and bool(pd.to_numeric(filled, errors="coerce").notna().all())


def text_columns(items: pd.DataFrame, requested: list[str], where: str) -> list[str]:
    """The columns the item text is built from: `requested` (each must exist), or every string
    column but the id, in file order. `year` is kept although numeric: it goes in the text as
    '(Year)' after the title. MovieLens' readers give title, year, genres, so their texts are
    'Title (Year). Genres: A, B' either way."""
    if requested:
        missing = [c for c in requested if c not in items.columns]
        if missing:
            raise FedrecError(
                f"{where}: text column '{missing[0]}' not found "
                f"(columns: {', '.join(c for c in items.columns if c != 'item_id')})"
            )
        return requested
    return [c for c in items.columns
            if c != "item_id" and (c == YEAR or not _is_numeric(items[c].astype(str)))]  # fmt: skip


def item_genres(items: pd.DataFrame) -> tuple[list[str], np.ndarray]:
    """Sorted genre names and the (I+1, G) uint8 multi-hot, row 0 padding; G = 0 without a
    `genres` column or with one that is empty throughout."""
    if "genres" in items.columns:
        genre_lists = items["genres"].astype(str).str.split("|")
    else:
        genre_lists = pd.Series([[]] * len(items), dtype=object)
    names = sorted({g.strip() for gs in genre_lists for g in gs if g.strip()})
    index = {g: k for k, g in enumerate(names)}
    multi_hot = np.zeros((len(items) + 1, len(names)), dtype=np.uint8)
    for row, gs in enumerate(genre_lists, start=1):
        multi_hot[row, [index[g.strip()] for g in gs if g.strip()]] = 1
    return names, multi_hot


def item_years(items: pd.DataFrame) -> np.ndarray:
    """(I+1,) int64 years, 0 where unknown: no `year` column, an empty or non-numeric cell
    ('n.d.', 'c. 1850'), or an implausible number. Any era is fine (books from 1600 or 2024)."""
    years = np.zeros(len(items) + 1, dtype=np.int64)
    if YEAR in items.columns:
        # RecBole and spreadsheets write '1995.0'; a fractional year keeps its whole part.
        values = pd.to_numeric(items[YEAR], errors="coerce").to_numpy(np.float64)
        low, high = PLAUSIBLE_YEARS
        known = np.isfinite(values) & (values >= low) & (values <= high)
        years[1:][known] = values[known].astype(np.int64)
    return years
