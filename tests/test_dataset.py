"""Preprocessing: implicit feedback, filtering, time order, leave-one-out and id remapping."""

from pathlib import Path

import numpy as np
import pytest
from conftest import Tiny

from shared.config import DataConfig
from shared.data.dataset import PAD, build_dataset, item_texts
from shared.data.readers import read_directory
from shared.errors import FedrecError


def build(d: Path, **kw: object):
    return build_dataset(read_directory(d), DataConfig(dataset="csv", data_path=str(d), **kw))


def expected_sequence(tiny: Tiny, user: str) -> list[str]:
    rows = [(t, k, i) for k, (u, i, r, t) in enumerate(tiny.rows) if u == user]
    return [i for t, k, i in sorted(rows)]  # time order, file order breaks ties


def test_sequences_are_in_time_order_with_stable_ties(tiny: Tiny, csv_dir: Path) -> None:
    ds = build(csv_dir)
    for u, uid in enumerate(ds.user_ids):
        got = [ds.item_ids[i] for i in ds.sequence(u)]
        assert got == expected_sequence(tiny, uid)
        assert np.all(np.diff(ds.timestamps[ds.offsets[u] : ds.offsets[u + 1]]) >= 0)


def test_leave_one_out_uses_last_item_for_test_and_second_to_last_for_validation(csv_dir: Path) -> None:
    ds = build(csv_dir)
    for u in range(ds.num_users):
        seq = ds.sequence(u)
        assert ds.test_items[u] == seq[-1]
        assert ds.valid_items[u] == seq[-2]
        assert list(ds.train_sequence(u)) == list(seq[:-2])
        assert list(ds.history(u, "test")) == list(seq[:-1])
    assert ds.train_mask.sum() == ds.num_interactions - 2 * ds.num_users


def test_item_ids_are_contiguous_with_zero_free_for_padding(tiny: Tiny, csv_dir: Path) -> None:
    ds = build(csv_dir)
    assert ds.items.min() >= 1 and ds.items.max() == ds.num_items
    assert set(ds.items.tolist()) == set(range(1, ds.num_items + 1))
    assert ds.item_ids[PAD] == "<pad>" and ds.item_text[PAD] == ""


def test_rating_threshold_keeps_only_high_ratings(tiny: Tiny, csv_dir: Path) -> None:
    ds = build(csv_dir, rating_threshold=4, min_interactions=3)
    high = sum(1 for *_, r, t in [(u, i, r, t) for u, i, r, t in tiny.rows] if r >= 4)
    assert ds.stats.below_threshold == len(tiny.rows) - high
    assert ds.num_interactions + ds.stats.dropped_interactions == high


def test_users_with_too_few_interactions_are_dropped_and_counted(tiny: Tiny, csv_dir: Path) -> None:
    counts = {u: sum(1 for r in tiny.rows if r[0] == u) for u in tiny.users}
    threshold = sorted(counts.values())[3]  # drops at least three users
    ds = build(csv_dir, min_interactions=threshold)
    short = [u for u, c in counts.items() if c < threshold]
    assert ds.stats.dropped_users == len(short)
    assert set(ds.user_ids) == set(tiny.users) - set(short)
    assert ds.stats.raw_users == len(tiny.users)


def test_min_interactions_below_three_is_refused() -> None:
    with pytest.raises(FedrecError, match="min-interactions must be at least 3"):
        DataConfig(dataset="csv", min_interactions=2)


def test_item_text_has_title_year_and_genres(csv_dir: Path) -> None:
    ds = build(csv_dir)
    assert ds.item_text[1] == "Movie 1 (1981). Genres: Comedy, Sci-Fi"
    assert ds.item_year[1] == 1981
    assert ds.item_genres[1].sum() == 2


def test_text_columns_are_configurable(csv_dir: Path) -> None:
    ds = build(csv_dir, text_columns="title")
    assert ds.item_text[1] == "Movie 1"
    with pytest.raises(FedrecError, match="text column 'plot' not found"):
        build(csv_dir, text_columns="title,plot")


def test_item_texts_formats_extra_columns() -> None:
    import pandas as pd

    frame = pd.DataFrame({"title": ["Up"], "year": [""], "director": ["Docter"]})
    assert item_texts(frame, ["title", "year", "director"]) == ["Up. Director: Docter"]


def test_user_side_features_include_zip_region(csv_dir: Path) -> None:
    ds = build(csv_dir)
    assert set(ds.user_features) == {"age", "gender", "occupation", "region"}
    region = ds.user_feature_vocab["region"]
    by_user = dict(zip(ds.user_ids, (region[c] for c in ds.user_features["region"])))
    assert by_user["1"] == "2"  # zip 20002
    assert by_user["4"] == "other"  # Canadian postal code T8H1N
