"""fedrec search, fedrec recommend --explain and items named by their titles, on a tiny catalog
of real film titles (tests/films.py)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from cli import main
from shared.errors import FedrecError
from shared.models.item_names import ItemNames, normalise


@pytest.fixture(scope="module")
def films(tmp_path_factory):
    from films import train_films

    return train_films(tmp_path_factory.mktemp("films"))


@pytest.fixture(scope="module")
def model(films):
    from shared.models.checkpoint import load_checkpoint

    return load_checkpoint(films[0])


def error_line(capsys) -> str:
    err = capsys.readouterr().err
    assert "Traceback" not in err
    (line,) = [ln for ln in err.splitlines() if ln.startswith("fedrec: error:")]
    return line


def titles_in(printed: str) -> list[str]:
    """The title column of a printed results table, best first."""
    return [row.split("|")[2].strip() for row in printed.splitlines()[2:] if row.startswith("| ")]


# ---------------------------------------------------------------- items named by titles


def test_names_resolve_ids_titles_near_titles_and_moved_articles() -> None:
    names = ItemNames(["1", "2", "3", "4", "5"], ["Toy Story", "Star Wars", "Godfather, The", "Hamlet", "Hamlet"])
    assert names.resolve("1, 2") == [1, 2]
    assert names.resolve("Star Wars (1977),toy story") == [2, 1]  # year and case ignored
    assert names.resolve("The Godfather") == [3]  # MovieLens' moved article
    assert names.resolve("Star Wras") == [2]  # the closest title
    assert normalise("American President, The (1995)") == normalise("the american president") == "american president"
    with pytest.raises(FedrecError, match=r"'Hamlet' could be any of: Hamlet \[id 4\]; Hamlet \[id 5\]"):
        names.resolve("Hamlet")
    with pytest.raises(FedrecError, match="unknown item 'Metropolis'"):
        names.resolve("Toy Story, Metropolis")


def test_titles_with_commas_years_and_title_starts() -> None:
    """ML-1M's ids are titles with a year and sometimes commas; a title's start names it when
    only one title starts so, and the year picks one of several."""
    catalog = ["American President, The (1995)", "Star Wars: Episode IV - A New Hope (1977)",
               "Star Wars: Episode V - The Empire Strikes Back (1980)", "Heat (1995)"]  # fmt: skip
    names = ItemNames(catalog, ["American President, The", "Star Wars: Episode IV - A New Hope",
                                "Star Wars: Episode V - The Empire Strikes Back", "Heat"])  # fmt: skip
    assert names.resolve("American President, The (1995), Heat") == [1, 4]
    assert names.resolve("Star Wars (1977)") == [2]
    with pytest.raises(FedrecError, match=r"could be any of: Star Wars: Episode IV - A New Hope \(1977\); Star Wars"):
        names.resolve("star wars")


def test_recommend_takes_titles_on_a_numeric_catalog(films, capsys) -> None:
    """The issue's case: ML-100k's ids are numbers, so a title used to be refused."""
    checkpoint, _ = films
    assert main(["recommend", "--checkpoint", str(checkpoint), "--history", "Star Wars (1977), Heat, 3", "-k", "3"]) == 0
    assert len(titles_in(capsys.readouterr().out)) == 3
    assert main(["recommend", "--checkpoint", str(checkpoint), "--history", "Hamlet"]) == 2
    assert "Hamlet [id 9]; Hamlet [id 10]" in error_line(capsys)


# ---------------------------------------------------------------- search


def test_search_lists_the_named_film_first(films, capsys) -> None:
    checkpoint, _ = films
    assert main(["search", "Toy Story", "--checkpoint", str(checkpoint), "-k", "5"]) == 0
    found = titles_in(capsys.readouterr().out)
    assert len(found) == 5 and found[0] == "Toy Story"


def test_personalised_search_keeps_the_query_first_and_reports_both_scores(films, model, capsys) -> None:
    from shared.models.search import Searcher

    checkpoint, data = films
    assert main(["search", "Jurassic Park", "--checkpoint", str(checkpoint), "--user", "3", "--path", str(data),
                 "-k", "4"]) == 0  # fmt: skip
    assert titles_in(capsys.readouterr().out)[0] == "Jurassic Park"
    searcher = Searcher(model)
    plain = searcher.search("a war film", k=30)
    personal = searcher.search("a war film", k=30, history=np.array([6, 7, 22]))
    assert all(h.personal_score is None for h in plain) and all(h.personal_score is not None for h in personal)
    assert {h.item_id for h in plain} == {h.item_id for h in personal}  # the same items, re-ordered
    # Weight 0 is text alone; a personal weight only re-orders the text's candidates.
    assert [h.item_id for h in Searcher(model, weight=0.0).search("a war film", 5, np.array([6]))] == \
        [h.item_id for h in plain[:5]]  # fmt: skip


@pytest.mark.parametrize("argv,message", [
    (["  "], "the query is empty"),
    (["Heat", "--user", "999"], "unknown user id '999'"),
    (["Heat", "--history", "Metropolis"], "unknown item 'Metropolis'"),
    (["Heat", "-k", "0"], "-k must be at least 1"),
])  # fmt: skip
def test_search_bad_input_is_one_line(films, capsys, argv, message) -> None:
    checkpoint, data = films
    assert main(["search", *argv, "--checkpoint", str(checkpoint), "--path", str(data)]) == 2
    assert message in error_line(capsys)


def test_search_without_a_checkpoint_is_one_line(capsys, tmp_path) -> None:
    assert main(["search", "Heat", "--checkpoint", str(tmp_path / "none")]) == 2
    assert "no such directory" in error_line(capsys)


# ---------------------------------------------------------------- explanations


def test_explanations_reproduce_the_score_and_add_up(films, model) -> None:
    """The attribution's forward pass is the scorer's score; IG's shares add up to the score
    minus the baseline's (completeness), up to a small numerical gap."""
    from shared.models.explain import Explainer
    from shared.models.scoring import ModelScorer

    scorer = ModelScorer(model)
    history, features = np.array([4, 5, 11, 12, 20, 24]), np.array([3, 1, 2, 1])
    ranked = scorer.recommend(history, features, 3)
    explainer = Explainer(model, scorer)
    explanations = explainer.explain(history, features, [i for i, _ in ranked])
    seq, feats = explainer.inputs(history, features)
    with torch.no_grad():
        baseline = explainer.score_from_vectors(torch.zeros_like(seq), torch.zeros_like(feats), torch.tensor([[ranked[0][0]]]))
    for (item, score), e in zip(ranked, explanations):
        assert e.item == item and e.score == pytest.approx(score, abs=1e-4)
        assert [i for i, _ in e.history] == history.tolist() and [n for n, _ in e.features] == list(model.user_features)
        assert abs(e.gap) < 0.05 * max(1.0, abs(e.score))
    total = sum(a for _, a in explanations[0].history) + sum(a for _, a in explanations[0].features)
    assert total == pytest.approx(explanations[0].score - float(baseline), abs=0.05)


def test_with_co_occurrences_each_voting_item_carries_its_term_and_the_score_still_matches(films, model) -> None:
    from shared.models.batches import left_pad
    from shared.models.explain import Explainer
    from shared.models.scoring import ModelScorer
    from shared.models.transitions import RECENT_DECAY, count_transitions

    history, features = np.array([4, 5, 11, 12, 20, 24]), np.array([3, 1, 2, 1])
    plain = Explainer(model).explain(history, features, [7])[0]
    counted = count_transitions([np.array([24, 7, 24, 7]), np.array([20, 7])], model.config["num_items"], window=1)
    model.transitions = counted.with_constants(1.0, 0.1)
    try:
        scorer = ModelScorer(model)
        (e,) = Explainer(model, scorer).explain(history, features, [7])
        padded = left_pad([history], scorer.max_len)  # as the model reads a history
        served = scorer.rank(scorer.encode(padded, features[None]), padded, features[None], np.array([[7]]))
    finally:
        model.transitions = None
    last = np.log1p(2 / 0.1)  # (24, 7) counted twice, 24 the last item
    before = RECENT_DECAY * np.log1p(1 / 0.1)  # (20, 7) once, 20 one item further back
    assert e.score == pytest.approx(float(served[0, 0]), abs=1e-4)
    assert e.score == pytest.approx(plain.score + last + before, abs=1e-4)
    assert e.history[-1][1] == pytest.approx(plain.history[-1][1] + last, abs=1e-4)
    assert e.history[-2][1] == pytest.approx(plain.history[-2][1] + before, abs=1e-4)
    assert [a for _, a in e.history[:-2]] == pytest.approx([a for _, a in plain.history[:-2]], abs=1e-4)


def test_recommend_explain_lists_history_items_and_features(films, capsys) -> None:
    checkpoint, data = films
    assert main(["recommend", "--checkpoint", str(checkpoint), "--user", "2", "--path", str(data), "-k", "2",
                 "--explain"]) == 0  # fmt: skip
    out = capsys.readouterr().out
    assert "Integrated Gradients" in out and out.count("    history: ") == 2
    assert out.count("    features: age=") == 2 and "gender=" in out
    assert main(["recommend", "--checkpoint", str(checkpoint), "--history", "Alien, Aliens", "-k", "1", "--explain"]) == 0
    assert "features: age=unknown" in capsys.readouterr().out
