"""The service's fast path: the catalog ranker is the model's ranker, and a batch of requests
gets what each would alone."""

from __future__ import annotations

from dataclasses import asdict

import numpy as np
import pytest
import torch

from shared.config import ModelConfig
from shared.models.recommender import FORMAT_VERSION, TEXT_DIM, Recommender
from shared.models.scoring import RERANKED_OFFSET, CatalogRanker, ModelScorer

ITEMS = 40
CONFIG = ModelConfig(dim=16, num_layers=1, num_heads=2, max_len=12, retrieve_top_n=10)


def random_model(genres: int = 5, year: bool = True, seed: int = 0) -> Recommender:
    """An eval-mode model whose every weight is random: the ranker MLP's zero-initialised output
    layer would otherwise hide any mistake in the layers before it."""
    torch.manual_seed(seed)
    model = Recommender({"format_version": FORMAT_VERSION, "model": asdict(CONFIG), "num_items": ITEMS,
                         "num_genres": genres, "use_year": year, "year_first": 1980, "year_buckets": 6,
                         "feature_sizes": {"age": 4, "gender": 3}, "dataset": "random",
                         "catalog": [f"i{n}" for n in range(1, ITEMS + 1)],
                         "titles": [f"Item {n}" for n in range(1, ITEMS + 1)]})  # fmt: skip
    text = torch.nn.functional.normalize(torch.randn(ITEMS + 1, TEXT_DIM), dim=-1)
    model.set_item_side(text, (torch.rand(ITEMS + 1, max(genres, 1)) < 0.3).float()[:, :genres],
                        torch.randint(1980, 1986, (ITEMS + 1,)))  # fmt: skip
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0.0, 0.3)
    return model.eval()


@pytest.mark.parametrize("genres,year,table", [(5, True, True), (5, True, False), (0, False, True), (0, True, False)])
def test_the_catalog_ranker_gives_the_models_ranker_logits(genres: int, year: bool, table: bool, monkeypatch) -> None:
    if not table:  # the million-item catalog's path: the per-item part computed per request
        monkeypatch.setattr(CatalogRanker, "TABLE_MAX_ITEMS", 4)
    model = random_model(genres, year)
    scorer = ModelScorer(model)
    assert (scorer.ranker.table is not None) == table
    g = torch.Generator().manual_seed(1)
    states, user = torch.randn(3, CONFIG.dim, generator=g), torch.randn(3, CONFIG.dim, generator=g)
    history = torch.randint(1, ITEMS + 1, (3, 7), generator=g)
    history[0, :4] = 0  # left padding
    history[2] = 0  # no history at all: the attention reads nothing
    candidates = torch.randint(1, ITEMS + 1, (3, 9), generator=g)
    with torch.no_grad():
        expected = model.rank_logits(states[:, None], model.item_vectors(history), (history > 0)[:, None],
                                     user, candidates[:, None])[:, 0]  # fmt: skip
        got = scorer.ranker(states, history, user, candidates)
    assert expected.abs().max() > 1  # the MLP moves the logits: the comparison means something
    assert torch.allclose(got, expected, atol=1e-4)


def reference(scorer: ModelScorer, history: np.ndarray, features: np.ndarray, k: int) -> list[tuple[int, float]]:
    """The top-k of recommend_scores' full row, the order the evaluation harness ranks by."""
    padded = np.zeros((1, CONFIG.max_len), dtype=np.int64)
    tail = history[-CONFIG.max_len :]
    padded[0, CONFIG.max_len - len(tail) :] = tail
    seen = np.zeros((1, ITEMS + 1), dtype=bool)
    seen[0, history] = True
    used = padded[:, CONFIG.max_len - max(len(tail), 1) :]
    row = scorer.recommend_scores(scorer.encode(padded, features[None]), used, features[None], seen)[0]
    top = np.lexsort((np.arange(len(row)), -row))[:k]
    top = top[np.isfinite(row[top])]
    return [(int(i), float(s - RERANKED_OFFSET if s > RERANKED_OFFSET / 2 else s)) for i, s in zip(top, row[top])]


def test_a_batch_recommends_what_each_history_gets_alone_in_the_harness_order() -> None:
    scorer = ModelScorer(random_model())
    rng = np.random.default_rng(0)
    histories = [rng.choice(np.arange(1, ITEMS + 1), size=n, replace=False) for n in (3, 12, 20, 0, 35)]
    features = rng.integers(0, 3, (len(histories), 2))
    ks = [5, 10, 25, 40, 40]  # beyond N=10: the rest in retrieval order; 40 with 35 seen: 5 left
    together = scorer.recommend_many(histories, features, ks)
    for history, feats, k, got in zip(histories, features, ks, together):
        alone = scorer.recommend(history, feats, k)
        want = reference(scorer, history, feats, k)
        assert [i for i, _ in got] == [i for i, _ in alone] == [i for i, _ in want]
        assert np.allclose([s for _, s in got], [s for _, s in want], atol=1e-4)
        assert not set(history.tolist()) & {i for i, _ in got}  # seen items left out
    assert len(together[-1]) == ITEMS - 35
