"""The popularity prior (#24): each silo's item counts released once under DP, summed by the server
into the item bias, the spend composed with the training rounds in the node's own accountant."""

from __future__ import annotations

import json
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from conftest import tiny_run_config
from flwr.app import ConfigRecord, Context, Message, Metadata, RecordDict

from client import privacy as budget
from client.data import local_data
from client.model import local_model
from client.policy import simulated_policy
from client.popularity import clipped_counts, release
from server.popularity import PRIOR_FILE, SHARPNESS, log_prior
from shared.config import PrivacyConfig
from shared.data.dataset import CATALOG_KEY, catalog_fingerprint
from shared.errors import FedrecError
from shared.models.params import load_flat, num_trainable
from shared.privacy.accounting import Spend, calibrate_sigma, epsilon
from shared.wire import weights_vector


def run_config(d: Path, cache: Path, **extra) -> dict:
    keys = {"batch_size": 4, "dp": True, "target_epsilon": 3.0, "num_server_rounds": 2, "popularity_epsilon": 1.0,
            "use_item_bias": True, **extra}
    return tiny_run_config(d, cache, None, nodes=2, **keys)


def node(cfg: dict, state_dir: Path, pid: int = 0, opt_in: bool = True) -> Context:
    """A deployed node (its own state directory). `opt_in`: its operator allows the count release
    the run asks for (a policy file that says so; without one, the strict default refuses)."""
    from client.policy import POLICY_FILE, NodePolicy, write_policy

    if opt_in and not (state_dir / POLICY_FILE).exists():
        state_dir.mkdir(parents=True, exist_ok=True)
        write_policy(state_dir, NodePolicy(max_popularity_epsilon=float(cfg["popularity-epsilon"])))
    return Context(run_id=7, node_id=pid + 1, node_config={"partition-id": pid, "num-partitions": 2,
                   "state-dir": str(state_dir)}, state=RecordDict(), run_config=cfg)  # fmt: skip


def query(fingerprint: str) -> Message:
    meta = Metadata(run_id=7, message_id="q", src_node_id=0, dst_node_id=1, reply_to_message_id="",
                    group_id="", created_at=time.time(), ttl=3600.0, message_type="query.popularity")  # fmt: skip
    return Message(RecordDict({"config": ConfigRecord({CATALOG_KEY: fingerprint})}), metadata=meta)


def test_one_user_moves_the_clipped_counts_by_at_most_the_clip_norm(csv_dir: Path, tmp_path: Path) -> None:
    local = local_data(run_config(csv_dir, tmp_path / "cache"), {"partition-id": 0, "num-partitions": 2})
    full = clipped_counts(local)
    for user in local.users[:5]:
        without = clipped_counts(replace(local, users=local.users[local.users != user]))
        assert 0 < np.linalg.norm(full - without) <= 1.0 + 1e-9  # add/remove one user: <= 1; replace one: <= 2
    # Only training items count: a user's held-out items are not in their share.
    one = replace(local, users=local.users[:1])
    counted = set(np.flatnonzero(clipped_counts(one)))
    assert counted == set(np.unique(local.dataset.train_sequence(int(local.users[0])))) - {0}


def test_a_silo_records_the_release_before_sending_noisy_counts(csv_dir: Path, tmp_path: Path) -> None:
    cfg = run_config(csv_dir, tmp_path / "cache")
    local = local_data(cfg, {"partition-id": 0, "num-partitions": 2})
    reply = release(query(catalog_fingerprint(local.dataset)), node(cfg, tmp_path / "node"))
    p = reply.content["privacy"]
    (entry,) = json.loads(str(p["history"]))
    assert (entry["round"], entry["sample_rate"], entry["steps"]) == (0, 1.0, 1)
    sigma = entry["noise_multiplier"]
    assert sigma == pytest.approx(calibrate_sigma(1.0, 1e-6, 1.0, 1))
    assert float(p["epsilon"]) <= 1.0 and float(p["epsilon"]) == pytest.approx(epsilon([(sigma, 1.0, 1)], 1e-6))
    saved = json.loads(budget.state_path(tmp_path / "node", local.client_id).read_text())
    assert [h["round"] for h in saved["history"]] == [0]
    noise = reply.content["counts"]["counts"].numpy() - clipped_counts(local)
    assert 0.5 * sigma < noise.std() < 2 * sigma  # noise of std sigma on every item, not the exact counts


def test_a_deployed_node_releases_counts_only_as_its_own_policy_allows(csv_dir: Path, tmp_path: Path) -> None:
    """The node, not the server, decides: a deployed node without an opt-in releases nothing,
    one whose cap is below what the run asks refuses, and a refusal spends nothing."""
    from client.policy import NodePolicy, write_policy

    cfg = run_config(csv_dir, tmp_path / "cache", popularity_epsilon=1.0)
    local = local_data(cfg, {"partition-id": 0, "num-partitions": 2})
    for cap, allowed in ((None, False), (0.5, False), (1.0, True)):
        state = tmp_path / f"node-{cap}"
        state.mkdir()
        if cap is not None:  # None: no policy file, the strict defaults
            write_policy(state, NodePolicy(max_epsilon=3.0, max_popularity_epsilon=cap))
        reply = release(query(catalog_fingerprint(local.dataset)), node(cfg, state, opt_in=False))
        assert ("counts" in reply.content) is allowed
        assert budget.state_path(state, local.client_id).exists() is allowed
        if not allowed:
            refusal = reply.content["refusal"]
            assert str(refusal["key"]) == "popularity-epsilon"
            assert ("max-popularity-epsilon 0" if cap is None else "> the node's 0.5") in str(refusal["reason"])


def test_a_node_answers_one_count_request_per_run(csv_dir: Path, tmp_path: Path) -> None:
    cfg = run_config(csv_dir, tmp_path / "cache")
    local = local_data(cfg, {"partition-id": 0, "num-partitions": 2})
    context = node(cfg, tmp_path / "node")
    first = release(query(catalog_fingerprint(local.dataset)), context)
    path = budget.state_path(tmp_path / "node", local.client_id)
    spent = path.read_text()
    second = release(query(catalog_fingerprint(local.dataset)), context)
    assert "counts" in first.content and "counts" not in second.content
    assert "already released" in str(second.content["refusal"]["reason"])
    assert path.read_text() == spent  # the refused second request spent nothing


def test_the_counts_noise_is_fresh_and_of_the_asked_size() -> None:
    from client.popularity import secure_noise

    a, b = secure_noise(3.0, 20_000), secure_noise(3.0, 20_000)
    assert a.dtype == np.float64 and abs(a.std() - 3.0) < 0.1 and abs(a.mean()) < 0.1
    assert not np.allclose(a, b)  # a fresh secure seed each release, not one derived from the run


def test_the_message_audit_lists_the_counts_as_a_reply_a_node_may_send(csv_dir: Path, tmp_path: Path) -> None:
    from client.app import app
    from client.message_audit import audit_path, violations
    from client.policy import NodePolicy, write_policy

    cfg = run_config(csv_dir, tmp_path / "cache")
    local = local_data(cfg, {"partition-id": 0, "num-partitions": 2})
    write_policy(tmp_path / "s", NodePolicy(audit_messages=True, max_popularity_epsilon=1.0))
    app(query(catalog_fingerprint(local.dataset)), node(cfg, tmp_path / "s"))
    (line,) = [json.loads(x) for x in audit_path(tmp_path / "s", 1).read_text().splitlines()]
    assert set(line["records"]) == {"counts", "privacy"} and violations(line, 1) == []
    line["records"]["counts"]["arrays"]["extra"] = ["float32", [3]]
    assert violations(line, 1)  # anything beside the one vector is flagged


def test_training_after_a_release_gets_only_what_remains_of_the_budget(csv_dir: Path, tmp_path: Path) -> None:
    cfg = PrivacyConfig(target_epsilon=3.0, popularity_epsilon=1.0)
    fresh = budget.new_state("region-0", "user", cfg)
    released = replace(fresh, history=(Spend(0, calibrate_sigma(1.0, 1e-6, 1.0, 1), 1.0, 1, 1.0, 1.0),))
    policy = simulated_policy(cfg)
    _, alone = budget.plan_round(fresh, cfg, 100, 10, 1, 3, policy=policy)
    state, after = budget.plan_round(released, cfg, 100, 10, 1, 3, policy=policy)
    assert after.noise_multiplier > alone.noise_multiplier
    # The release and all three planned rounds together stay within the budget.
    total = [*state.steps(), *[(after.noise_multiplier, after.sample_rate, after.steps)] * 3]
    assert epsilon(total, 1e-6) <= 3.0


def test_a_release_that_leaves_nothing_to_train_is_refused_and_spends_nothing(csv_dir: Path, tmp_path: Path) -> None:
    cfg = run_config(csv_dir, tmp_path / "cache", popularity_epsilon=1.0)
    local = local_data(cfg, {"partition-id": 0, "num-partitions": 2})
    path = budget.state_path(tmp_path / "node", local.client_id)
    # An earlier release at epsilon 2.9 of the node's 3: another at 1 composes to about 3.1.
    earlier = calibrate_sigma(2.9, 1e-6, 1.0, 1)
    budget.save_state(replace(budget.new_state(local.client_id, "user", PrivacyConfig(target_epsilon=3.0)),
                              history=(Spend(0, earlier, 1.0, 1, 1.0, 2.9),)), path)  # fmt: skip
    before = path.read_text()
    reply = release(query(catalog_fingerprint(local.dataset)), node(cfg, tmp_path / "node"))
    assert "counts" not in reply.content and "budget" in str(reply.content["refusal"]["reason"])
    assert path.read_text() == before  # nothing spent, nothing recorded


def test_a_node_whose_release_took_its_whole_budget_declines_training(csv_dir: Path, tmp_path: Path) -> None:
    """A budget lowered below what a node already released: it declines (budget-exhausted), it
    does not fail every round, and it releases nothing more."""
    from client.handlers import train
    from client.model import local_model
    from shared.models.params import trainable_state
    from shared.wire import to_record

    cfg = run_config(csv_dir, tmp_path / "cache", target_epsilon=2.0)
    local = local_data(cfg, {"partition-id": 0, "num-partitions": 2})
    path = budget.state_path(tmp_path / "node", local.client_id)
    budget.save_state(replace(budget.new_state(local.client_id, "user", PrivacyConfig(target_epsilon=3.0)),
                              history=(Spend(0, calibrate_sigma(2.5, 1e-6, 1.0, 1), 1.0, 1, 1.0, 2.5),)), path)  # fmt: skip
    model = local_model(cfg, local.dataset)
    meta = Metadata(run_id=7, message_id="t", src_node_id=0, dst_node_id=1, reply_to_message_id="", group_id="",
                    created_at=time.time(), ttl=3600.0, message_type="train")  # fmt: skip
    msg = Message(RecordDict({"arrays": to_record(trainable_state(model)),
                              "config": ConfigRecord({"server-round": 1})}), metadata=meta)  # fmt: skip
    reply = train(msg, node(cfg, tmp_path / "node"))
    assert str(reply.content["privacy"]["status"]) == "budget-exhausted" and "arrays" not in reply.content
    again = release(query(catalog_fingerprint(local.dataset)), node(cfg, tmp_path / "node"))
    assert "counts" not in again.content and "exhausted" in str(again.content["refusal"]["reason"])


def test_log_prior_orders_items_by_count_and_levels_noise() -> None:
    counts = np.array([5.0, 100.0, 10.0, -3.0, 0.0])
    prior = log_prior(counts, noise_std=2.0)
    assert prior[0] == 0.0 and np.isfinite(prior).all()
    assert prior[1] > prior[2] > prior[3] and prior[3] == prior[4]  # negative noisy counts floor at 0
    assert abs(prior[1:].mean()) < 1e-12
    assert np.allclose(log_prior(counts, 2.0, sharpness=2.0), 2 * prior)


@pytest.mark.parametrize("extra, match", [({"partitioning": "user"}, "silos"), ({"dp": False}, "dp=true"),
                                          ({"use_item_bias": False}, "use-item-bias")])  # fmt: skip
def test_a_popularity_prior_the_run_cannot_account_is_refused_before_round_1(csv_dir: Path, tmp_path: Path,
                                                                             extra: dict, match: str) -> None:  # fmt: skip
    from server.popularity import check_popularity_prior
    from shared.config import ModelConfig, PartitionConfig, from_run_config

    cfg = {**run_config(csv_dir, tmp_path / "cache"), **{k.replace("_", "-"): v for k, v in extra.items()}}
    with pytest.raises(FedrecError, match=match):
        check_popularity_prior(from_run_config(PrivacyConfig, cfg), from_run_config(PartitionConfig, cfg),
                               from_run_config(ModelConfig, cfg))  # fmt: skip


def test_popularity_epsilon_must_leave_part_of_the_budget() -> None:
    with pytest.raises(FedrecError, match="popularity-epsilon"):
        PrivacyConfig(target_epsilon=2.0, popularity_epsilon=2.0)


def test_a_federation_starts_its_item_bias_from_the_released_counts(csv_dir: Path, tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    """In process: the server asks both silos, ledgers their round-0 spends, starts the item bias
    from the log of the summed noisy counts, and the privacy report composes the release with the
    rounds: every client's epsilon within its budget, its history beginning with round 0."""
    import client.popularity
    from inprocess import run_federation

    released: list[Message] = []  # what each node sent, as it left the node
    real = client.popularity.release
    monkeypatch.setattr(client.popularity, "release", lambda msg, ctx: released.append(real(msg, ctx)) or released[-1])
    run = run_federation(tiny_run_config(csv_dir, tmp_path / "cache", tmp_path / "out", nodes=2, batch_size=4,
                                         dp=True, target_epsilon=3.0, num_server_rounds=1, popularity_epsilon=1.0,
                                         use_item_bias=True), 2)  # fmt: skip
    assert run.code == 0, run.error
    ledger = [json.loads(line) for line in (run.run_dir / "privacy_ledger.jsonl").read_text().splitlines()]
    assert sorted(e["round"] for e in ledger if "client_id" in e) == [0, 0, 1, 1]
    assert len(released) == 2 and all("counts" in m.content for m in released)
    total = sum(m.content["counts"]["counts"].numpy().astype(np.float64) for m in released)
    sigmas = [float(m.content["privacy"]["noise-multiplier"]) for m in released]
    expected = log_prior(total, float(np.sqrt(sum(s * s for s in sigmas))), SHARPNESS)
    (first,) = [m for m in run.grid.delivered if m.metadata.message_type == "train"][:1]
    model = local_model(run.config, local_data(run.config, {"partition-id": 0, "num-partitions": 2}).dataset)
    load_flat(model, weights_vector(first.content["arrays"], num_trainable(model)))
    bias = model.item_bias.weight[:, 0].detach().numpy()
    assert np.allclose(bias, expected, atol=1e-5)
    kept = json.loads((run.run_dir / PRIOR_FILE).read_text())  # what the bias is recomputed from
    assert np.allclose(log_prior(np.array(kept["counts"]), kept["noise_std"], kept["sharpness"]), expected)
    report = json.loads((run.run_dir / "privacy_report.json").read_text())
    for client in report["clients"]:
        assert client["history"][0]["round"] == 0 and client["epsilon"] <= 3.0
