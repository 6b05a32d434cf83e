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
    assert type(make_strategy(FederationConfig(strategy=name))) is cls


def reply(node: int, value: float) -> Message:
    meta = Metadata(run_id=1, message_id=f"r{node}", src_node_id=node, dst_node_id=0, reply_to_message_id=f"m{node}",
                    group_id="1", created_at=0.0, ttl=60.0, message_type="train")  # fmt: skip
    content = RecordDict({"arrays": ArrayRecord({"weights": Array(np.full(4, value, dtype=np.float32))}),
                          "metrics": MetricRecord({"num-examples": 10})})  # fmt: skip
    return Message(content, metadata=meta)


@pytest.mark.parametrize("name", ["fedmedian", "fedtrimmedavg", "krum"])
def test_one_outlier_does_not_drag_a_robust_aggregate(name: str) -> None:
    # An update within validation's norm bar but far from the others: the mean moves, these do not.
    def replies() -> list[Message]:  # fresh each time: aggregation may consume the messages
        return [reply(k, 1.0 + 0.01 * k) for k in range(5)] + [reply(9, 5.0)]

    arrays, _ = make_strategy(FederationConfig(strategy=name)).aggregate_train(1, replies())
    assert np.all(np.abs(arrays["weights"].numpy() - 1.02) < 0.05)
    mean, _ = make_strategy(FederationConfig(strategy="fedavg")).aggregate_train(1, replies())
    assert np.all(mean["weights"].numpy() > 1.5)
