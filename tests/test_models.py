"""The two-stage model on tiny generated data: it learns, it serves, it saves, it loads."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import make_tiny, write_csv

from shared.config import DataConfig, ModelConfig, TrainConfig
from shared.data.dataset import build_dataset
from shared.data.readers import read_directory
from shared.errors import FedrecError
from shared.models.checkpoint import check_catalog, load_checkpoint, save_checkpoint
from shared.models.recommend import parse_history, recommend_for_history, recommend_for_user
from shared.models.scoring import ModelScorer
from shared.models.text_encoder import cache_key, item_embeddings
from shared.models.training import build_model, evaluate_model, fit

SMALL = ModelConfig(dim=16, num_layers=1, num_heads=2, max_len=12, retrieve_top_n=10)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    d = write_csv(make_tiny(num_users=30, num_items=40, seed=5), tmp_path_factory.mktemp("m") / "d")
    return build_dataset(read_directory(d), DataConfig(dataset="csv", data_path=str(d)))


@pytest.fixture(scope="module")
def cache(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("cache")


@pytest.fixture(scope="module")
def trained(dataset, cache):
    torch.manual_seed(0)
    model = build_model(dataset, SMALL, cache)
    history = fit(model, dataset, TrainConfig(epochs=8, batch_size=8, lr=5e-3, patience=10, num_negatives=8))
    return model, history


def test_text_embeddings_are_normalised_and_cached(dataset, cache) -> None:
    emb = item_embeddings(dataset.item_text, cache)
    assert emb.shape == (dataset.num_items + 1, 384)
    assert np.allclose(np.linalg.norm(emb[1:], axis=1), 1.0, atol=1e-5)
    assert not emb[0].any()  # padding
    assert (cache / "embeddings" / f"{cache_key(dataset.item_text)}.npy").exists()
    # Similar texts are closer than unrelated ones: the pretrained encoder is really in use.
    space, starships, pie = item_embeddings(["A war among the stars, fought in space", "Starships battle in outer space",
                                             "Grandmother's apple pie recipe"], cache)  # fmt: skip
    assert space @ starships > space @ pie + 0.2


def test_training_loss_decreases(trained) -> None:
    _, history = trained
    losses = [r["loss"]["loss"] for r in history]
    assert losses[-1] < losses[0] * 0.9
    assert history[-1]["loss"]["ranking"] < history[0]["loss"]["ranking"]


def test_metrics_have_both_stages_and_protocols(trained, dataset) -> None:
    model, _ = trained
    metrics = evaluate_model(model, dataset, "test")
    assert set(metrics) == {"retrieval", "ranking"}
    for stage in metrics.values():
        assert set(stage) == {"full", "sampled"}
    assert 0 <= metrics["retrieval"]["full"]["recall@100"] <= 1


def test_recommendations_exclude_seen_items(trained, dataset) -> None:
    model, _ = trained
    for user in range(5):
        recs = recommend_for_user(model, dataset, dataset.user_ids[user], k=15)
        seen = {str(dataset.item_ids[i]) for i in dataset.sequence(user)}
        assert len(recs) == 15
        assert not seen & {r.item_id for r in recs}
        assert [r.score for r in recs[:10]] == sorted((r.score for r in recs[:10]), reverse=True)


def test_save_then_load_gives_identical_scores(trained, dataset, tmp_path: Path) -> None:
    model, _ = trained
    save_checkpoint(model, tmp_path / "ckpt", {"note": "test"})
    assert {p.name for p in (tmp_path / "ckpt").iterdir()} >= {"config.json", "model.safetensors", "metrics.json"}
    loaded = load_checkpoint(tmp_path / "ckpt")
    users = np.arange(dataset.num_users)
    a = ModelScorer(model, dataset).two_stage.score_all(users, "test")
    b = ModelScorer(loaded, dataset).two_stage.score_all(users, "test")
    assert np.array_equal(a, b)
    check_catalog(loaded, dataset)


def test_cold_user_history_path(trained, dataset) -> None:
    model, _ = trained
    history = [str(dataset.item_ids[i]) for i in (3, 7, 11)]
    recs = recommend_for_history(model, history, k=5)
    assert len(recs) == 5 and not set(history) & {r.item_id for r in recs}
    assert parse_history(",".join(history), model.config["catalog"]) == history
    with pytest.raises(FedrecError, match="unknown item 'nope'"):
        parse_history("3,nope", model.config["catalog"])


def test_history_ids_may_contain_commas() -> None:
    catalog = ["American President, The (1995)", "Heat (1995)"]
    assert parse_history("Heat (1995),American President, The (1995)", catalog) == [
        "Heat (1995)", "American President, The (1995)"]  # fmt: skip


def test_text_only_items_get_vectors_without_interactions(dataset, cache) -> None:
    model = build_model(dataset, ModelConfig(dim=16, num_layers=1, max_len=12, use_id_embedding=False), cache)
    items = torch.arange(1, dataset.num_items + 1)
    vecs = model.eval().item_vectors(items)
    assert model.item_id is None
    with torch.no_grad():  # an item's vector follows its text, and only its own
        model.text[1] = model.text[2]
    moved = (model.item_vectors(items) != vecs).any(dim=1)
    assert moved[0] and not moved[1:].any()


def test_unusable_checkpoints_are_refused(trained, dataset, tmp_path: Path) -> None:
    model, _ = trained
    with pytest.raises(FedrecError, match="no such directory"):
        load_checkpoint(tmp_path / "missing")
    save_checkpoint(model, tmp_path / "old")
    cfg = json.loads((tmp_path / "old" / "config.json").read_text())
    cfg["format_version"] = 0
    (tmp_path / "old" / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(FedrecError, match="checkpoint format 0 cannot be read"):
        load_checkpoint(tmp_path / "old")
    save_checkpoint(model, tmp_path / "bad")
    (tmp_path / "bad" / "model.safetensors").write_bytes(b"not safetensors")
    with pytest.raises(FedrecError, match="corrupt checkpoint"):
        load_checkpoint(tmp_path / "bad")
    (tmp_path / "bad" / "config.json").write_text("{")
    with pytest.raises(FedrecError, match="corrupt checkpoint config"):
        load_checkpoint(tmp_path / "bad")


def test_dataset_that_does_not_match_the_catalog_is_refused(trained, tmp_path: Path) -> None:
    model, _ = trained
    d = write_csv(make_tiny(num_users=10, num_items=25, seed=9), tmp_path / "other")
    other = build_dataset(read_directory(d), DataConfig(dataset="csv", data_path=str(d)))
    with pytest.raises(FedrecError, match="does not match the checkpoint's item catalog"):
        check_catalog(model, other)


@pytest.mark.parametrize("bad,match", [
    ({"use_text": False, "use_id_embedding": False}, "needs text, ID embeddings or both"),
    ({"dim": 10, "num_heads": 3}, "not divisible"),
    ({"dropout": 1.0}, "dropout must be in"),
])  # fmt: skip
def test_bad_model_config_is_refused(bad, match) -> None:
    with pytest.raises(FedrecError, match=match):
        ModelConfig(**bad)


def test_text_finetuned_model_saves_and_loads(dataset, cache, tmp_path: Path) -> None:
    model = build_model(dataset, ModelConfig(dim=16, num_layers=1, max_len=12, retrieve_top_n=10,
                                             text_finetune_layers=1), cache)  # fmt: skip
    save_checkpoint(model, tmp_path / "ft")
    loaded = load_checkpoint(tmp_path / "ft")
    users = np.arange(dataset.num_users)
    a = ModelScorer(model, dataset).retrieval.score_all(users, "test")
    b = ModelScorer(loaded, dataset).retrieval.score_all(users, "test")
    assert np.allclose(a, b, atol=1e-5)


def test_left_padding_does_not_change_the_user_states(trained) -> None:
    """The encoder skips the all-padding columns: a row's states must not depend on how long
    the other rows of its batch are (the column trim) or on the padding itself."""
    model, _ = trained
    model.eval()
    long = torch.tensor([[0, 0, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12]])
    short = torch.tensor([[0] * 9 + [13, 14, 15]])
    features = torch.zeros((1, len(model.user_features)), dtype=torch.long)
    with torch.no_grad():
        alone, _ = model.encode_history(short, features)
        together, _ = model.encode_history(torch.cat([long, short]), features.repeat(2, 1))
    assert torch.allclose(alone[0, -3:], together[1, -3:], atol=1e-5)
    assert not alone[0, :-3].any()  # padding positions carry no state


def test_a_rows_loss_does_not_depend_on_the_other_rows_lengths(trained) -> None:
    """The item tower reads only the columns from the batch's first used one on: a row's joint
    loss is the same alone as beside a longer row, whose columns it then pads."""
    model, _ = trained
    model.eval()

    def batch(history: list[int], targets: list[int]) -> dict[str, torch.Tensor]:
        return {"history": torch.tensor([history]), "targets": torch.tensor([targets]),
                "negatives": torch.tensor([[1, 2, 17, 18, 19]]),
                "features": torch.zeros((1, len(model.user_features)), dtype=torch.long),
                "rank_pos": torch.tensor([[11, 10]]), "rank_valid": torch.tensor([[True, True]]),
                "rank_items": torch.tensor([[[16, 1, 2, 20], [15, 3, 4, 21]]])}  # fmt: skip

    long = batch([0, 0, *range(3, 13)], [0, 0, *range(4, 14)])
    short = batch([0] * 9 + [13, 14, 15], [0] * 9 + [14, 15, 16])
    with torch.no_grad():
        alone = model(short)["loss"]
        together = model({k: torch.cat([long[k], short[k]]) for k in short})["loss"]
    assert torch.allclose(alone[0], together[1], atol=1e-5)


@pytest.mark.parametrize("text,ids", [(True, True), (True, False), (False, True)])
def test_catalog_vectors_are_every_items_vector(dataset, cache, text: bool, ids: bool) -> None:
    model = build_model(dataset, ModelConfig(**{**SMALL.__dict__, "use_text": text, "use_id_embedding": ids}), cache)
    with torch.no_grad():
        expected = model.item_vectors(torch.arange(model.text.shape[0]))
    assert torch.allclose(model.catalog_vectors(), expected, atol=1e-6)


def test_the_search_catalog_is_reused_only_while_the_item_tower_is_unchanged(dataset, cache) -> None:
    model = build_model(dataset, SMALL, cache).eval()
    first = model.search_catalog()
    assert model.search_catalog() is first  # the next client of the round, same global weights
    assert model.train().search_catalog() is first  # an item tower without dropout: same vectors
    model.eval()
    with torch.no_grad():
        model.text_proj.weight.mul_(1.5)  # a local step, or the next round's weights
    moved = model.search_catalog()
    assert not torch.allclose(moved, first)
    assert torch.equal(moved, model.catalog_vectors())


def test_a_text_finetuned_models_search_catalog_is_its_eval_mode_catalog(dataset, cache) -> None:
    config = ModelConfig(dim=16, num_layers=1, max_len=12, dropout=0.5, text_finetune_layers=1)
    model = build_model(dataset, config, cache).train()
    searched = model.search_catalog()
    assert model.training and all(m.training for m in model.modules())  # still training after
    with torch.no_grad():
        assert torch.equal(searched, model.eval().catalog_vectors())  # no dropout sample


def ranking_batch(dataset, model, seed: int = 0) -> dict[str, torch.Tensor]:
    from shared.models.batches import base_batch, training_sequences

    data = training_sequences(dataset, np.arange(dataset.num_users), SMALL.max_len)
    cfg = TrainConfig(num_negatives=5, rank_positions=3, rank_hard_negatives=2, rank_random_negatives=4)
    return base_batch(data, np.arange(6), dataset.num_items, cfg, np.random.default_rng(seed))


def test_hard_negatives_are_the_querys_top_items_outside_its_sequence(dataset, cache, monkeypatch) -> None:
    import shared.models.recommender as recommender

    monkeypatch.setattr(recommender, "HARD_NEGATIVE_POOL", 2)  # a pool of two: both are drawn
    model = build_model(dataset, SMALL, cache).eval()
    batch = ranking_batch(dataset, model)
    batch["rank_pick"] = torch.tensor([0, 1]).expand(*batch["rank_pos"].shape, 2)
    queries = torch.randn(*batch["rank_pos"].shape, SMALL.dim)
    candidates = model.ranking_candidates(queries, batch)
    assert candidates.shape == (*batch["rank_pos"].shape, 1 + 2 + 4)
    assert torch.equal(candidates[..., 0], torch.gather(batch["targets"], 1, batch["rank_pos"]))
    assert torch.equal(candidates[..., 3:], batch["rank_random"])
    catalog = model.catalog_vectors().detach()
    for b, r in np.ndindex(*batch["rank_pos"].shape):
        seen = set(batch["history"][b].tolist()) | set(batch["targets"][b].tolist()) | {0}
        ranked = [int(i) for i in (catalog @ queries[b, r]).argsort(descending=True) if int(i) not in seen]
        assert candidates[b, r, 1:3].tolist() == ranked[:2]


def test_the_forward_picks_the_rankers_candidates_from_its_own_states(trained, dataset) -> None:
    model, _ = trained
    model.eval()  # no dropout: the forward's states are encode_history's
    batch = ranking_batch(dataset, model)
    with torch.no_grad():
        states, _ = model.encode_history(batch["history"], batch["features"])
        queries = torch.gather(states, 1, batch["rank_pos"][..., None].expand(-1, -1, SMALL.dim))
        given = model({**batch, "rank_items": model.ranking_candidates(queries, batch)})["loss"]
        picked = model(batch)["loss"]
        other = dict(batch, rank_items=model.ranking_candidates(queries, ranking_batch(dataset, model, seed=1)))
        assert torch.equal(picked, given)
        assert not torch.equal(picked, model(other)["loss"])  # the candidates do matter


def test_train_and_eval_set_every_modules_flag_as_nn_module_does(dataset, cache) -> None:
    model, reference = build_model(dataset, SMALL, cache), build_model(dataset, SMALL, cache)
    for mode in (False, True, False):
        model.train(mode)
        torch.nn.Module.train(reference, mode)  # the recursive walk Recommender.train replaces
        assert [m.training for m in model.modules()] == [m.training for m in reference.modules()]
    assert all(m.training for m in model.train().modules())
    assert not any(m.training for m in model.eval().modules())


def test_trainable_parameters_are_listed_once_in_the_models_order(dataset, cache) -> None:
    from opacus import GradSampleModule

    from shared.models.params import trainable_parameters

    model = build_model(dataset, SMALL, cache)
    listed = model.trainable_parameters()
    assert listed == [p for p in model.parameters() if p.requires_grad]
    assert model.trainable_parameters() is listed
    wrapped = GradSampleModule(model)
    try:
        assert trainable_parameters(wrapped) == listed  # what Opacus steps is what travels
    finally:
        wrapped._close()


@pytest.mark.parametrize("optimizer", ["adamw", "sgd"])
def test_a_reset_optimizer_steps_exactly_as_a_fresh_one(dataset, cache, optimizer: str) -> None:
    from shared.models.params import flat_trainable, load_flat
    from shared.models.training import make_optimizer, reset_optimizer

    cfg = TrainConfig(optimizer=optimizer, lr=1e-2)
    model = build_model(dataset, SMALL, cache)
    start = flat_trainable(model)
    params = model.trainable_parameters()

    def one_step(opt: torch.optim.Optimizer, grads: list[torch.Tensor]) -> torch.Tensor:
        load_flat(model, start)
        for p, g in zip(params, grads):
            p.grad = g.clone()
        opt.step()
        return flat_trainable(model)

    gen = torch.Generator().manual_seed(0)
    first, second = ([torch.randn(p.shape, generator=gen) for p in params] for _ in range(2))
    reused = make_optimizer(model, cfg)
    one_step(reused, first)  # leaves moments and a step count behind
    reset_optimizer(reused)
    assert torch.equal(one_step(reused, second), one_step(make_optimizer(model, cfg), second))


def test_the_item_bias_learns_popularity_and_scores_with_it(dataset, cache) -> None:
    """A text-only model with the bias: after training, the most consumed items carry the larger
    biases, and the scorer's retrieval scores include them (a model whose bias is moved by a
    constant for one item ranks that item by exactly that much more)."""
    torch.manual_seed(0)
    config = ModelConfig(dim=16, num_layers=1, num_heads=2, max_len=12, retrieve_top_n=10,
                         use_id_embedding=False, use_item_bias=True)  # fmt: skip
    model = build_model(dataset, config, cache)
    fit(model, dataset, TrainConfig(epochs=6, batch_size=8, lr=1e-2, patience=10, num_negatives=8))
    counts = np.bincount(dataset.items[dataset.train_mask], minlength=dataset.num_items + 1)[1:]
    bias = model.item_bias.weight.detach()[1:, 0].numpy()
    top, bottom = np.argsort(-counts)[:5], np.argsort(counts)[:5]
    assert bias[top].mean() > bias[bottom].mean()
    scorer = ModelScorer(model, dataset)
    states = scorer.states(np.arange(3), "test")
    before = scorer.retrieval_scores(states)
    with torch.no_grad():
        model.item_bias.weight[7] += 2.5
    after = ModelScorer(model, dataset).retrieval_scores(states)
    assert np.allclose(after[:, 7] - before[:, 7], 2.5, atol=1e-5)
    assert np.allclose(np.delete(after, 7, axis=1)[:, 1:], np.delete(before, 7, axis=1)[:, 1:], atol=1e-5)


def test_loading_the_text_model_prints_no_library_report(capfd) -> None:
    """Every node loads MiniLM; transformers' load report (the pooler left out on purpose) and
    its progress bar used to fill each run's log."""
    from shared.models.text_encoder import load_text_model

    load_text_model()
    out = capfd.readouterr()
    assert "LOAD REPORT" not in out.err + out.out and "Loading weights" not in out.err + out.out


@pytest.mark.parametrize("loss", ["softmax", "bce"])
def test_the_retrieval_loss_is_the_one_configured(dataset, cache, loss: str) -> None:
    """Recomputed by hand from the model's own states and item vectors: sampled softmax is the
    cross-entropy of the target against the sequence's negatives (a draw equal to the target
    left out); BCE scores the target and the mean negative on their own."""
    from dataclasses import replace

    torch.manual_seed(0)
    model = build_model(dataset, replace(SMALL, retrieval_loss=loss, use_item_bias=True), cache).eval()
    torch.nn.init.normal_(model.item_bias.weight)
    batch = ranking_batch(dataset, model)
    batch["negatives"][0, 0] = batch["targets"][0, -1]  # one collision to be masked
    with torch.no_grad():
        got = model(batch)["retrieval"]
        states, _ = model.encode_history(batch["history"], batch["features"])
        expected = []
        for b in range(len(states)):
            per_position = []
            for t in np.flatnonzero(batch["targets"][b] > 0):
                target = batch["targets"][b, t]
                negs = batch["negatives"][b][batch["negatives"][b] != target]
                items = torch.cat([target[None], negs])
                logits = model.item_vectors(items) @ states[b, t] * model.scale + model.bias(items)
                if loss == "softmax":
                    per_position.append(-torch.log_softmax(logits, 0)[0])
                else:
                    per_position.append(torch.nn.functional.softplus(-logits[0])
                                        + torch.nn.functional.softplus(logits[1:]).mean())  # fmt: skip
            expected.append(torch.stack(per_position).mean())
    assert torch.allclose(got, torch.stack(expected), atol=1e-5)
