"""The client's work functions: its own data only, trainable parameters only, exact metrics."""

from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import tiny_run_config

from client.handlers import train_config
from client.data import local_data
from client.model import local_model
from client.training import local_evaluate, local_examples, local_fit
from shared.errors import FedrecError
from shared.models.params import load_trainable, trainable_state
from shared.models.training import evaluate_model


def run_config(d: Path, cache: Path, **extra) -> dict:
    return tiny_run_config(d, cache, **extra)


def test_clients_return_only_trainable_parameters(csv_dir: Path, tmp_path: Path) -> None:
    cfg = run_config(csv_dir, tmp_path)
    local = local_data(cfg, {"partition-id": 1, "num-partitions": 3})
    model = local_model(cfg, local.dataset)
    before = trainable_state(model)
    metrics = local_fit(model, local, local_examples(model, local, "user"), train_config(cfg), server_round=1)
    after = trainable_state(model)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert set(after) == trainable
    assert "text" not in after and "encoder.embeddings.word_embeddings.weight" not in after
    assert not any(name in after for name, _ in model.named_buffers())
    assert metrics["num-examples"] == len(local.users)
    assert any(not torch.equal(before[k], after[k]) for k in after)


def test_local_training_is_deterministic_per_round_and_node(csv_dir: Path, tmp_path: Path) -> None:
    cfg = run_config(csv_dir, tmp_path)
    local = local_data(cfg, {"partition-id": 0, "num-partitions": 3})
    model = local_model(cfg, local.dataset)
    global_weights = trainable_state(model)
    states = []
    for _ in range(2):  # as two messages of the same round would: load the global weights, fit
        load_trainable(local_model(cfg, local.dataset), global_weights)
        local_fit(model, local, local_examples(model, local, "user"), train_config(cfg), server_round=2)
        states.append(trainable_state(model))
    assert all(torch.equal(states[0][k], states[1][k]) for k in states[0])


@pytest.mark.parametrize("optimizer", ["adamw", "sgd"])
def test_local_optimizer_sgd_steps_by_the_gradient_adamw_by_its_sign(csv_dir: Path, tmp_path: Path, optimizer) -> None:
    """One local step on one batch: Adam's first step moves every coordinate by lr (its sign),
    SGD's by lr times that coordinate's gradient, which spans orders of magnitude. Averaged over
    one-user clients, only the second is the batch gradient (docs/results.md)."""
    lr = 1e-3
    cfg = run_config(csv_dir, tmp_path, **{"batch-size": 10_000, "weight-decay": 0.0, "optimizer": optimizer, "lr": lr})
    local = local_data(cfg, {"partition-id": 0, "num-partitions": 3})
    model = local_model(cfg, local.dataset)
    before = trainable_state(model)
    local_fit(model, local, local_examples(model, local, "user"), train_config(cfg), server_round=1)
    after = trainable_state(model)
    step = torch.cat([(after[k] - before[k]).flatten().abs() for k in after])
    step = step[step > 0]
    if optimizer == "adamw":
        assert torch.allclose(step.median(), torch.tensor(lr), rtol=1e-3)
    else:
        assert step.max() / step.median() > 100


def test_federated_evaluation_equals_central_evaluation(csv_dir: Path, tmp_path: Path) -> None:
    cfg = run_config(csv_dir, tmp_path)
    per_node = [local_data(cfg, {"partition-id": p, "num-partitions": 3}) for p in range(3)]
    model = local_model(cfg, per_node[0].dataset)
    reports = [local_evaluate(model, local, "test", "cpu") for local in per_node]
    weights = np.array([r["num-examples"] for r in reports], dtype=float)
    central = evaluate_model(model, per_node[0].dataset, "test")
    for stage, protocols in central.items():
        for protocol, block in protocols.items():
            for metric, value in block.items():
                key = f"{stage}-{protocol}-{metric}"
                federated = np.average([r[key] for r in reports], weights=weights)
                assert federated == pytest.approx(value, abs=1e-9), key


def test_mismatched_supernode_count_is_explained(csv_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(FedrecError, match="federation has 5 SuperNodes but partitioning 'iid' gives 3"):
        local_data(run_config(csv_dir, tmp_path), {"partition-id": 0, "num-partitions": 5})


def test_missing_partition_id_is_explained(csv_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(FedrecError, match="no 'partition-id'"):
        local_data(run_config(csv_dir, tmp_path), {})


def test_parameter_mismatch_is_refused(csv_dir: Path, tmp_path: Path) -> None:
    cfg = run_config(csv_dir, tmp_path)
    local = local_data(cfg, {"partition-id": 0, "num-partitions": 3})
    model = local_model(cfg, local.dataset)
    state = trainable_state(model)
    state.pop(next(iter(state)))
    with pytest.raises(FedrecError, match="parameter mismatch"):
        load_trainable(model, state)


def test_local_steps_take_that_many_batches_through_fresh_shuffles(csv_dir: Path, tmp_path: Path, monkeypatch) -> None:
    import client.training as training

    cfg = run_config(csv_dir, tmp_path)
    local = local_data(cfg, {"partition-id": 0, "num-partitions": 3})
    model = local_model(cfg, local.dataset)
    data = local_examples(model, local, "user")
    seen = []
    real = training.train_epoch
    monkeypatch.setattr(training, "train_epoch", lambda *a, **kw: seen.append(kw["batches"]) or real(*a, **kw))
    steps = 2 * -(-len(data) // 8) + 1  # two shuffles of batch-size 8, and one batch of a third
    before = trainable_state(model)
    local_fit(model, local, data, train_config(cfg), server_round=1, steps=steps)
    (batches,) = seen
    assert len(batches) == steps and all(0 < len(b) <= 8 for b in batches)
    per_pass = -(-len(data) // 8)
    for k in range(2):
        assert sorted(np.concatenate(batches[k * per_pass : (k + 1) * per_pass])) == list(range(len(data)))
    assert any(not torch.equal(before[k], v) for k, v in trainable_state(model).items())


def test_local_steps_set_the_dp_steps_the_accountant_counts() -> None:
    from client.privacy import new_state, plan_round
    from shared.config import PrivacyConfig

    cfg = PrivacyConfig(noise_multiplier=1.0)
    state = new_state("user-0", "user", cfg)
    assert plan_round(state, cfg, 100, 10, local_epochs=2, planned_rounds=5)[1].steps == 20  # 2 epochs of 1/q
    assert plan_round(state, cfg, 100, 10, local_epochs=2, planned_rounds=5, local_steps=3)[1].steps == 3


def test_the_round_plan_carries_the_grad_sample_mode_to_local_fit() -> None:
    from client.privacy import new_state, plan_round
    from shared.config import PrivacyConfig

    for mode in ("hooks", "ghost"):
        cfg = PrivacyConfig(noise_multiplier=1.0, dp_grad_sample_mode=mode)
        assert plan_round(new_state("user-0", "user", cfg), cfg, 100, 10, 1, 5)[1].grad_sample_mode == mode


def test_fedprox_pulls_each_local_step_back_towards_the_global_weights(csv_dir: Path, tmp_path: Path) -> None:
    """FedProx's mu travels in its strategy's train message; after each optimizer step the client
    moves every weight lr * mu of the way back to the global one. At lr * mu = 1 the update is
    nil; at 1/2 it is smaller than FedAvg's (no proximal term), on the same batches."""
    from flwr.app import ConfigRecord

    from client.app import app
    from inprocess import FIRST_NODE_ID, InProcessGrid, server_task
    from server.strategy import make_strategy
    from shared.config import FederationConfig
    from shared.models.params import flat_trainable, load_flat, num_trainable
    from shared.wire import flat_record, weights_vector

    lr = 0.5
    cfg = run_config(csv_dir, tmp_path, dp=False, optimizer="sgd", lr=lr, weight_decay=0.0)
    model = local_model(cfg, local_data(cfg, {"partition-id": 0, "num-partitions": 3}).dataset)
    start = flat_trainable(model).clone()
    grid = InProcessGrid(app, 7, cfg, {FIRST_NODE_ID: {"partition-id": 0, "num-partitions": 3}})

    def update(strategy: str, mu: float) -> torch.Tensor:
        fed = FederationConfig(strategy=strategy, proximal_mu=mu, min_train_nodes=1)
        with server_task(7):
            (msg,) = make_strategy(fed).configure_train(1, flat_record(start), ConfigRecord(), grid)
        assert float(msg.content["config"].get("proximal-mu", 0.0)) == (mu if strategy == "fedprox" else 0.0)
        (reply,) = grid.pull_messages(grid.push_messages([msg]))
        load_flat(model, start)
        return weights_vector(reply.content["arrays"], num_trainable(model)) - start

    fedavg, half, full = update("fedavg", 0.0), update("fedprox", 0.5 / lr), update("fedprox", 1.0 / lr)
    assert float(fedavg.norm()) > 0
    assert 0 < float(half.norm()) < 0.9 * float(fedavg.norm())
    assert float(full.norm()) < 1e-5 * float(fedavg.norm())
