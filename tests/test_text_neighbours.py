"""The public text's neighbours (shared/models/text_neighbours.py): a soft nearest-neighbour term
over the user's last items, added to every score when `text-neighbours` weighs it, and attributed
to the history items that give it."""

from __future__ import annotations

import numpy as np
import pytest

from shared.config import ModelConfig
from shared.errors import FedrecError
from shared.models.score_terms import ScoreTerms
from shared.models.text_neighbours import TextNeighbours


def catalog(seed: int = 0) -> np.ndarray:
    """Six items of a 4-d text space: 1 and 2 point alike, 3 is 1's opposite, the rest random."""
    rng = np.random.default_rng(seed)
    text = rng.normal(size=(7, 4))
    text[0] = 0.0
    text[2] = 3 * text[1] + 0.01 * rng.normal(size=4)  # near-duplicate title, another length
    text[3] = -text[1]
    return text


def cosine(text: np.ndarray, a: int, b: int) -> float:
    return float(text[a] @ text[b] / np.linalg.norm(text[a]) / np.linalg.norm(text[b]))


def test_the_term_is_a_weighted_soft_maximum_of_cosines_with_the_last_items() -> None:
    text = catalog()
    t = TextNeighbours(text, weight=2.0, recent=2, recent_decay=0.5, temperature=0.1)
    rows = t.rows(np.array([[0, 4, 5, 1]]))  # only the last two (5, then 1) vote: weights 1/3, 2/3
    for j in range(1, 7):
        expected = 2.0 * 0.1 * np.log(np.exp(cosine(text, 5, j) / 0.1) / 3 + np.exp(cosine(text, 1, j) / 0.1) * 2 / 3)
        assert rows[0, j] == pytest.approx(expected, rel=1e-4, abs=1e-5)
    assert rows[0, 0] == 0.0  # padding is never a candidate
    # After item 1, its near duplicate 2 scores far above its opposite 3.
    last = t.rows(np.array([1]))[0]
    assert last[2] > 0.9 * 2.0 and last[3] < -0.9 * 2.0
    # No history, no term; padding inside the window neither votes nor dilutes the others' weights.
    empty = t.rows(np.array([[0, 0, 0]]))
    assert empty.shape == (1, 7) and not empty.any()
    assert np.allclose(t.rows(np.array([[0, 0, 1]])), t.rows(np.array([[1]])))
    # pairs() is rows() at the candidates.
    cands = np.array([[2, 6, 3]])
    assert np.allclose(t.pairs(np.array([[4, 1]]), cands), np.take_along_axis(t.rows(np.array([[4, 1]])), cands, 1), atol=1e-5)


def test_shares_split_the_term_among_the_voting_items_and_sum_to_it() -> None:
    t = TextNeighbours(catalog(), weight=1.5, recent=3)
    history = np.array([6, 5, 4, 1])
    shares = t.shares(history, 2)
    assert shares[0] == 0.0  # beyond `recent`: no vote
    assert shares.sum() == pytest.approx(float(t.rows(history[None])[0, 2]), abs=1e-5)
    assert shares[-1] == max(shares, key=abs)  # 1 is 2's near duplicate: it gives most of the term
    padded = t.shares(np.array([0, 0, 1]), 2)  # padding gets no share; the one item gets the whole term
    assert padded[:2].tolist() == [0.0, 0.0] and padded[2] == pytest.approx(float(t.rows(np.array([1]))[0, 2]), abs=1e-5)
    assert t.shares(np.array([], dtype=np.int64), 2).shape == (0,)
    assert t.shares(np.array([0, 0]), 2).tolist() == [0.0, 0.0]


def test_terms_sum_and_keep_the_longest_window() -> None:
    from shared.models.transitions import count_transitions

    text = catalog()
    table = count_transitions([np.array([1, 2, 3]), np.array([4, 1, 2])], 6, window=1).with_constants(1.0, 0.5)
    neighbours = TextNeighbours(text, weight=3.0, recent=5, temperature=1.0)
    both = ScoreTerms.of(table, None, neighbours)
    history = np.array([[3, 4, 5, 6, 1]])
    assert [type(t).__name__ for t in both.terms] == ["Transitions", "TextNeighbours"]
    assert both.recent == max(table.recent, 5)
    assert np.allclose(both.rows(history), table.rows(history) + neighbours.rows(history))
    cands = np.array([[2, 3, 6]])
    assert np.allclose(both.pairs(history, cands), table.pairs(history, cands) + neighbours.pairs(history, cands))
    assert np.allclose(both.shares(history[0], 2), table.shares(history[0], 2) + neighbours.shares(history[0], 2))
    assert ScoreTerms.of(both).terms == both.terms  # a sum of sums is flattened
    assert ScoreTerms.of(None, None) is None


def test_a_model_scores_with_the_term_only_when_weighed(tmp_path) -> None:
    from conftest import make_tiny, write_csv

    from shared.config import DataConfig
    from shared.data.dataset import build_dataset
    from shared.data.readers import read_directory
    from shared.models.scoring import ModelScorer
    from shared.models.training import build_model

    d = write_csv(make_tiny(12, 15, 0), tmp_path / "d")
    dataset = build_dataset(read_directory(d), DataConfig(dataset="csv", data_path=str(d)))
    cfg = ModelConfig(dim=16, num_layers=1, num_heads=2, max_len=12, retrieve_top_n=10)
    model = build_model(dataset, cfg, tmp_path / "cache").eval()
    users = np.arange(dataset.num_users)
    assert model.score_terms() is None
    plain = ModelScorer(model, dataset).retrieval.score_all(users, "valid")
    model.config["model"]["text_neighbours"] = 2.0
    scorer = ModelScorer(model, dataset)
    expected = TextNeighbours(model.text.numpy(), 2.0).rows(scorer.inputs(users, "valid")[0])
    assert np.abs(expected[:, 1:]).max() > 0.1
    assert np.allclose(scorer.retrieval.score_all(users, "valid")[:, 1:] - plain[:, 1:], expected[:, 1:], atol=1e-4)
    # The ranker is residual on retrieval: the served order (recommend) is the evaluated one.
    two_stage = scorer.two_stage.score_all(users[:4], "valid")
    for row, u in enumerate(users[:4]):
        features = scorer.inputs(users[row : row + 1], "valid")[1][0]
        served = [i for i, _ in scorer.recommend(dataset.history(int(u), "valid"), features, k=5)]
        assert served == list(np.argsort(-two_stage[row], kind="stable")[:5])


def test_an_explanation_carries_the_term_and_still_matches_the_served_score(tmp_path) -> None:
    from conftest import make_tiny, write_csv

    from shared.config import DataConfig
    from shared.data.dataset import build_dataset
    from shared.data.readers import read_directory
    from shared.models.batches import left_pad
    from shared.models.explain import Explainer
    from shared.models.scoring import ModelScorer
    from shared.models.training import build_model

    d = write_csv(make_tiny(12, 15, 0), tmp_path / "d")
    dataset = build_dataset(read_directory(d), DataConfig(dataset="csv", data_path=str(d)))
    model = build_model(dataset, ModelConfig(dim=16, num_layers=1, num_heads=2, max_len=12), tmp_path / "cache").eval()
    history, features = dataset.history(0, "valid"), np.zeros(len(model.user_features), dtype=np.int64)
    plain = Explainer(model).explain(history, features, [3])[0]
    model.config["model"]["text_neighbours"] = 2.0
    scorer = ModelScorer(model)
    (e,) = Explainer(model, scorer).explain(history, features, [3])
    padded = left_pad([history], scorer.max_len)
    served = scorer.rank(scorer.encode(padded, features[None]), padded, features[None], np.array([[3]]))
    term = TextNeighbours(model.text.numpy(), 2.0)
    assert e.score == pytest.approx(float(served[0, 0]), abs=1e-4)
    assert e.score == pytest.approx(plain.score + float(term.rows(padded)[0, 3]), abs=1e-4)
    shares = term.shares(history, 3)
    assert [a for _, a in e.history] == pytest.approx([a + s for (_, a), s in zip(plain.history, shares)], abs=1e-4)


def test_the_weight_is_checked() -> None:
    for bad in (-1.0, float("inf"), float("nan")):
        with pytest.raises(FedrecError, match="text-neighbours must be a finite number >= 0"):
            ModelConfig(text_neighbours=bad)
    with pytest.raises(FedrecError, match="needs the text tower"):
        ModelConfig(text_neighbours=1.0, use_text=False, use_id_embedding=True)


def test_the_study_reads_a_runs_prior_and_scores_it_with_and_without_the_term(tmp_path) -> None:
    import json

    from server.popularity import SHARPNESS, log_prior
    from simulations.text_neighbours import PriorScorer, read_prior

    counts = [0.0, 5.0, -1.0, 40.0, 2.0, 0.0, 9.0]
    (tmp_path / "prior.json").write_text(json.dumps({"counts": counts, "noise_std": 1.5, "sharpness": SHARPNESS}))
    prior = read_prior(tmp_path / "prior.json")
    assert np.allclose(prior, log_prior(np.array(counts), 1.5, SHARPNESS))
    (tmp_path / "bad.json").write_text("{}")
    with pytest.raises(FedrecError, match="not a run's popularity_prior.json"):
        read_prior(tmp_path / "bad.json")

    class History:  # the one method PriorScorer reads of a dataset
        def history(self, user: int, stage: str) -> np.ndarray:
            return np.array([[4, 1], [2]][user])

    scorer = PriorScorer(History(), prior, max_len=5)
    alone = scorer.score_all(np.array([0, 1]), "valid")
    assert np.isneginf(alone[:, 0]).all() and np.allclose(alone[:, 1:], prior[1:])
    scorer.term = TextNeighbours(catalog(), weight=2.0)
    both = scorer.score_all(np.array([0, 1]), "valid")
    assert np.allclose(both[:, 1:] - alone[:, 1:], scorer.term.rows(np.array([[0, 4, 1], [0, 0, 2]]))[:, 1:], atol=1e-5)
