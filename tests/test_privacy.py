"""Local DP-SGD, its accounting across rounds and restarts, the ledger and the privacy report."""

import html.parser
import base64
import json
import time
from pathlib import Path

import pytest
import torch
from conftest import tiny_run_config
from flwr.app import ConfigRecord, Context, Message, Metadata, RecordDict

from client import privacy as budget
from client.handlers import train
from client.data import local_data
from client.model import local_model
from client.training import local_examples
from server import ledger
from server.privacy import PrivacyTracker
from server.privacy_report import write_report
from shared.config import PrivacyConfig
from shared.errors import FedrecError
from shared.models.params import flat_trainable, num_trainable, trainable_state
from shared.privacy.accounting import calibrate_sigma, epsilon
from shared.wire import to_record, weights_vector

ROUNDS = 3


def run_config(d: Path, cache: Path, out: Path, **extra) -> dict:
    return tiny_run_config(d, cache, out, nodes=2, batch_size=4, dp=True, target_epsilon=3.0,
                           num_server_rounds=ROUNDS, **extra)  # fmt: skip


def train_message(model, server_round: int) -> Message:
    content = RecordDict({"arrays": to_record(trainable_state(model)),
                          "config": ConfigRecord({"server-round": server_round})})  # fmt: skip
    # As the SuperLink delivers it: with full metadata (a bare Message needs a running task).
    meta = Metadata(run_id=7, message_id="m", src_node_id=0, dst_node_id=1, reply_to_message_id="",
                    group_id="", created_at=time.time(), ttl=3600.0, message_type="train")  # fmt: skip
    return Message(content, metadata=meta)


def node(cfg: dict, state_dir: Path, pid: int = 0) -> Context:
    """A fresh node process: its Context starts empty; only the state directory persists."""
    return Context(run_id=7, node_id=pid + 1, node_config={"partition-id": pid, "num-partitions": 2,
                   "state-dir": str(state_dir)}, state=RecordDict(), run_config=cfg)  # fmt: skip


def test_epsilon_equals_google_pld_under_replace_one_stepped_through_the_same_history() -> None:
    """Recomputed from scratch with dp_accounting, one event per round (no compression) and a
    finer grid than fedrec's (3e-4 against 1e-3; 1e-4 gives the same 6 digits at 3x the time):
    the same epsilon, and above add/remove's for the same history."""
    from dp_accounting import NeighboringRelation, dp_event, pld

    history = [(1.1, 0.05, 20), (1.1, 0.05, 20), (0.9, 0.1, 10)]

    def google(relation, grid: float) -> float:  # type: ignore[no-untyped-def]
        acc = pld.PLDAccountant(neighboring_relation=relation, value_discretization_interval=grid)
        for sigma, q, steps in history:
            acc.compose(dp_event.PoissonSampledDpEvent(q, dp_event.GaussianDpEvent(sigma)), steps)
        return acc.get_epsilon(1e-6)

    assert epsilon(history, 1e-6) == pytest.approx(google(NeighboringRelation.REPLACE_ONE, 3e-4), rel=2e-3)
    assert epsilon(history, 1e-6) > google(NeighboringRelation.ADD_OR_REMOVE_ONE, 1e-3) * 1.2


def test_calibrated_noise_fits_the_planned_rounds_and_no_more() -> None:
    q, steps = 0.05, 20
    sigma = calibrate_sigma(4.0, 1e-5, q, ROUNDS * steps)
    assert epsilon([(sigma, q, steps)] * ROUNDS, 1e-5) <= 4.0
    assert epsilon([(sigma, q, steps)] * (ROUNDS + 1), 1e-5) > 4.0
    assert epsilon([(sigma * 0.9, q, steps)] * ROUNDS, 1e-5) > 4.0  # close to the smallest sigma


def test_dp_training_spends_then_declines_across_restarts(csv_dir: Path, tmp_path: Path) -> None:
    cfg = run_config(csv_dir, tmp_path / "cache", tmp_path / "out")
    state_dir = tmp_path / "node-0"
    local = local_data(cfg, {"partition-id": 0, "num-partitions": 2})
    model = local_model(cfg, local.dataset)
    seen = []
    for r in range(1, ROUNDS + 2):
        # A restart of the node before every round: only its state directory survives.
        reply = train(train_message(model, r), node(cfg, state_dir))
        p = reply.content["privacy"]
        seen.append((str(p["status"]), float(p["epsilon"]), "arrays" in reply.content))
    statuses, eps, has_arrays = zip(*seen)
    assert statuses == ("active",) * ROUNDS + ("budget-exhausted",)
    assert has_arrays == (True,) * ROUNDS + (False,)
    assert list(eps) == sorted(eps) and 0 < eps[0] and eps[-1] <= 3.0  # never decreases, never over
    saved = json.loads(budget.state_path(state_dir, "iid-0").read_text())
    assert [h["round"] for h in saved["history"]] == list(range(1, ROUNDS + 1))
    # A later run on the same data with the same state directory: still exhausted, nothing spent.
    again = train(train_message(model, 1), node({**cfg, "output-dir": str(tmp_path / "o2")}, state_dir))
    assert again.content["privacy"]["status"] == "budget-exhausted"
    assert len(json.loads(budget.state_path(state_dir, "iid-0").read_text())["history"]) == ROUNDS


class _Killed(BaseException):
    """Stands for the node's process dying: nothing after it runs, no handler catches it."""


def test_a_node_killed_between_training_and_replying_has_recorded_its_spending(csv_dir: Path, tmp_path: Path,
                                                                              monkeypatch) -> None:  # fmt: skip
    from client import handlers

    def die(*args: object) -> None:  # the first thing after training: building the reply
        raise _Killed

    cfg = run_config(csv_dir, tmp_path / "cache", tmp_path / "out")
    model = local_model(cfg, local_data(cfg, {"partition-id": 0, "num-partitions": 2}).dataset)
    monkeypatch.setattr(handlers, "flat_trainable", die)
    with pytest.raises(_Killed):
        handlers.train(train_message(model, 1), node(cfg, tmp_path / "node-0"))
    saved = json.loads(budget.state_path(tmp_path / "node-0", "iid-0").read_text())
    assert [h["round"] for h in saved["history"]] == [1] and saved["history"][0]["epsilon"] > 0


def test_dp_step_leaves_no_opacus_hooks_on_the_shared_model(csv_dir: Path, tmp_path: Path) -> None:
    cfg = run_config(csv_dir, tmp_path / "cache", tmp_path / "out")
    local = local_data(cfg, {"partition-id": 1, "num-partitions": 2})
    model = local_model(cfg, local.dataset)
    before = flat_trainable(model)
    reply = train(train_message(model, 1), node(cfg, tmp_path / "s", pid=1))
    after = weights_vector(reply.content["arrays"], num_trainable(model))
    assert not torch.equal(before, after)
    hooked = [m for m in model.modules() if m._forward_hooks or m._backward_hooks]
    assert not hooked and not any(hasattr(p, "grad_sample") and p.grad_sample is not None
                                  for p in model.parameters())  # fmt: skip


def test_local_steps_reach_the_dp_plan_through_the_train_message(csv_dir: Path, tmp_path: Path) -> None:
    cfg = {**run_config(csv_dir, tmp_path / "cache", tmp_path / "out"), "local-steps": 3}
    model = local_model(cfg, local_data(cfg, {"partition-id": 0, "num-partitions": 2}).dataset)
    reply = train(train_message(model, 1), node(cfg, tmp_path / "s"))
    assert reply.content["privacy"]["steps"] == 3


def test_example_unit_has_one_example_per_training_interaction(csv_dir: Path, tmp_path: Path) -> None:
    cfg = {**run_config(csv_dir, tmp_path / "cache", tmp_path / "out"), "partitioning": "user", "num-partitions": 0}
    local = local_data(cfg, {"partition-id": 3})
    model = local_model(cfg, local.dataset)
    examples = local_examples(model, local, "example")
    (user,) = local.users
    assert len(examples) == len(local.dataset.train_sequence(int(user))) - 1
    assert ((examples.targets > 0).sum(axis=1) == 1).all()  # each example protects one target


def test_an_unreadable_state_file_is_refused_not_reset(csv_dir: Path, tmp_path: Path) -> None:
    cfg = run_config(csv_dir, tmp_path / "cache", tmp_path / "out")
    state_dir = tmp_path / "node"
    state_dir.mkdir()
    path = budget.state_path(state_dir, "iid-0")
    path.write_text('{"client_id": "iid-0", "history": [')
    model = local_model(cfg, local_data(cfg, {"partition-id": 0, "num-partitions": 2}).dataset)
    with pytest.raises(FedrecError, match="unreadable.*refusing"):
        train(train_message(model, 1), node(cfg, state_dir))
    assert path.read_text() == '{"client_id": "iid-0", "history": ['


@pytest.mark.parametrize("key,value,match", [
    ("target-epsilon", 0, "target-epsilon must be > 0"),
    ("target-delta", 1.5, "target-delta must be in"),
    ("noise-multiplier", -1, "noise-multiplier must be >= 0"),
    ("max-grad-norm", 0, "max-grad-norm must be > 0"),
    ("accountant", "gdp2", "accountant must be one of"),
    ("central-clipping-norm", 0, "central-clipping-norm must be > 0"),
])  # fmt: skip
def test_bad_privacy_settings_are_refused(key, value, match) -> None:
    from shared.config import from_run_config

    with pytest.raises(FedrecError, match=match):
        from_run_config(PrivacyConfig, {key: value})


def spend(client: str, r: int, eps: float, history: list, status: str = "active") -> dict:
    return {"round": r, "client_id": client, "node_id": hash(client) % 1000, "partition_id": 0,
            "unit": "user", "status": status, "noise_multiplier": 1.0, "sample_rate": 0.1,
            "steps": 10, "max_grad_norm": 1.0, "epsilon": eps, "delta": 1e-4, "budget": 5.0,
            "accountant": "pld", "history": history, "time": 0.0}  # fmt: skip


def history_for(rounds: int) -> list[dict]:
    out = []
    for r in range(1, rounds + 1):
        out.append({"round": r, "noise_multiplier": 1.0, "sample_rate": 0.1, "steps": 10,
                    "max_grad_norm": 1.0, "epsilon": epsilon([(1.0, 0.1, 10)] * r, 1e-4)})  # fmt: skip
    return out


def google_epsilons(history: list[dict], delta: float) -> list[float]:
    """Epsilon after each round of `history` from Google's PLD accountant called directly, one
    round composed onto the last: independent of shared.privacy.accounting."""
    from dp_accounting import NeighboringRelation, dp_event, pld

    acc = pld.PLDAccountant(neighboring_relation=NeighboringRelation.REPLACE_ONE, value_discretization_interval=1e-3)
    out = []
    for h in history:
        acc.compose(dp_event.PoissonSampledDpEvent(h["sample_rate"], dp_event.GaussianDpEvent(h["noise_multiplier"])),
                    h["steps"])  # fmt: skip
        out.append(acc.get_epsilon(delta))
    return out


def test_ledger_survives_a_torn_append_and_the_report_reads_it(tmp_path: Path) -> None:
    run = tmp_path / "run"
    for r in (1, 2):
        ledger.append(run, [spend(c, r, history_for(r)[-1]["epsilon"], history_for(r)) for c in ("a", "b")])
    ledger.append(run, [spend("c", 1, 9.0, [], status="budget-exhausted")])
    with open(run / ledger.LEDGER, "a") as f:
        f.write('{"round": 3, "client_id": "a", "epsi')  # a crash mid-append
    assert len(ledger.read_ledger(run)) == 5
    report = write_report(run)
    assert report["accountant"] == "pld" and report["unit"] == "user" and report["central"] is None
    assert report["neighbouring_relation"] == "replace_one"
    assert report["status_counts"] == {"active": 2, "budget-exhausted": 1}
    a = next(c for c in report["clients"] if c["client_id"] == "a")
    assert [h["round"] for h in a["history"]] == [1, 2]
    assert set(a) >= {"client_id", "unit", "delta", "epsilon", "budget", "status", "history", "neighbouring_relation",
                      "sampling", "accountant", "unit_does_not_cover", "planned_noisy_steps", "executed_noisy_steps"}
    assert a["planned_noisy_steps"] == a["executed_noisy_steps"] == 20
    # c never trained: whatever it claims, its history spent nothing.
    assert next(c for c in report["clients"] if c["client_id"] == "c")["epsilon"] == 0.0


def test_the_report_takes_epsilon_from_the_history_not_from_the_node(tmp_path: Path) -> None:
    """A node that claims epsilon 0.01, in its ledger line and in every round of its history, gets
    in the report the epsilon its recorded history (sigma, q, steps, delta) implies, and the
    quantiles are of that epsilon."""
    honest = history_for(2)
    ledger.append(tmp_path, [spend("b", 2, honest[-1]["epsilon"], honest)])
    lying = [h | {"epsilon": 0.01} for h in history_for(3)]
    ledger.append(tmp_path, [spend("a", 3, 0.01, lying)])
    report = write_report(tmp_path)
    a, b = report["clients"]
    truth = google_epsilons(lying, 1e-4)
    assert truth[0] > 0.1  # far from the claim, so the report cannot pass by echoing it
    assert a["client_id"] == "a" and a["epsilon"] == pytest.approx(truth[-1], rel=2e-3)
    assert [h["epsilon"] for h in a["history"]] == pytest.approx(truth, rel=2e-3)
    assert b["epsilon"] == pytest.approx(google_epsilons(honest, 1e-4)[-1], rel=2e-3)
    q = report["epsilon_quantiles"]
    assert q["p100"] == a["epsilon"] and q["p0"] == b["epsilon"]
    assert q["p50"] == pytest.approx((a["epsilon"] + b["epsilon"]) / 2)
    assert "0.0100" not in (tmp_path / "privacy_report.html").read_text()


class _Images(html.parser.HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.images: list[str] = []
        self.open: list[str] = []

    def handle_starttag(self, tag, attrs):  # type: ignore[no-untyped-def]
        if tag == "img":
            self.images.append(dict(attrs)["src"])
        elif tag not in ("meta", "br"):
            self.open.append(tag)

    def handle_endtag(self, tag):  # type: ignore[no-untyped-def]
        assert self.open and self.open.pop() == tag, f"unbalanced </{tag}>"


def test_html_report_is_well_formed_and_self_contained(tmp_path: Path) -> None:
    run = tmp_path / "run"
    ledger.append(run, [spend("a", 1, history_for(1)[-1]["epsilon"], history_for(1))])
    (run / "metrics.json").write_text(json.dumps({"history": [{"round": 1, "valid": {"ranking-full-ndcg@10": 0.1}}]}))
    write_report(run)
    parser = _Images()
    parser.feed((run / "privacy_report.html").read_text())
    assert not parser.open and len(parser.images) == 4
    for src in parser.images:
        assert src.startswith("data:image/png;base64,")
        assert base64.b64decode(src.split(",", 1)[1])[:8] == b"\x89PNG\r\n\x1a\n"


def test_server_stops_sampling_exhausted_clients(tmp_path: Path) -> None:
    class Reply:
        def __init__(self, node: int, status: str) -> None:
            self.content = RecordDict({"privacy": ConfigRecord({
                "client-id": f"iid-{node}", "partition-id": node, "unit": "user", "status": status,
                "epsilon": 1.0, "delta": 1e-4, "budget": 1.0, "accountant": "pld",
                "noise-multiplier": 1.0, "sample-rate": 0.1, "steps": 10, "max-grad-norm": 1.0,
                "history": "[]"})})  # fmt: skip
            self.metadata = type("M", (), {"src_node_id": node})()

        def has_error(self) -> bool:
            return False

    tracker = PrivacyTracker(tmp_path)
    trained = tracker.record(1, [Reply(1, "active"), Reply(2, "budget-exhausted")])
    assert [m.metadata.src_node_id for m in trained] == [1] and tracker.exhausted == {2}
    assert PrivacyTracker(tmp_path).exhausted == {2}  # a restarted server remembers
    assert [e["status"] for e in ledger.read_ledger(tmp_path)] == ["active", "budget-exhausted"]


def test_central_dp_clips_the_whole_update_to_the_norm() -> None:
    from shared.privacy.central import clip_update

    start = torch.tensor([0.0, 0.0, 0.0, 1.0, 1.0])  # two layers' weights, flat: [a | b]
    trained = torch.tensor([3.0, 0.0, 0.0, 1.0, 5.0])  # update (3, 0, 0 | 0, 4): norm 5
    clipped = clip_update(trained, start, 1.0)
    assert float(torch.linalg.vector_norm(clipped - start)) == pytest.approx(1.0)
    assert torch.allclose(clipped, torch.tensor([0.6, 0.0, 0.0, 1.0, 1.8]))
    assert clip_update(trained, start, 10.0).tolist() == trained.tolist()  # within the norm: unchanged


def test_delta_is_public_and_fixed_whatever_the_node_size(csv_dir: Path, tmp_path: Path) -> None:
    """Two nodes of different sizes report the run's delta, 1e-6 by default: a delta derived from
    the data would disclose its size."""
    cfg = {k: v for k, v in run_config(csv_dir, tmp_path / "cache", tmp_path / "out").items()}
    deltas = set()
    for pid in (0, 1):
        local = local_data(cfg, {"partition-id": pid, "num-partitions": 2})
        reply = train(train_message(local_model(cfg, local.dataset), 1), node(cfg, tmp_path / f"s{pid}", pid))
        deltas.add(float(reply.content["privacy"]["delta"]))
    assert deltas == {1e-6} and PrivacyConfig().target_delta <= 1e-5


def test_a_resume_marker_supersedes_the_entries_of_redone_rounds(tmp_path: Path) -> None:
    ledger.append(tmp_path, [spend("a", 1, 1.0, []), spend("a", 2, 2.0, []), spend("b", 2, 2.0, [])])
    ledger.mark_resume(tmp_path, 1)  # the server died in round 2 and resumed from round 1's checkpoint
    ledger.append(tmp_path, [spend("a", 2, 2.5, []), spend("b", 2, 2.5, [])])
    entries = ledger.read_ledger(tmp_path)
    assert sorted((e["client_id"], e["round"], e["epsilon"]) for e in entries) == [("a", 1, 1.0), ("a", 2, 2.5), ("b", 2, 2.5)]


def test_superseded_spending_stays_in_the_report(tmp_path: Path) -> None:
    """Client b trained in round 2, the server died, and the redone round 2 did not sample b: b's
    round-2 spend is still its epsilon in the report."""
    ledger.append(tmp_path, [spend(c, 1, history_for(1)[-1]["epsilon"], history_for(1)) for c in ("a", "b")])
    ledger.append(tmp_path, [spend(c, 2, history_for(2)[-1]["epsilon"], history_for(2)) for c in ("a", "b")])
    ledger.mark_resume(tmp_path, 1)
    ledger.append(tmp_path, [spend("a", 2, history_for(2)[-1]["epsilon"], history_for(2))])
    b = next(c for c in write_report(tmp_path)["clients"] if c["client_id"] == "b")
    assert len(b["history"]) == 2 and b["epsilon"] == pytest.approx(history_for(2)[-1]["epsilon"])


def _weights_after_one_round(cfg: dict, tmp_path: Path, name: str) -> torch.Tensor:
    local = local_data(cfg, {"partition-id": 0, "num-partitions": 2})
    model = local_model(cfg, local.dataset)
    load_start = flat_trainable(model).clone()
    reply = train(train_message(model, 1), node(cfg, tmp_path / name))
    from shared.models.params import load_flat

    load_flat(model, load_start)  # the process's model serves the next call from the same start
    return weights_vector(reply.content["arrays"], num_trainable(model))


def test_dp_noise_cannot_be_replayed_from_the_run_config(csv_dir: Path, tmp_path: Path) -> None:
    """Two DP runs with one run config give different weights (noise and sampling come from the
    OS's secure source, not from seed, round and partition, which the server knows); without
    DP the same run config gives the same weights."""
    cfg = run_config(csv_dir, tmp_path / "cache", tmp_path / "out")
    first, second = (_weights_after_one_round(cfg, tmp_path, f"dp{k}") for k in (1, 2))
    assert not torch.equal(first, second)
    plain = {**cfg, "dp": False}
    node_free = lambda c, d, pid=0: Context(run_id=7, node_id=1, node_config={"partition-id": 0, "num-partitions": 2},
                                            state=RecordDict(), run_config=c)  # noqa: E731  # fmt: skip
    local = local_data(plain, {"partition-id": 0, "num-partitions": 2})
    model = local_model(plain, local.dataset)
    start = flat_trainable(model).clone()
    a = weights_vector(train(train_message(model, 1), node_free(plain, None)).content["arrays"], num_trainable(model))
    from shared.models.params import load_flat

    load_flat(model, start)
    b = weights_vector(train(train_message(model, 1), node_free(plain, None)).content["arrays"], num_trainable(model))
    assert torch.equal(a, b)


def test_a_gradient_canary_is_hidden_by_noise_nobody_can_regenerate(csv_dir: Path, tmp_path: Path) -> None:
    """White-box: with a fixed public start, the server subtracts what it can compute from public
    values (the update of a replay with the same seed, round and partition) from the node's
    update. With the secure source, what is left is the fresh noise, as large as the noise
    itself; a return of seeded noise would leave (nearly) nothing."""
    cfg = run_config(csv_dir, tmp_path / "cache", tmp_path / "out")
    node_update = _weights_after_one_round(cfg, tmp_path, "n")
    replay = _weights_after_one_round(cfg, tmp_path, "r")
    local = local_data(cfg, {"partition-id": 0, "num-partitions": 2})
    start = flat_trainable(local_model(cfg, local.dataset))
    residual = float(torch.linalg.vector_norm(node_update - replay))
    step = float(torch.linalg.vector_norm(node_update - start))
    assert residual > 0.5 * step


@pytest.mark.parametrize("mode", ["hooks", "ghost"])
def test_an_empty_poisson_batch_takes_a_noise_only_step(csv_dir: Path, tmp_path: Path, mode: str) -> None:
    """q so small that every batch is empty: no example is used, yet every planned step runs
    and adds noise, so the weights move and the history counts every step as executed."""
    from client.privacy import RoundPlan
    from client.training import local_fit
    from client.handlers import train_config

    cfg = run_config(csv_dir, tmp_path / "cache", tmp_path / "out")
    local = local_data(cfg, {"partition-id": 0, "num-partitions": 2})
    model = local_model(cfg, local.dataset)
    data = local_examples(model, local, "user")
    before = flat_trainable(model).clone()
    plan = RoundPlan(noise_multiplier=1.0, sample_rate=1e-9, steps=4, max_grad_norm=1.0, grad_sample_mode=mode)
    metrics = local_fit(model, local, data, train_config({**cfg, "optimizer": "sgd"}), 1, dp=plan)
    assert metrics["dp-steps"] == 4
    assert not torch.equal(before, flat_trainable(model))


def _dp_step_update(csv_dir: Path, tmp_path: Path, plan, rows: slice = slice(None)) -> tuple[torch.Tensor, int]:
    """The shipped DP-SGD (client/training.py's local_fit) on node 0's examples `rows` under `plan`,
    with plain SGD at lr 1 and no weight decay, so the update is minus the privatised gradient:
    (sum of clipped per-example gradients + N(0, (sigma C)^2)) / B, B the expected batch size.
    Returns the update and the number of examples."""
    from dataclasses import replace as dc_replace

    from client.handlers import train_config
    from client.training import local_fit
    from shared.models.params import load_flat

    cfg = run_config(csv_dir, tmp_path / "cache", tmp_path / "out")
    local = local_data(cfg, {"partition-id": 0, "num-partitions": 2})
    model = local_model(cfg, local.dataset)
    full = local_examples(model, local, "user")
    data = dc_replace(full, **{k: getattr(full, k)[rows] for k in ("users", "history", "targets", "features")})
    start = flat_trainable(model).clone()
    local_fit(model, local, data, train_config({**cfg, "optimizer": "sgd", "lr": 1.0, "weight-decay": 0.0}), 1, dp=plan)
    update = flat_trainable(model) - start
    load_flat(model, start)  # the process's model serves the next test from the same start
    return update, len(data)


@pytest.mark.parametrize("mode", ["hooks", "ghost"])
def test_the_dp_step_clips_each_example_to_the_norm(csv_dir: Path, tmp_path: Path, mode: str) -> None:
    """No noise, every example in the batch (q = 1, so B = n), a norm far below any gradient's:
    one example moves the weights by exactly C / 1; n examples by at most n C / n, and by more
    than C / n, which clipping the batch's summed gradient (not each example's) would give."""
    from client.privacy import RoundPlan

    norm = 1e-3
    plan = RoundPlan(noise_multiplier=0.0, sample_rate=1.0, steps=1, max_grad_norm=norm, grad_sample_mode=mode)
    one, n1 = _dp_step_update(csv_dir, tmp_path, plan, slice(0, 1))
    assert n1 == 1 and float(one.norm()) == pytest.approx(norm, rel=1e-3)
    every, n = _dp_step_update(csv_dir, tmp_path, plan)
    assert n >= 4
    assert 1.5 * norm / n < float(every.norm()) <= norm * (1 + 1e-3)


@pytest.mark.parametrize("mode", ["hooks", "ghost"])
def test_the_dp_step_adds_gaussian_noise_of_std_sigma_c_over_b(csv_dir: Path, tmp_path: Path, mode: str) -> None:
    """The noise, measured over every trainable weight: 4 steps at q = 0.5 add N(0, (sigma C / B)^2)
    each, B = q n the expected batch size whatever each Poisson batch holds, so the update's
    per-weight std is sigma C sqrt(4) / B. C is tiny: the clipped gradients (at most C per step)
    change that variance by a fraction 1/d of it, d weights; the estimate's own error is 1/sqrt(2d)."""
    from client.privacy import RoundPlan

    sigma, norm, steps, q = 2.0, 1e-3, 4, 0.5
    update, n = _dp_step_update(csv_dir, tmp_path, RoundPlan(sigma, q, steps, norm, mode))
    expected = sigma * norm * steps**0.5 / max(1, round(q * n))
    assert update.numel() > 5_000  # enough weights for a 5% check (1/sqrt(2d) < 1%)
    assert float(update.pow(2).mean().sqrt()) == pytest.approx(expected, rel=0.05)
    assert abs(float(update.mean())) < 5 * expected / update.numel() ** 0.5  # centred


def test_under_dp_no_training_metric_leaves_the_node(csv_dir: Path, tmp_path: Path) -> None:
    """The message audit's allow-list under DP: the example count (public under replace-one) and
    nothing computed from the data; the reply passes it, and a loss would not."""
    from client.app import app
    from client.message_audit import audit_path, violations

    cfg = {**run_config(csv_dir, tmp_path / "cache", tmp_path / "out"), "audit-messages": True}
    local = local_data(cfg, {"partition-id": 0, "num-partitions": 2})
    model = local_model(cfg, local.dataset)
    app(train_message(model, 1), node(cfg, tmp_path / "s"))
    (line,) = [json.loads(x) for x in audit_path(tmp_path / "s", 1).read_text().splitlines()]
    assert line["dp"] and set(line["records"]["metrics"]["keys"]) == {"num-examples", "client-weight"}
    assert violations(line, num_trainable(model)) == []
    line["records"]["metrics"]["keys"]["train-loss"] = "float"
    assert violations(line, num_trainable(model)) == ["metric 'train-loss'"]


def test_a_node_audits_its_replies_errors_included_when_its_policy_says_so(csv_dir: Path, tmp_path: Path) -> None:
    """The run config asks for no audit; the node's operator does, and the server cannot turn it
    off. A failed message (here: weights that are not finite) is written down too."""
    from client.app import app
    from client.message_audit import audit_path, violations
    from client.policy import NodePolicy, write_policy

    cfg = run_config(csv_dir, tmp_path / "cache", tmp_path / "out")
    write_policy(tmp_path / "s", NodePolicy(audit_messages=True))
    model = local_model(cfg, local_data(cfg, {"partition-id": 0, "num-partitions": 2}).dataset)
    app(train_message(model, 1), node(cfg, tmp_path / "s"))
    bad = train_message(model, 1)
    bad.content["arrays"] = to_record({"w": torch.full((num_trainable(model),), float("nan"))})
    with pytest.raises(FedrecError, match="not finite"):
        app(bad, node(cfg, tmp_path / "s"))
    ok, failed = [json.loads(x) for x in audit_path(tmp_path / "s", 1).read_text().splitlines()]
    assert "arrays" in ok["records"] and violations(ok, num_trainable(model)) == []
    assert failed["message_type"] == "train" and failed["error"]["type"] == "FedrecError"


def test_a_node_refuses_a_run_config_below_its_policy_and_the_ledger_says_why(csv_dir: Path, tmp_path: Path) -> None:
    """The node's policy, not the server's run config, decides: dp=false, or a larger epsilon than
    the node allows, is refused with the key and the reason; the server ledgers the refusal and
    keeps the node's updates out of the round."""
    from client.policy import NodePolicy, write_policy
    from server.privacy import is_refusal

    state = tmp_path / "s"
    write_policy(state, NodePolicy(max_epsilon=2.0))
    cfg = run_config(csv_dir, tmp_path / "cache", tmp_path / "out")
    model = local_model(cfg, local_data(cfg, {"partition-id": 0, "num-partitions": 2}).dataset)
    for ask, key in (({"dp": False}, "dp"), ({"target-epsilon": 3.0}, "target-epsilon")):
        reply = train(train_message(model, 1), node({**cfg, **ask}, state))
        assert is_refusal(reply) and "arrays" not in reply.content
        assert reply.content["refusal"]["key"] == key and reply.content["refusal"]["reason"]
    assert not list(state.glob("privacy-iid-*.json"))  # nothing trained, nothing spent
    tracker = PrivacyTracker(tmp_path / "run")
    assert tracker.record(1, [reply]) == []
    (entry,) = ledger.read_ledger(tmp_path / "run")
    assert entry["status"] == "refused" and entry["key"] == "target-epsilon"
    # Within the policy, the node trains, and its budget is the policy's.
    ok = train(train_message(model, 1), node({**cfg, "target-epsilon": 2.0}, state))
    assert "arrays" in ok.content and float(ok.content["privacy"]["budget"]) == 2.0


def test_a_small_node_sends_no_evaluation_metrics_under_dp(csv_dir: Path, tmp_path: Path) -> None:
    from client.handlers import evaluate
    from client.policy import NodePolicy, write_policy

    cfg = {**run_config(csv_dir, tmp_path / "cache", tmp_path / "out"), "min-eval-users": 10_000}
    model = local_model(cfg, local_data(cfg, {"partition-id": 0, "num-partitions": 2}).dataset)
    msg = train_message(model, 1)
    msg.content["config"]["stage"] = "valid"
    reply = evaluate(msg, node(cfg, tmp_path / "s"))
    assert dict(reply.content["metrics"]) == {"num-examples": 0}
    # The server cannot lower a deployed node's floor (the policy's 20 users): asking for 1 gets nothing.
    reply = evaluate(msg, node({**cfg, "min-eval-users": 1}, tmp_path / "s"))
    assert dict(reply.content["metrics"]) == {"num-examples": 0}
    # The node's operator can.
    write_policy(tmp_path / "s", NodePolicy(min_eval_users=1))
    reply = evaluate(msg, node({**cfg, "min-eval-users": 1}, tmp_path / "s"))
    assert reply.content["metrics"]["num-examples"] > 0 and "ranking-full-ndcg@10" in reply.content["metrics"]
    # ... and can refuse to answer evaluations at all (their metrics carry no noise).
    write_policy(tmp_path / "s", NodePolicy(min_eval_users=1, evaluate=False))
    assert dict(evaluate(msg, node({**cfg, "min-eval-users": 1}, tmp_path / "s")).content["metrics"]) == {"num-examples": 0}


def test_a_deployed_node_takes_consent_from_its_data_not_from_the_run_config(csv_dir: Path, tmp_path: Path) -> None:
    """A server choosing consent-fraction and seed could otherwise pick two subsets of a node's users
    that differ by one user, and read that user's outcome from the difference of the two means."""
    from cli import main
    from client.handlers import evaluate
    from client.policy import NodePolicy, write_policy
    from shared.data.consent import NON_CONSENTED

    cfg = {**run_config(csv_dir, tmp_path / "cache", tmp_path / "out"), "min-eval-users": 1}
    assert main(["catalog", "build", "--dataset", "csv", "--path", str(csv_dir), "--out", str(tmp_path / "catalog")]) == 0
    write_policy(tmp_path / "s", NodePolicy(min_eval_users=1))
    own_data = {"partition-id": 0, "data-path": str(csv_dir), "catalog-path": str(tmp_path / "catalog"),
                "state-dir": str(tmp_path / "s")}  # fmt: skip
    simulated = {"partition-id": 0, "num-partitions": 2}  # a partition of the run's dataset

    def users_evaluated(node_config: dict, consent_fraction: float, who: str) -> float:
        run = {**cfg, "consent-fraction": consent_fraction}
        msg = train_message(local_model(run, local_data(run, node_config).dataset), 1)
        msg.content["config"]["stage"] = "valid"
        msg.content["config"]["users"] = who
        ctx = Context(run_id=7, node_id=1, node_config=dict(node_config), state=RecordDict(), run_config=run)
        return float(evaluate(msg, ctx).content["metrics"]["num-examples"])

    # Its own data without consent flags: nobody consented, whatever fraction the server asks.
    assert users_evaluated(own_data, 0.9, NON_CONSENTED) == users_evaluated(own_data, 0.0, "all") > 0
    # Simulated: the run config's draw applies.
    assert users_evaluated(simulated, 0.9, NON_CONSENTED) < users_evaluated(simulated, 0.0, "all")


def test_the_operator_sets_the_policy_and_unset_options_keep_the_saved_ones(tmp_path: Path) -> None:
    from client.policy import NodePolicy, node_policy, set_policy

    assert set_policy(tmp_path, {"max_epsilon": 2.0, "dp_required": None}) == NodePolicy(max_epsilon=2.0)
    assert set_policy(tmp_path, {"max_delta": 1e-7, "max_epsilon": None}) == NodePolicy(max_epsilon=2.0, max_delta=1e-7)
    assert node_policy({"state-dir": str(tmp_path)}, PrivacyConfig()) == NodePolicy(max_epsilon=2.0, max_delta=1e-7)
    # A simulated node (no state directory of its own) takes the run config's.
    assert node_policy({}, PrivacyConfig(dp=False)).refusal(PrivacyConfig(dp=False)) is None


def test_central_epsilon_counts_every_release_across_a_resume(tmp_path: Path) -> None:
    """A resumed ServerApp's Flower accountant restarts from zero (round 3 reads like round 1);
    the report composes all three releases, as dp_accounting does for three Gaussian releases."""
    from dp_accounting import NeighboringRelation, dp_event, pld

    from shared.privacy.accounting import central_epsilon

    flower = {"accountant": "rdp", "delta": 1e-6, "noise_multiplier": 0.8, "clipping_norm": 0.5,
              "clients_per_round": 3, "releases": 1}  # fmt: skip
    history = [{"round": r, "valid": {}, "central_dp": {**flower, "epsilon": e}} for r, e in ((1, 6.0), (2, 9.0), (3, 6.0))]
    (tmp_path / "metrics.json").write_text(json.dumps({"history": history}))
    central = write_report(tmp_path)["central"]
    acc = pld.PLDAccountant(neighboring_relation=NeighboringRelation.ADD_OR_REMOVE_ONE)
    acc.compose(dp_event.GaussianDpEvent(0.8), 3)
    assert central["releases"] == 3 and central["epsilon"] == pytest.approx(acc.get_epsilon(1e-6), rel=2e-3)
    assert central["epsilon"] == central_epsilon(0.8, 3, 1e-6) > central["history"][1]["epsilon"]
    # A run recorded with Flower's RDP figure as `epsilon`: kept, named as Flower's, never as the guarantee.
    assert central["flower_epsilon"] == 6.0 and [r["flower_epsilon"] for r in central["history"]] == [6.0, 9.0, 6.0]
    assert {r["accountant"] for r in central["history"]} == {central["accountant"]} != {"rdp"}
    assert "Flower's own RDP account, epsilon 6.000" in (tmp_path / "privacy_report.html").read_text()


def test_the_rounds_record_the_reports_central_epsilon_beside_flowers_own() -> None:
    """Flower's DP wrapper logs its RDP account, which can read above the budget the noise was
    calibrated to (8.47 for a PLD 7.95 at z 1.1366, 3 releases); metrics.json's `epsilon` is the
    PLD over every release of the run, a resumed one's earlier releases included, and Flower's
    figure sits beside it under its own name."""
    from types import SimpleNamespace

    from server.privacy import central_spent
    from shared.privacy.accounting import central_epsilon

    spent = SimpleNamespace(epsilon=8.47, delta=1e-6, num_releases=1, accounting_method="rdp")
    strategy = SimpleNamespace(privacy_spent=lambda: spent, noise_multiplier=1.1366, clipping_norm=0.2,
                               num_sampled_clients=6040)  # fmt: skip
    resumed = central_spent(strategy, earlier_releases=2)  # Flower's accountant restarted: 1 release
    assert resumed["releases"] == 3 and resumed["epsilon"] == central_epsilon(1.1366, 3, 1e-6) < 8.0
    assert (resumed["flower_epsilon"], resumed["flower_releases"], resumed["flower_accountant"]) == (8.47, 1, "rdp")
    assert resumed["accountant"] != "rdp" and central_spent(SimpleNamespace(), 0) is None


def test_a_deployed_node_filters_its_data_as_its_operator_set_not_as_the_run_config_asks(csv_dir: Path,
                                                                                          tmp_path: Path) -> None:  # fmt: skip
    """The user count leaves a node (FedAvg's weight, q = B / n) and evaluation sends means over
    its users: a server varying max-users, min-interactions or rating-threshold across runs could
    difference two replies down to one user. A node with a data-path ignores all three."""
    from cli import main

    cfg = run_config(csv_dir, tmp_path / "cache", tmp_path / "out")
    assert main(["catalog", "build", "--dataset", "csv", "--path", str(csv_dir), "--out", str(tmp_path / "catalog")]) == 0
    deployed = {"partition-id": 0, "data-path": str(csv_dir), "catalog-path": str(tmp_path / "catalog"),
                "min-interactions": 3}  # fmt: skip
    own = local_data(cfg, deployed)
    assert own.scheme == "node" and len(own.users) > 2
    asked = {**cfg, "max-users": 2, "min-interactions": 10, "rating-threshold": 4.0}
    assert len(local_data(asked, deployed).users) == len(own.users)
    # The operator's own filter does apply: a stricter one keeps fewer users.
    assert len(local_data(cfg, {**deployed, "min-interactions": 10}).users) < len(own.users)


def test_a_deployed_node_refuses_weights_that_are_not_finite_and_clips_with_hooks() -> None:
    """NaN or inf weights, or ghost clipping (which cannot yet leave out an example whose gradient
    overflows), would let crafted weights turn one user's presence into a NaN update."""
    from client.handlers import finite_weights
    from client.policy import NodePolicy, simulated_policy
    from client.privacy import new_state, plan_round

    weights = torch.zeros(4)
    assert torch.equal(finite_weights(to_record({"w": weights}), 4), weights)
    weights[2] = float("nan")
    with pytest.raises(FedrecError, match="not finite"):
        finite_weights(to_record({"w": weights}), 4)
    cfg = PrivacyConfig(dp_grad_sample_mode="ghost", noise_multiplier=1.0)
    state = new_state("node-0", "user", cfg)
    assert plan_round(state, cfg, 100, 10, 1, 3, policy=NodePolicy())[1].grad_sample_mode == "hooks"
    assert plan_round(state, cfg, 100, 10, 1, 3, policy=simulated_policy(cfg))[1].grad_sample_mode == "ghost"
