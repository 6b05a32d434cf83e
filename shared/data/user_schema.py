"""The user-feature vocabularies of a public catalog: fixed by a published schema, never read off
anyone's user file.

A federation's model has one embedding row per value of each user feature, so every party must
agree on the values before any user is seen. Deriving them from the users (as a simulation on
one dataset may) would put a fact about somebody's data into a public artifact and would differ
between nodes. So:
- MovieLens: the values its README documents (ML-1M's seven age buckets and 21 occupation codes;
  ML-100k's ages and occupation names), both genders, and the ten zip regions plus 'other';
- csv: a small declared schema file, `user-schema.json`: {"age": [...], "occupation": [...]}.
A value a node meets that the schema lacks is coded unknown (0), like a missing one.
"""

from __future__ import annotations

import json
from pathlib import Path

from shared.errors import FedrecError

FEATURES = ("age", "gender", "occupation", "region")
SCHEMA_FILE = "user-schema.json"
UNKNOWN = "<unknown>"

GENDERS = ("F", "M")
REGIONS = (*"0123456789", "other")  # a US zip code's first digit; any other postal code: 'other'
# ML-1M README: age buckets 1 (under 18), 18, 25, 35, 45, 50, 56; occupations coded 0..20.
ML1M = {"age": ("1", "18", "25", "35", "45", "50", "56"), "gender": GENDERS,
        "occupation": tuple(str(k) for k in range(21)), "region": REGIONS}  # fmt: skip
# ML-100k README (u.user, u.occupation): ages in whole years; 21 occupation names.
ML100K_OCCUPATIONS = (
    "administrator", "artist", "doctor", "educator", "engineer", "entertainment", "executive",
    "healthcare", "homemaker", "lawyer", "librarian", "marketing", "none", "other", "programmer",
    "retired", "salesman", "scientist", "student", "technician", "writer",
)  # fmt: skip
ML100K = {"age": tuple(str(a) for a in range(1, 100)), "gender": GENDERS,
          "occupation": ML100K_OCCUPATIONS, "region": REGIONS}  # fmt: skip
PUBLISHED = {"movielens-1m": ML1M, "movielens-100k": ML100K}


def _vocab(values: tuple[str, ...] | list[str]) -> list[str]:
    """Code 0 is unknown; the others in the order a simulation on the same data would give
    (shortest first, then alphabetical), so the two kinds of model line up where they can."""
    return [UNKNOWN, *sorted(values, key=lambda v: (len(v), v))]


def published_vocabularies(dataset: str) -> dict[str, list[str]]:
    """The fixed vocabularies of a MovieLens release."""
    return {name: _vocab(values) for name, values in PUBLISHED[dataset].items()}


def read_schema(path: Path) -> dict[str, list[str]]:
    """A declared schema file: a JSON object from feature name (age, gender, occupation, region)
    to its list of values, kept in the declared order."""
    try:
        schema = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise FedrecError(f"{path}: no such file") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise FedrecError(f"{path}: not a readable JSON file ({err})") from None
    if not isinstance(schema, dict):
        raise FedrecError(f"{path}: expected an object mapping user features to lists of values")
    vocab: dict[str, list[str]] = {}
    for name, values in schema.items():
        if name not in FEATURES:
            raise FedrecError(f"{path}: unknown user feature '{name}' (choose from: {', '.join(FEATURES)})")
        if not isinstance(values, list) or not values or not all(isinstance(v, str) and v.strip() for v in values):
            raise FedrecError(f"{path}: '{name}' must be a non-empty list of non-empty strings")
        if len(set(values)) != len(values):
            raise FedrecError(f"{path}: '{name}' lists a value twice")
        vocab[name] = [UNKNOWN, *(v.strip() for v in values)]
    return {name: vocab[name] for name in FEATURES if name in vocab}


def public_vocabularies(dataset: str, schema: Path | None) -> dict[str, list[str]]:
    """The user-feature vocabularies of `dataset`'s catalog: a MovieLens release's published
    ones, or a csv catalog's declared `schema` (none declared: no user features)."""
    if dataset in PUBLISHED:
        if schema is not None:
            raise FedrecError(f"--user-schema is for csv catalogs: {dataset}'s schema is its published one")
        return published_vocabularies(dataset)
    return read_schema(schema) if schema is not None else {}
