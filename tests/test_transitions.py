"""The consented users' co-occurrence counts (shared/models/transitions.py): counted from training
histories only, added to every score after the user's last items, kept with the checkpoint, and
chosen on validation items."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import Tiny, make_tiny, write_csv

from shared.config import DataConfig, ModelConfig
from shared.data.dataset import build_dataset
from shared.data.readers import read_directory
from shared.models.checkpoint import load_checkpoint, load_pretrained, save_checkpoint
from shared.models.scoring import ModelScorer
from shared.models.training import build_model, evaluate_model
from shared.models.transitions import Transitions, count_transitions, tune

SMALL = ModelConfig(dim=16, num_layers=1, num_heads=2, max_len=12, retrieve_top_n=10)


def walks(num_users: int = 40, num_items: int = 30, seed: int = 0) -> Tiny:
    """Every user walks the catalog in order from a random start: item i is followed by i + 1."""
    tiny = make_tiny(num_users, num_items, seed)
    rng = np.random.default_rng(seed)
    rows = []
    for u in tiny.users:
        start = int(rng.integers(0, num_items))
        for step in range(int(rng.integers(6, 10))):
            rows.append((u, tiny.items[(start + step) % num_items], 4, 1_000 + step))
    tiny.rows = rows
    return tiny


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    d = write_csv(walks(), tmp_path_factory.mktemp("t") / "d")
    return build_dataset(read_directory(d), DataConfig(dataset="csv", data_path=str(d)))


@pytest.fixture(scope="module")
def model(dataset, tmp_path_factory):
    torch.manual_seed(0)
    return build_model(dataset, SMALL, tmp_path_factory.mktemp("cache")).eval()


def test_counts_come_from_the_given_sequences_weighted_by_gap_and_skip_padding() -> None:
    counted = count_transitions([np.array([1, 2, 3]), np.array([1, 2]), np.array([0, 4]), np.array([5])], 6,
                                window=2, decay=0.5)  # fmt: skip
    table = counted.table.toarray()
    assert table[1, 2] == 2 and table[2, 3] == 1  # next items: weight 1 each
    assert table[1, 3] == 0.5  # two items later: decay^1
    assert table.sum() == 3.5  # (0, 4) is padding, [5] has no pair
    only_next = count_transitions([np.array([1, 2, 3])], 6, window=1).table.toarray()
    assert only_next[1, 3] == 0 and only_next.sum() == 2


def test_the_last_items_vote_with_decaying_weights() -> None:
    counted = count_transitions([np.array([1, 2]), np.array([1, 2]), np.array([3, 4])], 6, window=1)
    t = Transitions(counted.table, weight=2.0, smoothing=0.5, recent=2, recent_decay=0.25)
    rows = t.rows(np.array([[0, 1], [1, 3], [3, 1], [0, 6], [0, 0]]))
    assert rows[0, 2] == pytest.approx(2.0 * np.log1p(2 / 0.5)) and rows[0, 4] == 0
    # The item before the last votes a quarter as much as the last one.
    assert rows[1, 2] == pytest.approx(0.25 * 2.0 * np.log1p(2 / 0.5))
    assert rows[1, 4] == pytest.approx(2.0 * np.log1p(1 / 0.5))
    assert rows[2, 4] == pytest.approx(0.25 * rows[1, 4]) and rows[2, 2] == pytest.approx(rows[0, 2])
    assert not rows[3:].any()  # an item never followed, or no history: no term
    assert np.allclose(t.rows(np.array([1, 3])), t.rows(np.array([[1], [3]])))  # (B,): the last item alone
    # Explanations: the history items' shares sum to the term, each item its own.
    shares = t.shares(np.array([5, 1, 3]), 4)
    assert shares[0] == 0 and shares.sum() == pytest.approx(t.rows(np.array([[5, 1, 3]]))[0, 4])
    assert shares[1] == 0 and shares[2] == pytest.approx(rows[1, 4])


def test_the_term_is_added_to_every_score_after_the_last_item(dataset, model) -> None:
    users = np.arange(dataset.num_users)
    plain = ModelScorer(model, dataset).retrieval.score_all(users, "valid")
    model.transitions = count_transitions([dataset.train_sequence(int(u)) for u in users], dataset.num_items)
    try:
        scorer = ModelScorer(model, dataset)
        with_term = scorer.retrieval.score_all(users, "valid")
        histories = scorer.inputs(users, "valid")[0]  # left-padded, as the model reads them
        expected = model.transitions.rows(histories)
        assert (model.transitions.recent > 1) and not np.allclose(expected, model.transitions.rows(histories[:, -1]))
        assert np.allclose(with_term[:, 1:] - plain[:, 1:], expected[:, 1:], atol=1e-5)
        # The ranker is residual on retrieval: its logits carry the same term, and the served
        # order (recommend) is the evaluated one (two_stage).
        two_stage = scorer.two_stage.score_all(users[:5], "valid")
        for row, u in enumerate(users[:5]):
            features = scorer.inputs(users[row : row + 1], "valid")[1][0]
            served = [i for i, _ in scorer.recommend(dataset.history(int(u), "valid"), features, k=5)]
            assert served == list(np.argsort(-two_stage[row], kind="stable")[:5])
    finally:
        model.transitions = None


def test_the_table_travels_with_the_checkpoint_and_the_pretrained_start(dataset, model, tmp_path: Path) -> None:
    counted = count_transitions([dataset.train_sequence(u) for u in range(5)], dataset.num_items)
    model.transitions = counted.with_constants(0.5, 0.1)
    try:
        save_checkpoint(model, tmp_path / "ckpt")
    finally:
        model.transitions = None
    loaded = load_checkpoint(tmp_path / "ckpt")
    assert (loaded.transitions.weight, loaded.transitions.smoothing) == (0.5, 0.1)
    assert (loaded.transitions.table != counted.table).nnz == 0
    fresh = build_model(dataset, SMALL, tmp_path / "cache")
    load_pretrained(tmp_path / "ckpt", fresh)  # a federation's `pretrained`
    assert fresh.transitions is not None and fresh.transitions.weight == 0.5
    assert Transitions.load(tmp_path) is None  # a directory without the file: no table


def test_tuning_keeps_the_table_only_when_validation_items_say_it_helps(dataset, model) -> None:
    """On walks the next item is the last one plus one: the counts find it, an untrained model
    does not. An empty table cannot help, and is not kept."""
    users = np.arange(dataset.num_users)
    before = evaluate_model(model, dataset, "valid")["ranking"]["full"]["ndcg@10"]
    counted = count_transitions([dataset.train_sequence(int(u)) for u in users], dataset.num_items)
    chosen, rows = tune(model, dataset, users, counted)
    assert chosen is not None and model.transitions is None  # tuning leaves the model as it was
    model.transitions = chosen
    try:
        after = evaluate_model(model, dataset, "valid")["ranking"]["full"]["ndcg@10"]
    finally:
        model.transitions = None
    assert after > before + 0.3 and len(rows) > 1
    empty = count_transitions([], dataset.num_items)
    assert tune(model, dataset, users, empty)[0] is None


def test_tuning_tries_each_table_beside_the_text_term_and_never_beside_an_older_table(dataset, model) -> None:
    """A model that scores with the public text's neighbours keeps them on while its table is
    tuned; a table it already holds is replaced, not added to."""
    users = np.arange(dataset.num_users)
    counted = count_transitions([dataset.train_sequence(int(u)) for u in users], dataset.num_items)
    model.config["model"]["text_neighbours"] = 1.0
    try:
        text_only = evaluate_model(model, dataset, "valid")["ranking"]["full"]["ndcg@10"]
        model.transitions = counted.with_constants(4.0, 0.2)  # an older table, weighing heavily
        _, rows = tune(model, dataset, users, counted)
    finally:
        model.config["model"]["text_neighbours"] = 0.0
        model.transitions = None
    assert rows[0]["weight"] == 0.0 and rows[0]["valid-full-ndcg@10"] == pytest.approx(text_only, abs=1e-9)


def test_fedrec_train_counts_the_consented_users_transitions(tmp_path: Path, capsys) -> None:
    """`fedrec train --consented-only --transitions`: the table holds the consented users' pairs
    only, and the checkpoint records the settings its validation items chose between."""
    import json

    from cli import main
    from shared.data.consent import consented_users
    from shared.data.dataset import load_dataset

    d = write_csv(walks(num_users=30), tmp_path / "csv")
    out = tmp_path / "pre"
    assert main(["train", "--dataset", "csv", "--path", str(d), "--cache-dir", str(tmp_path / "cache"),
                 "--consent-fraction", "0.5", "--consented-only", "--epochs", "1", "--dim", "16",
                 "--num-layers", "1", "--max-len", "12", "--retrieve-top-n", "10", "--no-id-embedding",
                 "--transitions", "--output", str(out)]) == 0  # fmt: skip
    assert "transitions: weight" in capsys.readouterr().out
    dataset = load_dataset(DataConfig(dataset="csv", data_path=str(d)))
    consented = consented_users(dataset, 0.5, 42)  # fedrec train's default seed draws the consent
    expected = count_transitions([dataset.train_sequence(int(u)) for u in consented], dataset.num_items)
    saved = Transitions.load(out)
    assert saved is not None and (saved.table != expected.table).nnz == 0
    tried = json.loads((out / "metrics.json").read_text())["transitions"]
    assert tried[0]["weight"] == 0.0 and any(r["weight"] == saved.weight and r["smoothing"] == saved.smoothing for r in tried)
