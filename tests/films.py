"""A tiny catalog of real film titles (numeric ids, as ML-100k has) and a model trained on it:
search, explanations, titles in --history and the HTTP service are tested on it."""

from __future__ import annotations

from pathlib import Path

import numpy as np

FILMS = [
    ("Toy Story", 1995, "Animation|Children's|Comedy"), ("Heat", 1995, "Action|Crime|Thriller"),
    ("Jumanji", 1995, "Adventure|Children's|Fantasy"), ("Star Wars", 1977, "Action|Adventure|Sci-Fi"),
    ("Empire Strikes Back, The", 1980, "Action|Adventure|Sci-Fi"), ("Godfather, The", 1972, "Action|Crime|Drama"),
    ("Casablanca", 1942, "Drama|Romance|War"), ("Fargo", 1996, "Crime|Drama|Thriller"),
    ("Hamlet", 1996, "Drama"), ("Hamlet", 1948, "Drama"), ("Alien", 1979, "Action|Horror|Sci-Fi"),
    ("Aliens", 1986, "Action|Sci-Fi|Thriller"), ("Titanic", 1997, "Drama|Romance"),
    ("Lion King, The", 1994, "Animation|Children's|Musical"), ("Pulp Fiction", 1994, "Crime|Drama"),
    ("Babe", 1995, "Children's|Comedy|Drama"), ("Braveheart", 1995, "Action|Drama|War"),
    ("Apollo 13", 1995, "Drama"), ("Twister", 1996, "Action|Adventure|Thriller"),
    ("Matrix, The", 1999, "Action|Sci-Fi|Thriller"), ("Fugitive, The", 1993, "Action|Thriller"),
    ("Schindler's List", 1993, "Drama|War"), ("Aladdin", 1992, "Animation|Children's|Comedy"),
    ("Jurassic Park", 1993, "Action|Adventure|Sci-Fi"), ("Groundhog Day", 1993, "Comedy|Romance"),
    ("Shining, The", 1980, "Horror"), ("Vertigo", 1958, "Mystery|Thriller"),
    ("Sense and Sensibility", 1995, "Drama|Romance"), ("Clueless", 1995, "Comedy|Romance"),
    ("Seven", 1995, "Crime|Thriller"),
]  # fmt: skip
SMALL = ["--dim", "16", "--num-layers", "1", "--max-len", "12", "--batch-size", "8",
         "--num-negatives", "8", "--retrieve-top-n", "10"]  # fmt: skip


def write_films(d: Path, num_users: int = 16, seed: int = 0) -> Path:
    """items.csv with the films above (ids 1..30), users.csv, and random interactions."""
    d.mkdir(parents=True, exist_ok=True)
    rows = ["item_id,title,year,genres"]
    rows += [f'{n},"{t}",{y},{g}' for n, (t, y, g) in enumerate(FILMS, 1)]
    (d / "items.csv").write_text("\n".join(rows) + "\n")
    rng = np.random.default_rng(seed)
    lines = ["user_id,item_id,timestamp,rating"]
    for u in range(1, num_users + 1):
        for t, item in enumerate(rng.choice(len(FILMS), size=int(rng.integers(7, 12)), replace=False)):
            lines.append(f"{u},{item + 1},{1000 + t},4")
    (d / "interactions.csv").write_text("\n".join(lines) + "\n")
    users = ["user_id,age,gender,occupation,zip"]
    users += [f"{u},{20 + u},{'MF'[u % 2]},{u % 3},{10000 + 1111 * (u % 5)}" for u in range(1, num_users + 1)]
    (d / "users.csv").write_text("\n".join(users) + "\n")
    return d


def train_films(tmp: Path) -> tuple[Path, Path]:
    """(checkpoint, data directory): 2 epochs of a small model on the films."""
    from cli import main

    data = write_films(tmp / "films")
    out = tmp / "model"
    code = main(["train", "--dataset", "csv", "--path", str(data), "--output", str(out), "--epochs", "2",
                 "--cache-dir", str(tmp / "cache"), *SMALL])  # fmt: skip
    assert code == 0
    return out, data
