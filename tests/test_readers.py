"""Every on-disk format reads into the same normalised interactions, items and users."""

from pathlib import Path

import pytest
from conftest import Tiny, write_csv, write_official_1m, write_official_100k, write_recbole

from shared.data.readers import detect_format, read_directory

WRITERS = {
    "official-100k": write_official_100k,
    "official-1m": write_official_1m,
    "recbole": write_recbole,
    "csv": write_csv,
}


@pytest.mark.parametrize("fmt", WRITERS)
def test_every_format_reads_the_same_interactions(fmt: str, tiny: Tiny, tmp_path: Path) -> None:
    directory = WRITERS[fmt](tiny, tmp_path / fmt)
    assert detect_format(directory) == fmt
    raw = read_directory(directory)
    got = list(raw.interactions[["user_id", "item_id", "rating", "timestamp"]].itertuples(index=False))
    want = [(u, i, float(r), t) for u, i, r, t in tiny.rows]
    assert [(u, i, float(r), int(t)) for u, i, r, t in got] == want


@pytest.mark.parametrize("fmt", WRITERS)
def test_every_format_reads_titles_years_genres_and_users(fmt: str, tiny: Tiny, tmp_path: Path) -> None:
    raw = read_directory(WRITERS[fmt](tiny, tmp_path / fmt))
    items = raw.items.set_index("item_id")
    for i in tiny.items:
        assert items.loc[i, "title"] == tiny.titles[i]
        assert items.loc[i, "year"] == tiny.years[i]
        assert set(items.loc[i, "genres"].split("|")) == set(tiny.genres[i])
    users = raw.users.set_index("user_id")
    assert sorted(users.index) == sorted(tiny.users)
    assert users.loc["4", "zip"] == "T8H1N"
    assert users.loc["2", "gender"] == "M"


def test_recbole_crlf_and_domain_prefix_are_removed(tiny: Tiny, tmp_path: Path) -> None:
    raw = read_directory(write_recbole(tiny, tmp_path / "r", crlf=True, prefix="1m_"))
    assert set(raw.interactions["user_id"]) == set(tiny.users)
    assert not raw.items["genres"].str.contains("\r").any()
    assert not raw.users["zip"].str.contains("\r").any()


def test_csv_rating_column_is_optional(tiny: Tiny, tmp_path: Path) -> None:
    d = write_csv(tiny, tmp_path / "c", users=False)
    lines = (d / "interactions.csv").read_text().splitlines()
    (d / "interactions.csv").write_text("\n".join(",".join(x.split(",")[:3]) for x in lines))
    raw = read_directory(d)
    assert raw.interactions["rating"].isna().all()
    assert raw.users is None


def test_official_100k_reads_latin1_titles(tiny: Tiny, tmp_path: Path) -> None:
    tiny.titles["3"] = "Cité des enfants perdus, La"
    raw = read_directory(write_official_100k(tiny, tmp_path / "o"))
    assert raw.items.set_index("item_id").loc["3", "title"] == "Cité des enfants perdus, La"
