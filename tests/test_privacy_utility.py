"""The privacy-utility grid (simulations/privacy_utility.py): every private row is user-level DP
(per-user runs central DP, not local DP-SGD), consented runs start from the pretrained model, and
the record's page and chart are written from the rows alone. Nothing here runs a simulation."""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import pytest

from cli.simulate import parse_overrides
from shared.privacy.accounting import central_epsilon, central_noise_multiplier
from simulations import privacy_utility as pu
from simulations import records

ARGV = ["--setting", "regional", "regional-prior", "regional-text", "per-user", "--consent", "0", "0.1", "--epsilons", "1", "8", "inf",
        "--run-config", "num-server-rounds=3", "lr=0.01"]  # fmt: skip


@pytest.fixture
def points(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> list[pu.Point]:
    monkeypatch.setattr(pu, "population", lambda dataset, extra: 6040)  # ML-1M's users, without reading ML-1M
    return pu.plan(pu.parse_args([*ARGV, "--work", str(tmp_path), "--pretrain-epochs", "2"]))


def test_the_grid_has_one_point_per_setting_consent_and_epsilon(points: list[pu.Point]) -> None:
    cells = [(p.setting, p.consent, p.epsilon) for p in points]
    assert sorted(cells) == sorted((s, c, e) for s in ("regional", "regional-prior", "regional-text", "per-user")
                                   for c in (0.0, 0.1) for e in (1, 8, math.inf)
                                   if not (s in ("regional-prior", "regional-text") and math.isinf(e)))  # fmt: skip
    for p in points:
        keys = parse_overrides(list(p.overrides))
        assert keys["partitioning"] == {"regional": "region", "regional-prior": "region", "regional-text": "region",
                                        "per-user": "user"}[p.setting]  # fmt: skip
        # Only regional-text scores with the public text's neighbours, at the weight chosen on validation.
        assert keys.get("text-neighbours", 0.0) == (pu.TEXT_NEIGHBOURS if p.setting == "regional-text" else 0.0)
        assert keys.get("item-bias-weight", 1.0) == (pu.ITEM_BIAS_WEIGHT if p.setting == "regional-text" else 1.0)
        assert (keys["dataset"], keys["num-server-rounds"], keys["consent-fraction"]) == ("movielens-1m", 3, p.consent)
        assert p.command == "fedrec simulate --run-config " + " ".join(p.overrides)
        assert len({k.partition("=")[0] for k in p.overrides}) == len(p.overrides)  # each key once


def test_per_user_points_run_central_dp_calibrated_to_their_epsilon_and_never_local_dp(points: list[pu.Point]) -> None:
    for p in points:
        keys = parse_overrides(list(p.overrides))
        if math.isinf(p.epsilon):  # no DP at all
            assert keys["dp"] is False and not keys.get("central-dp", False)
        elif p.setting == "per-user":
            assert keys["dp"] is False and keys["central-dp"] is True and "target-epsilon" not in keys
            spent = central_epsilon(keys["central-noise-multiplier"], 3, 1e-6)
            assert 0.97 * p.epsilon <= spent <= p.epsilon
        else:  # DP-SGD in each silo, one user's history one example
            assert keys["dp"] is True and keys["target-epsilon"] == p.epsilon and "central-dp" not in keys
            # The prior's release comes out of the same budget: the share chosen on validation.
            with_prior = p.setting in ("regional-prior", "regional-text")
            assert keys.get("popularity-epsilon", 0) == pytest.approx(p.epsilon * pu.PRIOR_SHARE if with_prior else 0)


def test_consented_points_start_from_the_pretrained_model_with_make_mains_recipe(points: list[pu.Point],
                                                                                 tmp_path: Path) -> None:  # fmt: skip
    recipe = parse_overrides(pu.makefile_recipe())
    assert recipe["finetune"] == "head"  # the Makefile's RECIPE, read from there
    for p in points:
        keys = parse_overrides(list(p.overrides))
        assert keys["use-id-embedding"] is False and keys["use-item-bias"] is True  # the pretraining's architecture
        assert keys["lr"] == 0.01  # --run-config wins over the recipe
        if p.consent > 0:
            assert keys["pretrained"] == str(tmp_path.resolve() / "pretrained-c0.1-e2")
            assert {k: keys[k] for k in recipe if k != "lr"} == {k: v for k, v in recipe.items() if k != "lr"}
        else:
            assert "pretrained" not in keys and "finetune" not in keys


def test_with_transitions_the_consented_points_start_from_the_pretraining_that_counts_them(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:  # fmt: skip
    monkeypatch.setattr(pu, "population", lambda dataset, extra: 6040)
    points = pu.plan(pu.parse_args([*ARGV, "--work", str(tmp_path), "--pretrain-epochs", "2", "--transitions"]))
    starts = {parse_overrides(list(p.overrides)).get("pretrained") for p in points if p.consent > 0}
    assert starts == {str(tmp_path.resolve() / "pretrained-c0.1-e2-t")}
    from simulations.private_recipe import pretrain  # the flag reaches `fedrec train`

    calls = []
    monkeypatch.setattr("simulations.private_recipe.fedrec", lambda *argv: calls.append(argv))
    assert pretrain(tmp_path, 0.1, 2, transitions=True)[1].endswith(f"--transitions --output {tmp_path / 'pretrained-c0.1-e2-t'}")
    assert "--transitions" in calls[0]


def test_central_noise_is_the_smallest_that_keeps_the_planned_rounds_within_budget() -> None:
    for budget, rounds in ((0.5, 20), (8.0, 3)):
        z = central_noise_multiplier(budget, rounds, 1e-6)
        assert central_epsilon(z, rounds, 1e-6) <= budget < central_epsilon(z * 0.98, rounds, 1e-6)


@pytest.mark.parametrize("extra", [["dp=true"], ["central-noise-multiplier=2"], ["no-such-key=1"]])
def test_a_run_config_key_the_grid_sets_or_the_app_lacks_is_one_line_and_exit_2(
    extra: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert pu.main(["--setting", "regional", "--out", str(tmp_path), "--dry-run", "--run-config", *extra]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(f"privacy_utility: error: --run-config {extra[0].split('=')[0]}")
    assert list(tmp_path.iterdir()) == []


def test_the_earlier_grids_record_is_refused_not_mixed_in(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "privacy_utility.json").write_text(json.dumps({"points": [{"setting": "per-user", "epsilon": 8}]}))
    assert pu.main(["--replot", "--out", str(tmp_path)]) == 2
    assert "privacy_utility-v1.json" in capsys.readouterr().err


def _metrics(hr: float, users: int) -> dict[str, float]:
    return {"full-hr@10": hr / 10, "full-ndcg@10": hr / 20, "sampled-hr@10": hr, "sampled-ndcg@10": hr / 2, "users": users}


def _report() -> dict:
    machine = {"cpu": "AMD EPYC", "cores": 2, "gpu": None}
    row = {"commit": "a" * 40, "machine": machine}

    def test(hr: float, consent: float) -> dict:
        return {"non_consented": _metrics(hr, 5462 if consent else 6040), "all": _metrics(hr + 0.01, 6040)}

    refs = [{**row, "name": "popularity", "consent": c, "command": f"fedrec evaluate --baseline popularity c{c}",
             "test": test(0.45, c)} for c in (0.0, 0.1)]  # fmt: skip
    refs.append({**row, "name": "pretrained", "consent": 0.1, "command": "fedrec train --consented-only",
                 "test": test(0.62, 0.1)})  # fmt: skip
    points = [{**row, "setting": s, "consent": c, "epsilon": e, "rounds": 3, "command": f"fedrec simulate {s} {c} {e}",
               "test": test(hr, c), **({} if math.isinf(e) else {"epsilon_spent": e * 0.99, "epsilon_spent_by": by})}
              for s, by in (("regional", "max client"), ("per-user", "central"))
              for c, e, hr in ((0.0, 1.0, 0.30), (0.0, 8.0, 0.35), (0.0, math.inf, 0.50), (0.1, 8.0, 0.66))]  # fmt: skip
    return {"dataset": "movielens-1m", "points": points, "references": refs}


def test_the_page_tables_each_consent_on_its_own_users_with_popularity_and_pretrained_first(tmp_path: Path) -> None:
    pu.save(_report(), tmp_path)
    page = (tmp_path / "privacy_utility.md").read_text()
    c0, c01 = page.split("Consent 0: ")[1].split("Consent 0.1: ")
    assert c0.startswith("test items of all 6,040 users.") and c01.startswith("test items of the 5,462 users who")
    rows = [ln for ln in c01.splitlines() if ln.startswith("| ") and not ln.startswith("| model")]
    assert [r.split(" | ")[0] for r in rows] == ["| popularity", "| pretrained on the consented users", "| per-user",
                                                 "| regional"]  # fmt: skip
    assert rows[2].split(" | ")[1:4] == ["8", "7.92 (central)", "3"]
    assert "| regional | no DP | - | 3 | 0.0500 | 0.0250 | 0.5000 | 0.2500 | `aaaaaaa` | AMD EPYC, 2 cores |" in c0
    assert "privacy_utility-v1.json" in page  # the earlier grid is named, not mixed in
    assert (tmp_path / "privacy_utility.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    saved = json.loads((tmp_path / "privacy_utility.json").read_text())
    assert {p["epsilon"] for p in saved["points"]} == {1.0, 8.0, "inf"}  # JSON has no infinity


def test_benchmarks_shows_the_grid_or_until_it_has_run_where_the_earlier_one_is(tmp_path: Path) -> None:
    assert pu.page_section(tmp_path) == []
    (tmp_path / "privacy_utility-v1.md").write_text("# v1\n")
    waiting = pu.page_section(tmp_path)
    assert waiting[0] == "## Privacy-utility" and "privacy_utility-v1.md" in waiting[-1]
    pu.save(_report(), tmp_path)
    section = pu.page_section(tmp_path)
    assert section[:3] == ["## Privacy-utility", "", "![privacy-utility](privacy_utility.png)"]
    assert sum(ln.startswith("| per-user |") for ln in section) == 4


def test_finished_points_are_skipped_unless_forced_and_another_invocations_rows_are_kept(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    record, ran = tmp_path / "privacy_utility.json", []

    def run_point(point: pu.Point, work: Path, dataset: str) -> dict:
        ran.append(point.name)
        row = {"setting": point.setting, "consent": point.consent, "epsilon": point.epsilon, "command": point.command,
               "commit": "b" * 40, "machine": {"cpu": "cpu", "cores": 2}, "rounds": 1, "test": _report()["points"][0]["test"]}  # fmt: skip
        if len(ran) == 2:  # while this point ran, the per-user invocation recorded its own
            other = json.loads(record.read_text())
            record.write_text(json.dumps({**other, "points": [*other["points"], {**row, "setting": "per-user"}]}))
        return row

    monkeypatch.setattr(pu, "run_point", run_point)
    monkeypatch.setattr(pu, "judge", lambda checkpoint, consent, dataset: _report()["references"][0]["test"])
    monkeypatch.setattr(pu, "pretrain", lambda work, consent, epochs, dataset, transitions=False:
                        (work / "ckpt", "fedrec train ..."))  # fmt: skip
    argv = ["--setting", "regional", "--consent", "0.1", "--epsilons", "8", "--out", str(tmp_path), "--work", str(tmp_path)]
    assert pu.main(argv) == 0 and ran == ["regional-c0.1-eps8"]
    assert pu.main(argv) == 0 and ran == ["regional-c0.1-eps8"]  # recorded: skipped
    assert pu.main([*argv, "--force"]) == 0 and ran == ["regional-c0.1-eps8"] * 2
    saved = json.loads(record.read_text())
    assert sorted(p["setting"] for p in saved["points"]) == ["per-user", "regional"]
    assert sorted(r["name"] for r in saved["references"]) == ["popularity", "pretrained"]


def test_repeats_add_runs_to_a_recorded_point_and_the_row_quotes_each_metrics_median(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    hrs, spent = iter([0.50, 0.60, 0.56, 0.70]), iter([7.8, 7.9, 7.7, 7.6])

    def run_point(point: pu.Point, work: Path, dataset: str) -> dict:
        hr, eps = next(hrs), next(spent)
        return {"setting": point.setting, "consent": point.consent, "epsilon": point.epsilon, "name": point.name,
                "command": point.command, "commit": f"{hr:.2f}".replace(".", "") * 10, "machine": {"cpu": "cpu", "cores": 2},
                "rounds": 3, "run_dir": f"/runs/{hr}", "wall_seconds": hr * 100, "epsilon_spent": eps,
                "epsilon_spent_by": "max client", "test": {"non_consented": _metrics(hr, 6040), "all": _metrics(hr, 6040)}}  # fmt: skip

    monkeypatch.setattr(pu, "run_point", run_point)
    monkeypatch.setattr(pu, "judge", lambda checkpoint, consent, dataset: _report()["references"][0]["test"])
    argv = ["--setting", "regional", "--consent", "0", "--epsilons", "8", "--out", str(tmp_path), "--work", str(tmp_path)]
    assert pu.main(argv) == 0  # one run: the row is that run, as before repeats existed
    (row,) = json.loads((tmp_path / "privacy_utility.json").read_text())["points"]
    assert "runs" not in row and row["test"]["non_consented"]["sampled-hr@10"] == 0.50
    assert pu.main([*argv, "--repeats", "3"]) == 0  # the recorded run counts: two more
    (row,) = json.loads((tmp_path / "privacy_utility.json").read_text())["points"]
    assert [r["run_dir"] for r in row["runs"]] == ["/runs/0.5", "/runs/0.6", "/runs/0.56"]
    assert row["test"]["non_consented"]["sampled-hr@10"] == 0.56  # the median, not the mean (0.553)
    assert row["test"]["all"]["full-ndcg@10"] == pytest.approx(0.028)
    assert row["epsilon_spent"] == 7.9 and row["wall_seconds"] == pytest.approx(56.0)  # the largest spend; median time
    assert row["run_dir"] == "/runs/0.5"  # the first run's, which paired_gain reads
    assert pu.main([*argv, "--repeats", "2"]) == 0 and pu.main([*argv, "--repeats", "3"]) == 0  # enough: skipped
    assert len(json.loads((tmp_path / "privacy_utility.json").read_text())["points"][0]["runs"]) == 3
    page = (tmp_path / "privacy_utility.md").read_text()
    assert "| regional (median of 3 runs) | 8 | 7.90 (max client) | 3 | 0.0560 | 0.0280 | 0.5600 | 0.2800 | " \
           "`0500500`, `0600600`, `0560560` |" in page
    assert pu.main([*argv, "--repeats", "0"]) == 2


def test_the_transition_release_bounds_each_user_and_keeps_only_strong_pairs() -> None:
    """simulations/transition_prior.py: one user's pairs move the sum by at most 1 (the sensitivity
    its sigma is calibrated to), and the sparse release keeps only counts above the threshold."""
    import numpy as np

    from simulations.transition_prior import dense_prior, sparse_prior, user_transitions

    rng = np.random.default_rng(0)
    for length in (2, 5, 300):
        src, dst, w = user_transitions(rng.integers(1, 6, size=length))
        assert np.linalg.norm(w) <= 1.0 + 1e-9 and len(src) == len(dst) == len(w)
    _, _, w = user_transitions(np.array([1, 2, 1, 2, 1, 2]))  # (1, 2) three times, (2, 1) twice
    assert list(w / w.min()) == pytest.approx([1.5, 1.0])  # pairs in sorted order: (1, 2), (2, 1)
    counts = np.array([[0, 0, 0], [0, 9.0, 1.0], [0, 2.0, 0.5]], dtype=np.float32)
    sparse = sparse_prior(counts, noise_std=1.0, z=3.0)
    assert sparse[1, 1] == pytest.approx(np.log(3.0)) and (sparse[[1, 2, 2], [2, 1, 2]] == 0).all()
    dense = dense_prior(counts, noise_std=1.0)
    assert dense[1, 1] > dense[1, 2] and dense[:, 0].tolist() == [0, 0, 0]


def test_the_cooccurrence_release_counts_as_the_table_does_and_bounds_each_user() -> None:
    """simulations/cooccurrence_release.py: each user's pairs, summed, are the table
    count_transitions builds (so the ceiling row is the real table), and after clipping no user's
    vector is longer than the bound its noise is calibrated to."""
    import numpy as np

    from shared.models.transitions import count_transitions
    from simulations.cooccurrence_release import as_table, clipped, user_pairs

    rng = np.random.default_rng(0)
    sequences = [rng.integers(1, 8, size=n) for n in (2, 3, 40, 120)]
    sequences.append(np.array([0, 0, 3, 4]))  # left padding counts nothing
    rows, keys, counts = user_pairs(sequences, 8, window=4, decay=0.5)
    expected = count_transitions(sequences, 7, window=4, decay=0.5).table
    assert abs(as_table(keys, counts, 8) - expected).max() < 1e-5
    assert set(rows) == {0, 1, 2, 3, 4} and (keys // 8 > 0).all() and (keys % 8 > 0).all()
    bounded = clipped(rows, counts, 1.5)
    norms = np.sqrt(np.bincount(rows, weights=bounded**2))
    assert norms.max() <= 1.5 + 1e-9
    assert norms[0] == pytest.approx(np.sqrt(np.bincount(rows, weights=counts**2))[0])  # short: not scaled


def test_paired_gain_reads_a_checkpoint_or_a_run_directory_and_refuses_anything_else(tmp_path: Path) -> None:
    """simulations/paired_gain.py: --tuned names a checkpoint (used as is) or a fedrec simulate run
    directory (its test round); anything else is a one-line error, not a traceback."""
    from shared.errors import FedrecError
    from simulations.paired_gain import checkpoint_of, tuned_arg

    checkpoint = tmp_path / "ck"
    checkpoint.mkdir()
    (checkpoint / "model.safetensors").write_bytes(b"")
    assert checkpoint_of("ck", checkpoint) == checkpoint
    run = tmp_path / "run-1"
    run.mkdir()
    (run / "metrics.json").write_text(json.dumps({"rounds": 3, "test_round": 2}))
    with pytest.raises(FedrecError, match="eps8: .*run-1 is neither .* test round's weights"):
        checkpoint_of("eps8", run)  # the round's weights are missing
    (run / "round-002").mkdir()
    (run / "round-002" / "model.safetensors").write_bytes(b"")
    assert checkpoint_of("eps8", run) == run / "round-002"
    (run / "metrics.json").write_text("{")
    with pytest.raises(FedrecError, match="eps8: .* not a fedrec simulate run's metrics"):
        checkpoint_of("eps8", run)
    with pytest.raises(FedrecError, match="neither a checkpoint nor"):
        checkpoint_of("x", tmp_path)
    assert tuned_arg("eps8=some/dir") == ("eps8", Path("some/dir"))
    with pytest.raises(argparse.ArgumentTypeError, match="NAME=DIRECTORY"):
        tuned_arg("some/dir")


def test_a_row_with_the_prior_names_its_share_of_epsilon_from_its_own_command() -> None:
    command = "fedrec simulate --run-config partitioning=region dp=true target-epsilon=8 popularity-epsilon=6"
    assert records.prior_share_of({"command": command, "epsilon": 8.0}) == 0.75
    assert records.prior_share_of({"command": command.replace(" popularity-epsilon=6", ""), "epsilon": 8.0}) is None
    assert records.prior_share_of({"command": "fedrec evaluate --baseline popularity", "epsilon": 8.0}) is None
