"""The run config picks the aggregation; the robust ones resist an update validation lets through."""

import numpy as np
import pytest
from flwr.app import Array, ArrayRecord, Message, Metadata, MetricRecord, RecordDict
from flwr.serverapp.strategy import FedAdam, FedAvg, FedMedian, FedProx, FedTrimmedAvg, FedYogi, Krum

from server.strategy import make_strategy
from shared.config import FederationConfig


@pytest.mark.parametrize("name,cls", [("fedavg", FedAvg), ("fedprox", FedProx), ("fedadam", FedAdam),
                                      ("fedyogi", FedYogi), ("fedmedian", FedMedian),
                                      ("fedtrimmedavg", FedTrimmedAvg), ("krum", Krum)])  # fmt: skip
def test_each_strategy_key_builds_its_strategy(name: str, cls: type) -> None:
    assert isinstance(make_strategy(FederationConfig(strategy=name)), cls)


def reply(node: int, value: float) -> Message:
    meta = Metadata(run_id=1, message_id=f"r{node}", src_node_id=node, dst_node_id=0, reply_to_message_id=f"m{node}",
                    group_id="1", created_at=0.0, ttl=60.0, message_type="train")  # fmt: skip
    content = RecordDict({"arrays": ArrayRecord({"weights": Array(np.full(4, value, dtype=np.float32))}),
                          "metrics": MetricRecord({"num-examples": 10})})  # fmt: skip
    return Message(content, metadata=meta)


class FiveNodes:
    """The grid as configure_train sees it: five connected nodes."""

    def get_node_ids(self) -> list[int]:
        return [1, 2, 3, 4, 5]


@pytest.fixture
def server_task(monkeypatch) -> None:
    """What a ServerApp process sets before it makes messages (configure_train does)."""
    from flwr.supercore.task_identity import TaskIdentity

    for key in ("_run_id", "_task_id", "_node_id"):
        monkeypatch.setattr(TaskIdentity, key, 1)


@pytest.mark.parametrize("name", ["fedavg", "fedprox", "fedadam", "fedyogi", "fedmedian", "fedtrimmedavg", "krum"])
def test_every_strategy_returns_a_model_the_wire_format_accepts(name: str, server_task: None) -> None:
    # FedAdam used to hand back float64 arrays, which the round then refused.
    from flwr.app import ConfigRecord

    from shared.wire import WEIGHTS

    strategy = make_strategy(FederationConfig(strategy=name, min_train_nodes=2))
    start = ArrayRecord({WEIGHTS: Array(np.zeros(4, dtype=np.float32))})
    for server_round in (1, 2):  # the adaptive ones keep moments across rounds
        list(strategy.configure_train(server_round, start, ConfigRecord(), FiveNodes()))
        start, _ = strategy.aggregate_train(server_round, [reply(k, 0.1 * k) for k in range(1, 6)])
        weights = start[WEIGHTS].numpy()
        assert weights.dtype == np.float32 and np.all(weights > 0)


@pytest.mark.parametrize("name", ["fedadam", "fedyogi"])
def test_a_resumed_adaptive_strategy_takes_the_uninterrupted_runs_step(name: str, server_task: None, tmp_path) -> None:
    from flwr.app import ConfigRecord

    from safetensors.numpy import save_file

    from server.checkpoints import OPTIMIZER_FILE, load_optimizer
    from server.strategy import optimizer_state, restore_optimizer_state

    def rounds(strategy, numbers, arrays):  # a different mean update each round, as in training
        for r in numbers:
            list(strategy.configure_train(r, arrays, ConfigRecord(), FiveNodes()))
            arrays, _ = strategy.aggregate_train(r, [reply(k, 0.1 * k * r**2) for k in range(1, 6)])
        return arrays

    cfg = FederationConfig(strategy=name, min_train_nodes=2)
    zero = ArrayRecord({"weights": Array(np.zeros(4, dtype=np.float32))})
    straight = rounds(make_strategy(cfg), (1, 2, 3), zero)["weights"].numpy()
    first = make_strategy(cfg)
    checkpoint = rounds(first, (1, 2), zero)
    save_file(optimizer_state(first), str(tmp_path / OPTIMIZER_FILE))  # what save_round writes
    resumed, fresh = make_strategy(cfg), make_strategy(cfg)
    restore_optimizer_state(resumed, load_optimizer(tmp_path))
    assert np.array_equal(rounds(resumed, (3,), checkpoint)["weights"].numpy(), straight)
    assert not np.allclose(rounds(fresh, (3,), checkpoint)["weights"].numpy(), straight)  # zero moments


@pytest.mark.parametrize("name", ["fedmedian", "fedtrimmedavg", "krum"])
def test_one_outlier_does_not_drag_a_robust_aggregate(name: str) -> None:
    # An update within validation's norm bar but far from the others: the mean moves, these do not.
    def replies() -> list[Message]:  # fresh each time: aggregation may consume the messages
        return [reply(k, 1.0 + 0.01 * k) for k in range(5)] + [reply(9, 5.0)]

    arrays, _ = make_strategy(FederationConfig(strategy=name)).aggregate_train(1, replies())
    assert np.all(np.abs(arrays["weights"].numpy() - 1.02) < 0.05)
    mean, _ = make_strategy(FederationConfig(strategy="fedavg")).aggregate_train(1, replies())
    assert np.all(mean["weights"].numpy() > 1.5)


def test_central_dp_averages_over_every_sampled_client_a_dropout_counting_as_zero(server_task: None) -> None:
    from flwr.app import ConfigRecord

    from server.privacy import fixed_denominator
    from shared.config import PrivacyConfig

    strategy = make_strategy(FederationConfig(min_train_nodes=2),
                             PrivacyConfig(central_dp=True, central_noise_multiplier=1e-9, central_clipping_norm=10.0), 5)  # fmt: skip
    zero = ArrayRecord({"weights": Array(np.zeros(4, dtype=np.float32))})
    sampled = list(strategy.configure_train(1, zero, ConfigRecord(), FiveNodes()))
    kept = [reply(k, float(k)) for k in (1, 2, 3)]  # updates 1, 2, 3 on a global model of zeros; 4 and 5 dropped
    for msg in kept:
        msg.content["metrics"]["client-weight"] = 1
    arrays, metrics = strategy.aggregate_train(1, fixed_denominator(kept, sampled, zero))
    assert np.allclose(arrays["weights"].numpy(), (1 + 2 + 3) / 5, atol=1e-6)  # not / 3: the denominator is fixed
    assert metrics["num-examples"] == 10  # the stand-ins carry the answering clients' mean metrics


def test_a_central_dp_round_sampled_again_after_a_failed_attempt(server_task: None) -> None:
    """Flower's DP wrapper refuses to prepare a round's privacy event twice; the failed attempt
    released nothing, so its event is discarded and the retry is accounted once."""
    from flwr.app import ConfigRecord

    from server.privacy import discard_unreleased
    from shared.config import PrivacyConfig

    strategy = make_strategy(FederationConfig(min_train_nodes=5),
                             PrivacyConfig(central_dp=True, central_noise_multiplier=1.0, central_clipping_norm=1.0), 5)  # fmt: skip
    zero = ArrayRecord({"weights": Array(np.zeros(4, dtype=np.float32))})
    list(strategy.configure_train(1, zero, ConfigRecord(), FiveNodes()))
    with pytest.raises(ValueError, match="already has a pending privacy event"):
        list(strategy.configure_train(1, zero, ConfigRecord(), FiveNodes()))
    discard_unreleased(strategy, 1)
    list(strategy.configure_train(1, zero, ConfigRecord(), FiveNodes()))
    replies = [reply(k, 0.1) for k in range(1, 6)]
    for msg in replies:
        msg.content["metrics"]["client-weight"] = 1
    strategy.aggregate_train(1, replies)
    assert strategy.privacy_spent().num_releases == 1


def test_central_delta_is_capped_by_the_configured_population_not_the_connected_nodes() -> None:
    from shared.config import PrivacyConfig

    privacy = PrivacyConfig(central_dp=True, target_delta=1e-3)
    strategy = make_strategy(FederationConfig(min_train_nodes=2), privacy, num_nodes=5, population=6040)
    assert strategy.accountant.config.target_delta == pytest.approx(6040**-1.1)
    assert strategy.num_sampled_clients == 5  # the sample still comes from the connected nodes
