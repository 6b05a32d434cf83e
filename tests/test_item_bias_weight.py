"""`item-bias-weight`: the per-item bias weighs more (or less) than the towers in every score the
model gives once trained, retrieval, ranking and explanations alike, and not in training."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from shared.config import ModelConfig
from shared.errors import FedrecError


@pytest.fixture()
def tiny(tmp_path):  # type: ignore[no-untyped-def]
    from conftest import make_tiny, write_csv

    from shared.config import DataConfig
    from shared.data.dataset import build_dataset
    from shared.data.readers import read_directory
    from shared.models.training import build_model

    d = write_csv(make_tiny(12, 15, 0), tmp_path / "d")
    dataset = build_dataset(read_directory(d), DataConfig(dataset="csv", data_path=str(d)))
    cfg = ModelConfig(dim=16, num_layers=1, num_heads=2, max_len=12, retrieve_top_n=10, use_item_bias=True)
    model = build_model(dataset, cfg, tmp_path / "cache").eval()
    with torch.no_grad():  # a bias that is not zero, as after training
        model.item_bias.weight.copy_(torch.randn(model.item_bias.weight.shape, generator=torch.Generator().manual_seed(0)))
    return dataset, model


def test_the_weight_multiplies_the_bias_when_scoring_and_never_in_training(tiny) -> None:
    _, model = tiny
    items = torch.arange(1, 6)
    learned = model.item_bias(items).squeeze(-1).detach()
    model.config["model"]["item_bias_weight"] = 3.0
    assert torch.allclose(model.bias(items), 3.0 * learned)
    model.train()
    assert torch.allclose(model.bias(items), learned)  # what DP-SGD's gradients see is unchanged
    model.eval()


def test_retrieval_ranking_serving_and_explanations_all_see_the_weight(tiny) -> None:
    from shared.models.batches import left_pad
    from shared.models.explain import Explainer
    from shared.models.scoring import ModelScorer

    dataset, model = tiny
    users = np.arange(dataset.num_users)
    learned = model.item_bias.weight[:, 0].detach().double().numpy()
    plain = ModelScorer(model, dataset)
    history, features = plain.inputs(users, "valid")
    states = plain.states(users, "valid")
    candidates = np.tile(np.arange(1, 6), (len(users), 1))
    before = plain.retrieval.score_all(users, "valid"), plain.rank(states, history, features, candidates)
    model.config["model"]["item_bias_weight"] = 2.5
    heavy = ModelScorer(model, dataset)
    after = heavy.retrieval.score_all(users, "valid"), heavy.rank(states, history, features, candidates)
    assert np.allclose(after[0][:, 1:] - before[0][:, 1:], 1.5 * learned[1:], atol=1e-4)
    assert np.allclose(after[1] - before[1], 1.5 * learned[candidates], atol=1e-4)
    # What is served is what is evaluated, and an explanation explains the served score.
    two_stage = heavy.two_stage.score_all(users[:4], "valid")
    for row, u in enumerate(users[:4]):
        served = [i for i, _ in heavy.recommend(dataset.history(int(u), "valid"), features[row], k=5)]
        assert served == list(np.argsort(-two_stage[row], kind="stable")[:5])
    h = dataset.history(0, "valid")
    (e,) = Explainer(model, heavy).explain(h, features[0], [3])
    padded = left_pad([h], heavy.max_len)
    assert e.score == pytest.approx(float(heavy.rank(heavy.encode(padded, features[:1]), padded, features[:1],
                                                     np.array([[3]]))[0, 0]), abs=1e-4)  # fmt: skip


@pytest.mark.parametrize("kwargs,match", [
    ({"item_bias_weight": 0.0, "use_item_bias": True}, "item-bias-weight must be a finite number > 0"),
    ({"item_bias_weight": float("inf"), "use_item_bias": True}, "item-bias-weight must be a finite number > 0"),
    ({"item_bias_weight": 2.0}, "item-bias-weight needs the per-item bias"),
])  # fmt: skip
def test_a_bad_weight_is_refused_with_the_key_name(kwargs, match) -> None:
    with pytest.raises(FedrecError, match=match):
        ModelConfig(**kwargs)
