"""The canary audit: its epsilon lower bound is valid and has power, and canaries reach training only."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import make_tiny, tiny_run_config, write_csv

from client.data import local_data
from client.training import local_evaluate, local_examples
from cli import main
from shared.config import DataConfig, ModelConfig, TrainConfig
from shared.data.dataset import build_dataset
from shared.data.readers import read_directory
from shared.errors import FedrecError
from shared.models.checkpoint import save_checkpoint
from shared.models.training import build_model, make_optimizer, train_epoch
from shared.privacy.canary_audit import audit_run
from shared.privacy.canaries import (canary_examples, canary_scores, check_partitioning, make_canaries,
                                     record_canaries)  # fmt: skip
from shared.privacy.one_run import audit_guesses, epsilon_lower_bound, p_value

# Item ID embeddings, as the audit runs use: a frozen text tower alone cannot learn random users.
SMALL = ModelConfig(dim=16, num_layers=1, num_heads=2, max_len=30, retrieve_top_n=10, dropout=0.0,
                    use_id_embedding=True)  # fmt: skip


def test_perfect_guesses_bound_epsilon_well_above_one_and_delta_weakens_it() -> None:
    assert epsilon_lower_bound(200, 100, 100) == pytest.approx(3.49, abs=0.01)  # 0.05 ** (1/100) = q
    assert epsilon_lower_bound(200, 20, 20) > 1.5
    assert epsilon_lower_bound(200, 100, 100, delta=1e-3) < epsilon_lower_bound(200, 100, 100, delta=1e-5)
    assert p_value(200, 100, 100, 3.0, 0.5) == 1.0  # a delta that large explains anything
    scores = np.r_[np.ones(100), np.zeros(100)]
    bound, rules = audit_guesses(scores, scores > 0.5)
    assert bound > 3.5 and [r.correct for r in rules] == [20, 40, 100, 200]


def test_coin_flip_guesses_bound_epsilon_near_zero() -> None:
    rng = np.random.default_rng(0)
    bound, _ = audit_guesses(rng.normal(size=1000), rng.random(1000) < 0.5)
    assert bound < 0.2
    assert epsilon_lower_bound(100, 50, 25) == 0.0


def test_the_bound_stays_below_a_known_epsilon() -> None:
    """Randomized response at epsilon 1 is exactly 1-DP per canary: the best attack (its own
    answer) may exceed 1 in at most 5% of runs."""
    q = 1 / (1 + np.exp(-1.0))
    bounds = []
    for seed in range(20):
        rng = np.random.default_rng(seed)
        members = rng.random(2000) < 0.5
        answer = np.where(rng.random(2000) < q, members, ~members)
        bounds.append(audit_guesses(answer + 0.01 * rng.random(2000), members)[0])
    assert sum(b > 1.0 for b in bounds) <= 1 and np.median(bounds) > 0.7  # tight, and valid


def test_canaries_come_from_the_seed_and_half_are_trained_on() -> None:
    a, b = make_canaries(400, 1682, seed=7), make_canaries(400, 1682, seed=7)
    assert np.array_equal(a.sequences, b.sequences) and np.array_equal(a.members, b.members)
    assert not np.array_equal(make_canaries(400, 1682, seed=8).members, a.members)
    assert 160 < a.members.sum() < 240 and a.sequences.min() >= 1 and a.sequences.max() <= 1682
    assert all(len(set(s)) == len(s) for s in np.r_[a.sequences, a.decoys])
    # Every slot trains one example, its canary or its decoy: flipping a coin swaps one for another.
    parts = [a.for_partition(p, 3) for p in range(3)]
    assert [len(p) for p in parts] == [134, 133, 133]
    planted = np.concatenate(parts)
    assert np.array_equal(np.sort(planted, axis=0),
                          np.sort(np.r_[a.sequences[a.members], a.decoys[~a.members]], axis=0))  # fmt: skip
    with pytest.raises(FedrecError, match="silo partitioning"):
        check_partitioning("user")


def test_included_canaries_reach_a_nodes_training_and_never_its_evaluation(csv_dir: Path, tmp_path: Path) -> None:
    base = tiny_run_config(csv_dir, tmp_path, max_len=30)
    plain = local_data(base, {"partition-id": 1, "num-partitions": 3})
    local = local_data({**base, "audit-canaries": 30, "audit-seed": 3}, {"partition-id": 1, "num-partitions": 3})
    mine = make_canaries(30, plain.dataset.num_items, 3).for_partition(1, 3)
    assert len(mine) == 10 and np.array_equal(local.canaries, mine)
    assert np.array_equal(local.users, plain.users) and local.dataset is plain.dataset
    from client.model import local_model

    model = local_model(base, local.dataset)
    data, without = local_examples(model, local, "user"), local_examples(model, plain, "user")
    assert len(data) == len(without) + len(mine)
    assert np.array_equal(data.targets[-len(mine):][:, -24:], mine[:, 1:])  # fmt: skip
    metrics = local_evaluate(model, local, "valid", "cpu")
    assert metrics == local_evaluate(model, plain, "valid", "cpu")  # evaluation is the users' alone
    with pytest.raises(FedrecError, match="silo partitioning"):
        local_data({**base, "partitioning": "user", "num-partitions": 0, "audit-canaries": 4}, {"partition-id": 0})


@pytest.fixture(scope="module")
def memorised(tmp_path_factory):
    """A tiny model trained on the included ones of 40 canaries until it knows them by heart."""
    d = write_csv(make_tiny(num_users=20, num_items=60, seed=5), tmp_path_factory.mktemp("a") / "d")
    dataset = build_dataset(read_directory(d), DataConfig(dataset="csv", data_path=str(d)))
    torch.manual_seed(0)
    model = build_model(dataset, SMALL, tmp_path_factory.mktemp("cache"))
    canaries = make_canaries(40, dataset.num_items, seed=1)
    data = canary_examples(canaries.sequences[canaries.members], SMALL.max_len, len(model.config["feature_sizes"]))
    cfg = TrainConfig(batch_size=8, lr=1e-2, num_negatives=16, weight_decay=0.0)
    optimizer, rng = make_optimizer(model, cfg), np.random.default_rng(0)
    for _ in range(10):  # enough to separate them (and slow on a busy 2-core machine)
        train_epoch(model, dataset.num_items, optimizer, data, cfg, rng, "cpu", progress=False)
    return model, canaries


def test_a_memorising_model_scores_its_canaries_higher_and_the_bound_sees_it(memorised) -> None:
    model, canaries = memorised
    scores = canary_scores(model, canaries.sequences)
    assert scores[canaries.members].min() > scores[~canaries.members].max()
    assert audit_guesses(scores, canaries.members)[0] > 1.0  # 24 of 40 trained on: 20 "in" guesses all right


def test_fedrec_audit_reads_a_run_directory(memorised, tmp_path: Path, capsys) -> None:
    model, canaries = memorised
    assert main(["audit", str(tmp_path / "nowhere")]) == 2
    assert "no such run directory" in capsys.readouterr().err
    run = tmp_path / "run-1"
    save_checkpoint(model, run / "round-002", {})
    assert main(["audit", str(run)]) == 2
    assert "audit-canaries > 0" in capsys.readouterr().err
    record_canaries(run, len(canaries), 1, int(model.config["num_items"]))
    assert main(["audit", str(run), "--json", str(tmp_path / "a.json")]) == 0
    line = capsys.readouterr().out
    assert "epsilon >=" in line and "reported epsilon no DP" in line
    result = json.loads((tmp_path / "a.json").read_text())
    assert result["epsilon_lower_bound"] > 1.0 and result["checkpoint"].endswith("round-002")
    (run / "privacy_report.json").write_text(json.dumps({"num_clients": 2, "delta": 1e-3,
                                                         "epsilon_quantiles": {"p100": 8.0}}))  # fmt: skip
    dp = audit_run(run)
    assert dp["reported_epsilon"] == 8.0 and dp["delta"] == 1e-3
    assert dp["reported_as"] == "local DP, max over clients"
    (run / "privacy_report.json").write_text(json.dumps({"num_clients": 0, "central": {"epsilon": 1.0, "delta": 1e-5}}))
    central = audit_run(run)  # a canary swap is two add/remove steps of one client: group privacy
    assert central["reported_epsilon"] == 2.0 and central["delta"] == pytest.approx((1 + np.e) * 1e-5)
    assert dp["epsilon_lower_bound"] < result["epsilon_lower_bound"]  # delta pays for rare failures
    record_canaries(run, len(canaries), 1, 999)
    with pytest.raises(FedrecError, match="catalog has"):
        audit_run(run)
