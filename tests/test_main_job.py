"""simulations/main_job: how make main's outputs become the repeated record the docs quote."""

import json
from pathlib import Path

import pytest

from simulations.main_job import METRICS, baseline, federated, medians


def protocols(hr: float) -> dict:
    return {"full": {"hr@10": hr, "ndcg@10": hr / 2}, "sampled": {"hr@10": 5 * hr, "ndcg@10": 3 * hr}}


def test_a_baseline_reads_popularity_and_a_checkpoint_s_two_stage_metrics(tmp_path: Path) -> None:
    (tmp_path / "pop.json").write_text(json.dumps(protocols(0.04)))
    (tmp_path / "model.json").write_text(json.dumps({"retrieval": protocols(0.5), "ranking": protocols(0.1)}))
    assert baseline(tmp_path / "pop.json")["sampled-hr@10"] == pytest.approx(0.2)
    assert baseline(tmp_path / "model.json") == pytest.approx(
        {"full-hr@10": 0.1, "full-ndcg@10": 0.05, "sampled-hr@10": 0.5, "sampled-ndcg@10": 0.3})


def test_the_federated_row_is_the_non_consented_users_two_stage_test(tmp_path: Path) -> None:
    run = tmp_path / "run-1"
    run.mkdir()
    everyone = {f"ranking-{k}": 0.9 for k in METRICS}
    non_consented = {f"ranking-{k}": 0.3 for k in METRICS} | {f"retrieval-{k}": 0.7 for k in METRICS}
    (run / "metrics.json").write_text(json.dumps({"test": everyone, "test_non_consented": non_consented,
                                                  "history": [{"seconds": 12.34}, {"seconds": 5.0}]}))  # fmt: skip
    (run / "privacy_report.json").write_text(json.dumps({"epsilon_quantiles": {"p100": 7.8}, "delta": 1e-6}))
    row = federated(tmp_path)
    assert row["test"] == {k: 0.3 for k in METRICS}
    assert row["epsilon_max"] == 7.8 and row["round_seconds"] == [12.3, 5.0]


def test_medians_are_taken_per_metric_across_repeats() -> None:
    def repeat(wall: float, hr: float) -> dict:
        m = {k: hr for k in METRICS}
        return {"wall_seconds": wall, "popularity": m, "pretrained": m, "test": m, "epsilon_max": hr}

    m = medians([repeat(600, 0.1), repeat(500, 0.9), repeat(700, 0.2)])
    assert m["wall_seconds"] == 600 and m["test"]["sampled-hr@10"] == 0.2 and m["epsilon_max"] == 0.2
