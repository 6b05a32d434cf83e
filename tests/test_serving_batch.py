"""The service's fast path: the catalog ranker is the model's ranker, a batch of requests gets
what each would alone, and the micro-batcher answers concurrent requests in shared passes."""

from __future__ import annotations

import asyncio
import re
import threading
from dataclasses import asdict

import numpy as np
import pytest
import torch

from shared.config import ModelConfig
from shared.errors import FedrecError
from shared.models.recommender import FORMAT_VERSION, TEXT_DIM, Recommender
from shared.models.scoring import RERANKED_OFFSET, CatalogRanker, ModelScorer
from shared.serving.batching import MicroBatcher
from shared.serving.service import Service, UnknownUser

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


class Users:
    """The slice of a Dataset the service reads for known users."""

    name = "random"
    user_ids = np.array(["u1", "u2", "u3"])
    num_users = 3
    user_features = {"age": np.array([1, 2, 3]), "gender": np.array([1, 2, 1])}
    user_feature_vocab = {"age": ["?", "a", "b", "c"], "gender": ["?", "F", "M"]}
    sequences = [np.array([1, 2, 3]), np.array([4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17]), np.array([9])]

    def sequence(self, row: int) -> np.ndarray:
        return self.sequences[row]


def test_the_service_answers_a_batch_as_one_at_a_time_and_keeps_errors_apart(monkeypatch) -> None:
    monkeypatch.setattr("shared.serving.service.check_catalog", lambda model, dataset: None)
    service = Service(random_model(), Users(), search=False)  # type: ignore[arg-type]
    queries = [("u1", None, 5), ("nobody", None, 5), ("u2", None, 3), (None, "i7, Item 8", 4), ("u3", None, 0),
               (None, None, 5), ("u3", None, 7)]  # fmt: skip
    answers = service.recommend_many(queries)
    for query, answer in zip(queries, answers):
        if isinstance(answer, FedrecError):
            with pytest.raises(type(answer), match=re.escape(str(answer))):
                service.recommend(*query)
        else:
            assert answer == service.recommend(*query) or _close(answer, service.recommend(*query))
    assert isinstance(answers[1], UnknownUser) and "k must be between" in str(answers[4])
    assert [type(a) for a in answers].count(dict) == 4
    assert {"i7", "i8"}.isdisjoint(item["item_id"] for item in answers[3]["items"])


def _close(a: dict, b: dict) -> bool:
    return [x["item_id"] for x in a["items"]] == [x["item_id"] for x in b["items"]] and np.allclose(
        [x["score"] for x in a["items"]], [x["score"] for x in b["items"]], atol=1e-5)


def test_concurrent_requests_share_passes_and_each_gets_its_own_answer() -> None:
    passes: list[list[int]] = []
    release = threading.Event()

    def answer_many(queries: list[int]) -> list[int | BaseException]:
        release.wait(5)  # the first pass holds the model while the others queue
        passes.append(queries)
        return [ValueError(f"odd {q}") if q % 2 else q * 10 for q in queries]

    async def main() -> list:
        batcher: MicroBatcher[int, int] = MicroBatcher(answer_many, max_batch=4)
        first = asyncio.ensure_future(batcher.submit(0))
        await asyncio.sleep(0.05)  # the first pass is running
        rest = [asyncio.ensure_future(batcher.submit(q)) for q in range(1, 8)]
        await asyncio.sleep(0.05)
        release.set()
        results = await asyncio.gather(first, *rest, return_exceptions=True)
        batcher.close()
        return results

    results = asyncio.run(main())
    assert passes == [[0], [1, 2, 3, 4], [5, 6, 7]]  # queued ones together, at most max_batch
    assert [r if isinstance(r, int) else str(r) for r in results] == [
        0, "odd 1", 20, "odd 3", 40, "odd 5", 60, "odd 7"]  # fmt: skip


def test_a_failed_pass_fails_its_requests_and_the_next_pass_runs() -> None:
    calls = []

    def answer_many(queries: list[int]) -> list[int | BaseException]:
        calls.append(queries)
        if len(calls) == 1:
            raise RuntimeError("model broke")
        return queries

    async def main() -> tuple:
        batcher: MicroBatcher[int, int] = MicroBatcher(answer_many)
        with pytest.raises(RuntimeError, match="model broke"):
            await batcher.submit(1)
        answer = await batcher.submit(2)
        batcher.close()
        return answer, batcher.passes, batcher.answered

    assert asyncio.run(main()) == (2, 2, 2)
