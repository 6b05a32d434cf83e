"""The metrics against sklearn and hand-computed cases; the protocols on generated data."""

from pathlib import Path

import numpy as np
import pytest
from sklearn.metrics import ndcg_score

from shared.config import DataConfig
from shared.data.dataset import build_dataset
from shared.data.readers import read_directory
from shared.errors import FedrecError
from shared.eval.metrics import (
    candidate_ranks,
    full_ranks,
    hit_rate,
    mrr,
    ndcg,
    paired_gain,
    precision_recall_f1,
    recall_at_k,
    summarize,
)
from shared.eval.protocols import evaluate, sampled_candidates, seen_mask
from shared.models.popularity import Popularity


@pytest.mark.parametrize("k", [1, 5, 10, 50])
def test_ndcg_matches_sklearn(k: int) -> None:
    rng = np.random.default_rng(k)
    scores = rng.normal(size=(200, 101))  # continuous: no ties, where sklearn and we agree
    y_true = np.zeros_like(scores)
    y_true[:, 0] = 1
    ours = ndcg(candidate_ranks(scores), k)
    assert ours == pytest.approx(ndcg_score(y_true, scores, k=k), abs=1e-12)


def test_hit_rate_and_mrr_on_hand_computed_ranks() -> None:
    scores = np.array([
        [0.9, 0.1, 0.2, 0.3],  # target best: rank 0
        [0.2, 0.1, 0.5, 0.3],  # two above: rank 2
        [0.0, 0.1, 0.5, 0.3],  # three above: rank 3
    ])  # fmt: skip
    ranks = candidate_ranks(scores)
    assert ranks.tolist() == [0, 2, 3]
    assert hit_rate(ranks, 1) == pytest.approx(1 / 3)
    assert hit_rate(ranks, 3) == pytest.approx(2 / 3)
    assert mrr(ranks) == pytest.approx((1 + 1 / 3 + 1 / 4) / 3)
    assert ndcg(ranks, 3) == pytest.approx((1 + 1 / np.log2(4)) / 3)
    hr3 = hit_rate(ranks, 3)
    assert summarize(ranks, (3,)) == pytest.approx({"hr@3": hr3, "ndcg@3": ndcg(ranks, 3), "mrr": mrr(ranks),
                                                    "precision@3": hr3 / 3, "recall@3": hr3, "f1@3": hr3 * 2 / 4})


def test_precision_recall_f1_with_one_held_out_item() -> None:
    """One relevant item per user: recall@k is HR@k, precision@k HR@k / k, and the per-user
    mean F1 equals the F1 of the mean precision and recall."""
    ranks = np.array([0, 4, 9, 10, 50])
    precision, recall, f1 = precision_recall_f1(ranks, 10)
    assert recall == hit_rate(ranks, 10) == pytest.approx(0.6)
    assert precision == pytest.approx(0.06)
    assert f1 == pytest.approx(2 * precision * recall / (precision + recall))
    assert precision_recall_f1(np.array([20]), 10) == (0.0, 0.0, 0.0)


def test_the_message_audit_accepts_every_metric_a_node_reports() -> None:
    """A DP run's audit flags any metric name off its allow-list: the new ones must be on it."""
    from client.message_audit import _metric_allowed

    from shared.eval.metrics import flatten

    reported = flatten({"retrieval": {"full": summarize(np.array([0, 3]), (10, 100))},
                        "ranking": {"sampled": summarize(np.array([1]))}})  # the names a node sends
    assert "retrieval-full-ndcg@100" in reported and "ranking-sampled-mrr" in reported
    assert all(_metric_allowed(k, dp=True) for k in reported)


def test_ties_count_against_the_model() -> None:
    constant = np.ones((5, 101))
    assert candidate_ranks(constant).tolist() == [100] * 5
    assert hit_rate(candidate_ranks(constant), 10) == 0.0


def test_full_ranks_skip_padding_and_seen_items_but_never_the_target() -> None:
    scores = np.array([[100.0, 0.9, 0.8, 0.7, 0.6, 0.5]])  # column 0 is padding
    excluded = np.array([[False, True, False, False, False, False]])
    assert full_ranks(scores, np.array([3]), excluded).tolist() == [1]  # only item 2 beats it
    excluded_target = np.array([[False, True, False, True, False, False]])
    assert full_ranks(scores, np.array([3]), excluded_target).tolist() == [1]


def test_nan_scores_are_refused() -> None:
    with pytest.raises(FedrecError, match="NaN"):
        candidate_ranks(np.array([[np.nan, 0.0]]))


def test_recall_counts_the_fraction_of_relevant_items_found() -> None:
    top = np.array([[1, 2, 3], [4, 5, 6]])
    assert recall_at_k(top, [np.array([1, 9]), np.array([4, 5, 6, 7])]) == pytest.approx((0.5 + 0.75) / 2)


@pytest.fixture
def dataset(csv_dir: Path):
    return build_dataset(read_directory(csv_dir), DataConfig(dataset="csv", data_path=str(csv_dir)))


def test_sampled_candidates_are_unseen_distinct_and_reproducible(dataset) -> None:
    a = sampled_candidates(dataset, "test", num_negatives=10)
    b = sampled_candidates(dataset, "test", num_negatives=10)
    assert np.array_equal(a, b)
    assert np.array_equal(a[:, 0], dataset.test_items)
    for u in range(dataset.num_users):
        negatives = a[u, 1:]
        assert len(set(negatives.tolist())) == 10
        assert not set(negatives.tolist()) & set(dataset.sequence(u).tolist())
        assert negatives.min() >= 1
    assert not np.array_equal(a[:, 1:], sampled_candidates(dataset, "valid", 10)[:, 1:])


def test_sampled_negatives_shrink_on_a_small_catalog(dataset) -> None:
    cands = sampled_candidates(dataset, "test")  # 100 asked, the tiny catalog has 30 items
    longest = max(len(set(dataset.sequence(u).tolist())) for u in range(dataset.num_users))
    assert cands.shape[1] == 1 + dataset.num_items - longest


def test_seen_mask_marks_exactly_the_history(dataset) -> None:
    users = np.array([0, 3])
    mask = seen_mask(dataset, users, "test")
    for row, u in enumerate(users):
        assert set(np.flatnonzero(mask[row]).tolist()) == set(dataset.history(u, "test").tolist())


class Oracle:
    """Knows the answer: scores the stage's target highest. Every metric must be perfect."""

    def __init__(self, dataset) -> None:
        self.dataset = dataset

    def score_all(self, users, stage):
        scores = np.zeros((len(users), self.dataset.num_items + 1))
        scores[np.arange(len(users)), self.dataset.targets(stage)[users]] = 1.0
        return scores


def test_an_oracle_scores_perfectly_and_popularity_does_not(dataset) -> None:
    perfect = evaluate(dataset, Oracle(dataset), "test")
    for protocol in ("full", "sampled"):
        assert perfect[protocol] == pytest.approx({"hr@10": 1.0, "ndcg@10": 1.0, "mrr": 1.0, "precision@10": 0.1,
                                                   "recall@10": 1.0, "f1@10": 2 / 11})
    pop = evaluate(dataset, Popularity.fit(dataset), "valid")
    assert 0 < pop["sampled"]["hr@10"] < 1


def test_popularity_counts_training_items_only_for_validation(dataset) -> None:
    pop = Popularity.fit(dataset)
    valid = pop.score_all(np.array([0]), "valid")[0]
    expected = np.bincount(dataset.items[dataset.train_mask], minlength=dataset.num_items + 1)
    assert np.array_equal(valid[1:], expected[1:])
    test = pop.score_all(np.array([0]), "test")[0]
    assert test[1:].sum() == valid[1:].sum() + dataset.num_users


def test_a_paired_gain_tells_a_small_consistent_gain_from_chance() -> None:
    """Half the rows move one place up: the mean gain is exact and its interval excludes 0; the
    same ranks shuffled between rows give an interval around 0."""
    rng = np.random.default_rng(0)
    base = rng.integers(0, 30, size=4000)
    better = np.where(np.arange(4000) % 2 == 0, np.maximum(base - 1, 0), base)
    gain = paired_gain(base, better, "ndcg@10", resamples=500)
    expected = np.mean(np.where(better < 10, 1 / np.log2(better + 2), 0) - np.where(base < 10, 1 / np.log2(base + 2), 0))
    assert gain["mean"] == pytest.approx(expected) and 0 < gain["low"] < gain["mean"] < gain["high"]
    # Rows split between a hit at the top and a miss (a wide spread of the means), and a tenth of
    # them move from rank 11 to 9: the paired interval is far narrower than two independent
    # means' spreads would give, and still excludes 0.
    rows = np.arange(4000)
    split = np.where(rows % 2 == 0, 0, 50)
    before, after = np.where(rows % 10 == 1, 11, split), np.where(rows % 10 == 1, 9, split)
    steady = paired_gain(before, after, "ndcg@10", resamples=500)

    def gains(r: np.ndarray) -> np.ndarray:
        return np.where(r < 10, 1 / np.log2(r + 2), 0.0)

    unpaired = 2 * 1.96 * np.sqrt((np.var(gains(before)) + np.var(gains(after))) / len(rows))
    assert steady["low"] > 0 and steady["high"] - steady["low"] < unpaired / 2 and steady["changed"] == 0.1
    shuffled = paired_gain(base, rng.permutation(base), "hr@10", resamples=500)
    assert shuffled["low"] < 0 < shuffled["high"]
    with pytest.raises(FedrecError, match="not 'hr@K'"):
        paired_gain(base, better, "mrr")
    with pytest.raises(FedrecError, match="paired"):
        paired_gain(base, better[:-1])
    with pytest.raises(FedrecError, match="at least 1"):
        paired_gain(base, better, resamples=0)
