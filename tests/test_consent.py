"""User authorization: who consented, the server's pretraining on them, and starting a federation
from that checkpoint."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import make_tiny, tiny_run_config, write_csv

from cli import main
from shared.config import DataConfig, ModelConfig
from shared.data.consent import consented_users
from shared.data.dataset import load_dataset
from shared.errors import FedrecError
from shared.models.checkpoint import load_checkpoint, load_pretrained
from shared.models.params import flat_trainable
from shared.models.training import build_model

SMALL = ModelConfig(dim=16, num_layers=1, num_heads=2, max_len=12, retrieve_top_n=10, use_id_embedding=False)


def with_consent(d: Path, flags: dict[str, str]) -> Path:
    users = d / "users.csv"
    rows = users.read_text().splitlines()
    header = rows[0] + ",consent"
    body = [f"{r},{flags.get(r.split(',')[0], '0')}" for r in rows[1:]]
    users.write_text("\n".join([header, *body]) + "\n")
    return d


def test_the_consent_column_decides_and_a_bad_value_is_named(tmp_path: Path) -> None:
    d = with_consent(write_csv(make_tiny(), tmp_path / "csv"), {"1": "yes", "2": "1", "3": "true"})
    dataset = load_dataset(DataConfig(dataset="csv", data_path=str(d)))
    assert [dataset.user_ids[u] for u in consented_users(dataset, 0.9, 42)] == ["1", "2", "3"]
    with_consent(write_csv(make_tiny(), tmp_path / "bad"), {"4": "maybe"})
    with pytest.raises(FedrecError, match="users.*consent 'maybe'"):
        load_dataset(DataConfig(dataset="csv", data_path=str(tmp_path / "bad")))


def test_a_consent_fraction_is_drawn_with_the_seed(tmp_path: Path) -> None:
    from conftest import Tiny  # noqa: F401  (tiny data has no consent column)

    dataset = load_dataset(DataConfig(dataset="csv", data_path=str(write_csv(make_tiny(num_users=400), tmp_path / "c"))))
    a, b = consented_users(dataset, 0.25, 42), consented_users(dataset, 0.25, 42)
    assert np.array_equal(a, b) and 60 < len(a) < 140
    assert not np.array_equal(a, consented_users(dataset, 0.25, 7))
    assert len(consented_users(dataset, 0.0, 42)) == 0


def test_train_consented_only_then_a_federation_starts_from_it(tmp_path: Path, capsys) -> None:
    d = write_csv(make_tiny(num_users=20), tmp_path / "csv")
    out = tmp_path / "pre"
    assert main(["train", "--dataset", "csv", "--path", str(d), "--cache-dir", str(tmp_path / "cache"),
                 "--consent-fraction", "0.5", "--consented-only", "--epochs", "1", "--dim", "16",
                 "--num-layers", "1", "--max-len", "12", "--retrieve-top-n", "10", "--no-id-embedding",
                 "--output", str(out)]) == 0  # fmt: skip
    assert "users who consented" in capsys.readouterr().out
    dataset = load_dataset(DataConfig(dataset="csv", data_path=str(d)))
    fresh = build_model(dataset, SMALL, tmp_path / "cache")
    load_pretrained(out, fresh)
    assert torch.equal(flat_trainable(fresh), flat_trainable(load_checkpoint(out)))
    other = build_model(dataset, ModelConfig(dim=32, num_layers=1, num_heads=2, max_len=12, use_id_embedding=False),
                        tmp_path / "cache")  # fmt: skip
    with pytest.raises(FedrecError, match="pretrained .*dim is 16, the run's is 32"):
        load_pretrained(out, other)
    assert main(["train", "--dataset", "csv", "--path", str(d), "--consented-only", "--output", str(tmp_path / "x")]) == 2


def test_evaluate_on_the_users_who_did_not_consent(tmp_path: Path, capsys) -> None:
    d = with_consent(write_csv(make_tiny(num_users=20), tmp_path / "csv"), {str(u): "1" for u in range(1, 6)})
    data = ["--dataset", "csv", "--path", str(d)]
    for users, count in (("all", 20), ("consented", 5), ("non-consented", 15)):
        assert main(["evaluate", "--baseline", "popularity", *data, "--users", users]) == 0
        assert f"{count:,} users: {users}" in capsys.readouterr().out
    plain = write_csv(make_tiny(num_users=20), tmp_path / "plain")
    assert main(["evaluate", "--baseline", "popularity", "--dataset", "csv", "--path", str(plain),
                 "--users", "consented"]) == 2  # fmt: skip


def test_finetune_head_items_and_bias_each_train_a_smaller_set(tmp_path: Path) -> None:
    """On top of a pretrained model, finetune=head freezes the user tower's attention and
    feed-forward weights: they are neither trained nor sent, and every node takes them from the
    pretrained file, so a node's model equals the server's."""
    from client.model import local_model
    from shared.config import FederationConfig  # noqa: F401  (pretrained is a federation key)

    d = write_csv(make_tiny(num_users=20), tmp_path / "csv")
    dataset = load_dataset(DataConfig(dataset="csv", data_path=str(d)))
    full = build_model(dataset, SMALL, tmp_path / "cache")
    head = build_model(dataset, ModelConfig(**{**SMALL.__dict__, "finetune": "head"}), tmp_path / "cache")
    trained = {n for n, p in head.named_parameters() if p.requires_grad}
    assert 0 < sum(p.numel() for p in head.trainable_parameters()) < 0.8 * sum(p.numel() for p in full.trainable_parameters())
    assert "text_proj.weight" in trained and "rank_mlp.0.weight" in trained
    assert not any("attention.self.query.weight" in n or "intermediate.dense.weight" in n for n in trained)
    assert any("LayerNorm" in n for n in trained)
    items = build_model(dataset, ModelConfig(**{**SMALL.__dict__, "finetune": "items"}), tmp_path / "cache")
    item_trained = {n for n, p in items.named_parameters() if p.requires_grad}
    assert item_trained < trained and "text_proj.weight" in item_trained and "rank_mlp.0.bias" in item_trained
    assert not any(n.startswith("rank_mlp") and n.endswith(".weight") for n in item_trained)
    bias = build_model(dataset, ModelConfig(**{**SMALL.__dict__, "finetune": "bias"}), tmp_path / "cache")
    bias_trained = {n for n, p in bias.named_parameters() if p.requires_grad}
    assert bias_trained < item_trained and "text_proj.bias" in bias_trained
    assert all(n.endswith(".bias") or "LayerNorm" in n or n.startswith(("item_bias", "item_norm")) for n in bias_trained)
    from shared.models.checkpoint import save_checkpoint

    with torch.no_grad():
        for p in full.parameters():
            p.add_(0.01)
    save_checkpoint(full, tmp_path / "pre")
    run = tiny_run_config(d, tmp_path / "cache", use_id_embedding=False, finetune="head", pretrained=str(tmp_path / "pre"))
    node = local_model(run, dataset)
    for (name, a), b in zip(node.state_dict().items(), full.state_dict().values()):
        assert torch.equal(a, b), name


def test_a_node_evaluates_the_users_who_did_not_consent_when_asked(tmp_path: Path) -> None:
    from test_privacy import node, run_config, train_message

    from client.data import local_data
    from client.model import local_model
    from client.handlers import evaluate
    from client.policy import NodePolicy, write_policy

    d = write_csv(make_tiny(num_users=40), tmp_path / "csv")
    cfg = {**run_config(d, tmp_path / "cache", tmp_path / "out"), "consent-fraction": 0.5, "min-eval-users": 1}
    local = local_data(cfg, {"partition-id": 0, "num-partitions": 2})
    model = local_model(cfg, local.dataset)
    msg = train_message(model, 1)
    msg.content["config"]["stage"] = "test"
    write_policy(tmp_path / "s", NodePolicy(min_eval_users=1))  # the node's own floor, below its 20 users
    everyone = evaluate(msg, node(cfg, tmp_path / "s"))
    msg.content["config"]["users"] = "non-consented"
    others = evaluate(msg, node(cfg, tmp_path / "s"))
    expected = len(np.setdiff1d(local.users, consented_users(local.dataset, 0.5, 42)))
    assert everyone.content["metrics"]["num-examples"] == len(local.users) > expected
    assert others.content["metrics"]["num-examples"] == expected > 0


def test_a_short_private_run_from_consented_pretraining_beats_popularity(tmp_path: Path, capsys) -> None:
    """The main job's recipe in miniature (#24), on generated data with a planted signal (the
    next book is the next of the same series, told by its title): pretrain on the consented
    users, then one DP-SGD round of the head on the others' nodes. On the users who did not
    consent, the private model must beat the most popular books, which know nothing of series."""
    from conftest import write_books_csv
    from inprocess import run_federation

    d = write_books_csv(tmp_path / "books", ("title",))
    cache, common = tmp_path / "cache", ["--dataset", "csv", "--path", str(d)]
    consent = ["--consent-fraction", "0.3"]
    assert main(["train", *common, "--cache-dir", str(cache), *consent, "--consented-only", "--epochs", "2",
                 "--dim", "16", "--num-layers", "1", "--max-len", "12", "--retrieve-top-n", "10",
                 "--no-id-embedding", "--item-bias", "--lr", "0.01", "--dropout", "0",
                 "--output", str(tmp_path / "pre")]) == 0  # fmt: skip
    assert main(["evaluate", "--baseline", "popularity", *common, *consent, "--users", "non-consented",
                 "--json", str(tmp_path / "pop.json")]) == 0  # fmt: skip
    run = run_federation(tiny_run_config(d, cache, tmp_path / "out", nodes=2, text_columns="title",
                                         num_server_rounds=1, consent_fraction=0.3, dropout=0.0,
                                         pretrained=str(tmp_path / "pre"), use_item_bias=True, finetune="head",
                                         optimizer="sgd", lr=0.05, target_epsilon=8.0), 2)  # fmt: skip
    assert run.code == 0, run.error
    private = json.loads((run.run_dir / "metrics.json").read_text())["test_non_consented"]
    popularity = json.loads((tmp_path / "pop.json").read_text())["full"]
    assert private["ranking-full-hr@10"] > popularity["hr@10"] + 0.2, (private, popularity)
    assert private["ranking-full-ndcg@10"] > 2 * popularity["ndcg@10"], (private, popularity)
