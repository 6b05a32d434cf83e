"""Your own data, any catalog (issue 22): csv catalogs without genres, without a year, or with
only a title go through data, model, training, evaluation and recommend; MovieLens stays as it was.

The catalogs are conftest's `write_books_csv`: users read consecutive books of one author, so a
model that reads the item text beats popularity, and one that cannot see the author does not.
"""

import json
import logging
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import (
    GENRES,
    Tiny,
    tiny_run_config,
    write_books_csv,
    write_csv,
    write_official_1m,
    write_official_100k,
    write_recbole,
)
from inprocess import run_federation

from cli import main
from shared.config import DataConfig, ModelConfig, PartitionConfig
from shared.data.catalog import item_years
from shared.data.dataset import build_dataset
from shared.data.partition import partition_users, popularity_tier
from shared.data.readers import read_directory
from shared.models import text_encoder
from shared.models.checkpoint import load_checkpoint, save_checkpoint
from shared.models.recommender import FORMAT_VERSION, Recommender, year_grid
from shared.models.text_encoder import cache_key, encode, item_embeddings
from shared.models.training import build_model

BOOKS = ("title", "author", "year", "publisher")
SMALL = ModelConfig(dim=16, num_layers=1, num_heads=2, max_len=12, retrieve_top_n=10)
SMALL_ARGS = ["--dim", "16", "--num-layers", "1", "--max-len", "12", "--batch-size", "8",
              "--num-negatives", "8", "--retrieve-top-n", "10"]  # fmt: skip


def build(d: Path, **kw: object):
    return build_dataset(read_directory(d), DataConfig(dataset="csv", data_path=str(d), **kw))


def error_line(capsys) -> str:
    err = capsys.readouterr().err
    assert "Traceback" not in err
    (line,) = [ln for ln in err.splitlines() if ln.startswith("fedrec: error:")]
    return line


@pytest.fixture(scope="module")
def books_dir(tmp_path_factory) -> Path:
    return write_books_csv(tmp_path_factory.mktemp("books") / "csv", BOOKS)


@pytest.fixture(scope="module")
def titles_dir(tmp_path_factory) -> Path:
    return write_books_csv(tmp_path_factory.mktemp("titles") / "csv", ("title",))


@pytest.fixture(scope="module")
def cache(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("cache")


# ---------------------------------------------------------------- the item text


def test_item_text_is_every_string_column_but_the_id(tmp_path: Path) -> None:
    d = write_books_csv(tmp_path / "b", BOOKS)
    items = pd.read_csv(d / "items.csv", dtype=str)
    items["pages"], items["isbn"] = "320", "9780141439518"  # numbers: noise to a text model
    items.to_csv(d / "items.csv", index=False)
    ds = build(d)
    row = items.iloc[0]
    assert ds.item_text[1] == f"{row.title} (1760). Author: Ada Quill. Publisher: {row.publisher}"
    assert ds.item_titles[1] == row.title and ds.item_year[1] == 1760


def test_text_columns_choose_what_the_item_text_is_built_from(books_dir: Path) -> None:
    ds = build(books_dir, text_columns="author,title")
    assert ds.item_text[1].startswith("The ") and ds.item_text[1].endswith(". Author: Ada Quill")
    assert build(books_dir, text_columns="author").item_text[1] == "Author: Ada Quill"


@pytest.mark.parametrize("fmt", ["csv", "official-1m", "official-100k", "recbole"])
def test_movielens_item_texts_are_exactly_what_they_were(fmt: str, tiny: Tiny, tmp_path: Path) -> None:
    """A changed text would invalidate every embedding cache and recorded result."""
    writer = {"csv": write_csv, "official-1m": write_official_1m,
              "official-100k": write_official_100k, "recbole": write_recbole}[fmt]  # fmt: skip
    ds = build_dataset(read_directory(writer(tiny, tmp_path / fmt)), DataConfig(dataset="csv"))
    for k, item in enumerate(ds.item_ids[1:], start=1):
        genres = list(dict.fromkeys(tiny.genres[item]))
        if fmt == "official-100k":  # u.item's genre flags come in the file's genre order
            genres.sort(key=GENRES.index)
        assert ds.item_text[k] == f"{tiny.titles[item]} ({tiny.years[item]}). Genres: {', '.join(genres)}"


def test_a_catalog_with_only_a_title_has_no_genres_and_no_years(titles_dir: Path) -> None:
    ds = build(titles_dir)
    assert ds.genre_names == [] and ds.item_genres.shape == (ds.num_items + 1, 0)
    assert not ds.item_year.any()
    assert ds.item_text[1] == "Dragon Saga, Book 1" == ds.item_titles[1]


def test_unknown_or_implausible_years_count_as_unknown() -> None:
    items = pd.DataFrame({"year": ["1850", "1850.0", "n.d.", "", "0", "99999", "c. 1900", "2024"]})
    assert item_years(items)[1:].tolist() == [1850, 1850, 0, 0, 0, 0, 0, 2024]


# ---------------------------------------------------------------- the model


def test_year_buckets_follow_the_catalogs_own_years() -> None:
    films = torch.tensor([0, 1919, 1995, 2000])
    assert year_grid(films) == (1915, 25)  # MovieLens: the buckets every checkpoint had
    assert year_grid(torch.tensor([0, 1990, 2024])) == (1915, 25)
    assert year_grid(torch.tensor([1603, 1850, 2024])) == (1600, 85)  # books: extended back
    assert year_grid(torch.tensor([2000, 2100])) == (1915, 38)  # and forward
    assert year_grid(torch.tensor([0, 0])) is None


def test_side_parts_without_data_are_left_out_of_the_model(books_dir, titles_dir, cache) -> None:
    d = SMALL.dim
    bare = build_model(build(titles_dir), SMALL, cache)  # no genres, no years
    assert bare.genre_proj is None and bare.year_emb is None
    assert bare.rank_mlp[0].in_features == 6 * d
    assert not {"genres", "year"} & set(bare.state_dict())
    books = build(books_dir)
    with_year = build_model(books, SMALL, cache)  # years from 1760, no genres
    assert with_year.genre_proj is None and with_year.rank_mlp[0].in_features == 7 * d
    first, count = with_year.config["year_first"], with_year.config["year_buckets"]
    assert first == 1760 and with_year.year_emb.num_embeddings == count + 1
    # Every year in a bucket of its own five years: none clamped to an end, as 1915's grid would.
    assert with_year.year[1:].tolist() == ((books.item_year[1:] - 1760) // 5 + 1).tolist()


def test_a_config_without_the_new_keys_means_what_it_meant(tmp_path: Path) -> None:
    """Checkpoints written before genres and years became optional load as the same model."""
    config = {"format_version": FORMAT_VERSION, "model": SMALL.__dict__, "num_items": 5, "num_genres": 3,
              "feature_sizes": {}, "dataset": "old", "catalog": list("abcde"), "titles": list("abcde")}  # fmt: skip
    model = Recommender(config)
    assert model.genre_proj.in_features == 3 and model.year_emb.num_embeddings == 26
    assert model.rank_mlp[0].in_features == 7 * SMALL.dim
    model.set_item_side(torch.zeros(6, 384), torch.eye(6, 3), torch.tensor([0, 1900, 1919, 1995, 2000, 2050]))
    assert model.year.tolist() == [0, 1, 1, 17, 18, 25]


def test_a_model_without_side_features_saves_loads_and_scores_alike(titles_dir, cache, tmp_path) -> None:
    model = build_model(build(titles_dir), SMALL, cache).eval()
    save_checkpoint(model, tmp_path / "m")
    loaded = load_checkpoint(tmp_path / "m").eval()
    states, history = torch.randn(2, 3, SMALL.dim), torch.randn(2, 4, SMALL.dim)
    visible = torch.ones(2, 3, 4, dtype=torch.bool)
    cands = torch.randint(1, model.config["num_items"] + 1, (2, 3, 5))
    args = (states, history, visible, torch.randn(2, SMALL.dim), cands)
    with torch.no_grad():
        assert torch.equal(model.rank_logits(*args), loaded.rank_logits(*args))


# ---------------------------------------------------------------- long encodings


def test_an_interrupted_encoding_resumes_from_its_finished_chunks(tmp_path, monkeypatch, caplog) -> None:
    texts = [f"Book {i} by Author {i % 3}" for i in range(10)]
    real, calls = text_encoder._encode_batch, []

    def interrupted_at_third_batch(*args):
        calls.append(len(args[2]))
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real(*args)

    monkeypatch.setattr(text_encoder, "BATCH_SIZE", 2)
    monkeypatch.setattr(text_encoder, "_encode_batch", interrupted_at_third_batch)
    caplog.set_level(logging.INFO, logger="shared.models.text_encoder")
    with pytest.raises(KeyboardInterrupt):
        item_embeddings(texts, tmp_path, chunk_size=4)
    partial = tmp_path / "embeddings" / f"{cache_key(texts)}.partial"
    assert len(list(partial.glob("*.npy"))) == 1  # texts 0-3 were finished
    assert "will take about" in caplog.text  # the estimate came after the first batch

    calls.clear()
    monkeypatch.setattr(text_encoder, "_encode_batch", lambda *a: calls.append(len(a[2])) or real(*a))
    embeddings = item_embeddings(texts, tmp_path, chunk_size=4)
    assert sum(calls) == 6  # only what the interrupted run had not finished
    assert "4 of 10 texts were encoded by an earlier run" in caplog.text
    assert np.allclose(embeddings, encode(texts), atol=1e-5)
    assert not partial.exists() and (partial.parent / f"{cache_key(texts)}.npy").exists()


def test_a_long_encoding_says_so_before_it_runs(tmp_path, monkeypatch, caplog) -> None:
    monkeypatch.setattr(text_encoder, "LONG_ENCODING_S", 0.0)
    caplog.set_level(logging.INFO, logger="shared.models.text_encoder")
    item_embeddings(["one book", "another book"], tmp_path)
    warnings = [r.getMessage() for r in caplog.records
                if r.levelno == logging.WARNING and r.name == text_encoder.__name__]  # fmt: skip
    assert len(warnings) == 1 and "to encode on cpu, once" in warnings[0]


# ---------------------------------------------------------------- partitions without user features


def test_iid_and_dirichlet_partition_a_catalog_without_genres_or_users(books_dir: Path) -> None:
    ds = build(books_dir)
    assert not ds.user_features and not ds.genre_names
    for scheme in ("iid", "dirichlet"):
        part = partition_users(ds, PartitionConfig(partitioning=scheme, num_partitions=3, dirichlet_alpha=0.3))
        assert sorted(np.concatenate([part.users(p) for p in range(3)]).tolist()) == list(range(ds.num_users))
    tiers = popularity_tier(ds)
    assert tiers.shape == (ds.num_users,) and len(set(tiers.tolist())) > 3


# ---------------------------------------------------------------- train, evaluate, recommend


@pytest.mark.parametrize("columns,text_columns,learns", [
    (BOOKS, "", True),  # the author is in the text: the next book is in plain sight
    (("title",), "", True),  # the series is in the title
    (BOOKS, "title,publisher", False),  # the author is left out: nothing to learn from the text
])  # fmt: skip
def test_a_model_trained_one_epoch_beats_popularity_on_a_planted_signal(
    columns, text_columns, learns, tmp_path, capsys
) -> None:
    data = write_books_csv(tmp_path / "data", columns)
    common = ["--dataset", "csv", "--path", str(data), "--cache-dir", str(tmp_path / "cache"),
              *(["--text-columns", text_columns] if text_columns else [])]  # fmt: skip
    # Text only (no ID embedding) and a high learning rate: one epoch shows what the text holds.
    assert main(["train", *common, "--output", str(tmp_path / "model"), "--epochs", "1",
                 "--no-id-embedding", "--lr", "0.01", "--dropout", "0", *SMALL_ARGS]) == 0  # fmt: skip
    assert main(["evaluate", "--baseline", "popularity", *common, "--json", str(tmp_path / "pop.json")]) == 0
    assert main(["evaluate", "--checkpoint", str(tmp_path / "model"), *common,
                 "--json", str(tmp_path / "model.json")]) == 0  # fmt: skip
    popularity = json.loads((tmp_path / "pop.json").read_text())["full"]
    model = json.loads((tmp_path / "model.json").read_text())["ranking"]["full"]
    # Popularity: about 10 / 160 books. The text model: above 0.35 on the books, 0.8 on titles.
    beats = model["hr@10"] > popularity["hr@10"] + 0.2 and model["ndcg@10"] > 2 * popularity["ndcg@10"]
    assert beats == learns, (model, popularity)
    capsys.readouterr()
    assert main(["recommend", "--checkpoint", str(tmp_path / "model"), "--user", "u0", *common[:4], "-k", "3"]) == 0
    assert main(["recommend", "--checkpoint", str(tmp_path / "model"), "--history", "bk0000,bk0001", "-k", "3"]) == 0
    printed = capsys.readouterr().out
    assert printed.count("| 1 ") == 2 and "| 3 " in printed


# ---------------------------------------------------------------- one line, no traceback


def test_catalog_mistakes_are_one_line_naming_the_column_or_file(books_dir, tmp_path, capsys) -> None:
    args = ["train", "--dataset", "csv", "--path", str(books_dir), "--output", str(tmp_path / "m"),
            "--cache-dir", str(tmp_path / "c"), *SMALL_ARGS]  # fmt: skip
    assert main([*args, "--text-columns", "title,isbn"]) == 2
    assert "text column 'isbn' not found (columns: title, author, year, publisher)" in error_line(capsys)
    ids_only = tmp_path / "ids"
    ids_only.mkdir()
    items = pd.read_csv(books_dir / "items.csv", dtype=str)
    items[["item_id"]].to_csv(ids_only / "items.csv", index=False)
    (ids_only / "interactions.csv").write_text((books_dir / "interactions.csv").read_text())
    args[4] = str(ids_only)
    assert main([*args, "--no-id-embedding"]) == 2
    assert "no item has any text (items.csv needs a text column such as 'title')" in error_line(capsys)


# ---------------------------------------------------------------- federated


def test_a_two_node_federation_on_a_title_only_catalog(tmp_path, cache, capsys) -> None:
    """Two nodes (in one process, tests/inprocess.py). `dirichlet` skews the nodes by popularity
    tier (no genres), DP-SGD is on as by default, and the round's checkpoint then evaluates and
    recommends like a centrally trained one."""
    titles_dir = write_books_csv(tmp_path / "books", ("title",), num_users=48)  # the same books, fewer readers
    # A fixed noise multiplier: DP-SGD as by default, without calibrating sigma to the budget.
    run = run_federation(tiny_run_config(titles_dir, cache, tmp_path / "out", nodes=2, text_columns="title",
                                         partitioning="dirichlet", num_server_rounds=1, noise_multiplier=1.0), 2)  # fmt: skip
    assert run.code == 0, run.error
    run_dir = run.run_dir
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert [r["round"] for r in metrics["history"]] == [1]
    assert 0 <= metrics["test"]["ranking-full-ndcg@10"] <= 1
    checkpoint = run_dir / "round-001"
    model = load_checkpoint(checkpoint)
    assert model.genre_proj is None and model.year_emb is None
    data = ["--dataset", "csv", "--path", str(titles_dir)]
    assert main(["evaluate", "--checkpoint", str(checkpoint), *data, "--json", str(tmp_path / "m.json")]) == 0
    assert set(json.loads((tmp_path / "m.json").read_text())) == {"retrieval", "ranking"}
    capsys.readouterr()
    assert main(["recommend", "--checkpoint", str(checkpoint), "--user", "u1", *data, "-k", "5"]) == 0
    assert capsys.readouterr().out.count(" Saga, Book ") == 5
