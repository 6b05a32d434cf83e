"""Benchmark pages: long federated runs are summarised as means of ten rounds, in the Markdown
and in the chart, because a sampled per-round validation is noise."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from simulations.charts import draw, window_means
from simulations.fed_vs_central import federated_curve


def test_window_means_average_consecutive_windows_the_last_one_short() -> None:
    assert window_means([1.0, 3.0, 5.0, 7.0, 9.0], size=2) == [2.0, 6.0, 9.0]


def test_short_runs_are_listed_by_round_long_runs_by_ten_round_means() -> None:
    assert federated_curve([0.01, 0.02]) == "Federated by round: 0.0100, 0.0200."
    long = [0.01] * 10 + [0.03] * 10 + [0.05]
    assert federated_curve(long) == "Federated, mean of each 10 rounds: 0.0100, 0.0300, 0.0500."


@pytest.mark.parametrize("rounds", [5, 40])
def test_fed_vs_central_chart_is_drawn_for_short_and_long_runs(tmp_path: Path, rounds: int) -> None:
    test = {"full-ndcg@10": 0.05, "sampled-ndcg@10": 0.3}
    report = {
        "provenance": {"commit": "0" * 40},
        "centralized": {"test": test, "valid_ndcg": [0.03, 0.04, 0.05]},
        "federated": {"test": test, "valid_ndcg": [0.001 * r for r in range(rounds)]},
        "ratio": {"full-ndcg@10": 1.0},
    }
    draw("fed_vs_central-user-test", report, tmp_path)
    png = tmp_path / "fed_vs_central-user-test.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert [p.name for p in tmp_path.iterdir()] == [png.name]  # no temp file left behind


def _overhead_record(path: Path, commit: str, ratios: list[float]) -> Path:
    runs = [{"fedrec": 10.0 * r, "trivial": 10.0} for r in ratios]
    record = {"provenance": {"commit": commit * 40, "date": "2026-11-29T21:00:00+00:00"}, "runs": runs,
              "trivial": {"updates_per_second_median": 10.0}, "fedrec": {"local_work_ms_median": 17.0},
              "ratio": sorted(ratios)[len(ratios) // 2]}  # fmt: skip
    path.write_text(json.dumps(record))
    return path


def test_overhead_records_pool_their_runs_by_commit(tmp_path: Path) -> None:
    from simulations.overhead_pool import main

    first = _overhead_record(tmp_path / "a.json", "a", [0.4, 0.6, 0.7])
    second = _overhead_record(tmp_path / "b.json", "a", [0.45, 0.5])
    other = _overhead_record(tmp_path / "c.json", "b", [0.3])
    assert main([str(first), str(second), str(other), "--out", str(tmp_path / "pool.md")]) == 0
    page = (tmp_path / "pool.md").read_text()
    assert "- aaaaaaa: median 0.50 over 5 runs (min 0.40, max 0.70; 3 of 5 at 0.5 or above)" in page
    assert "- bbbbbbb: median 0.30 over 1 runs" in page


def test_a_file_that_is_not_an_overhead_record_is_refused(tmp_path: Path) -> None:
    from simulations.overhead_pool import main

    (tmp_path / "x.json").write_text('{"rounds": []}')
    with pytest.raises(SystemExit, match=r"x.json: not a simulations.overhead record"):
        main([str(tmp_path / "x.json"), "--out", str(tmp_path / "pool.md")])
    assert not (tmp_path / "pool.md").exists()


def test_the_client_step_runner_refuses_an_empty_measurement_before_loading_data(tmp_path: Path) -> None:
    from simulations.client_step import main

    with pytest.raises(SystemExit, match="--users and --repeats must be at least 1"):
        main(["--dataset", "no-such-dataset", "--users", "0", "--out", str(tmp_path)])
    assert not list(tmp_path.iterdir())
