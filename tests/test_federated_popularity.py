"""The Flower apps' work functions: FedAvg over clients gives exactly the centralized baseline."""

from pathlib import Path

import numpy as np
import pytest
from flwr.app import Array, ArrayRecord, MetricRecord, RecordDict
from flwr.serverapp.strategy.strategy_utils import aggregate_arrayrecords, aggregate_metricrecords

from client.data import local_data
from client.app import local_frequencies, local_metrics
from shared.data.dataset import STAGES
from shared.errors import FedrecError
from shared.eval.protocols import evaluate
from shared.models.popularity import Popularity


def run_config(d: Path, **extra) -> dict:
    return {"dataset": "csv", "data-path": str(d), "partitioning": "iid", "num-partitions": 3, **extra}


def test_fedavg_of_local_frequencies_reproduces_central_popularity(csv_dir: Path) -> None:
    cfg = run_config(csv_dir)
    replies, locals_ = [], []
    for pid in range(3):
        local = local_data(cfg, {"partition-id": pid, "num-partitions": 3})
        freq, total = local_frequencies(local)
        arrays = ArrayRecord(array_dict={s: Array(freq[s]) for s in STAGES})
        replies.append(RecordDict({"arrays": arrays, "metrics": MetricRecord({"num-examples": total})}))
        locals_.append(local)
    global_arrays = aggregate_arrayrecords(replies, "num-examples")
    dataset = locals_[0].dataset
    central = Popularity.count(dataset)
    for stage in STAGES:
        got = global_arrays[stage].numpy()
        assert np.allclose(got * central["valid"].sum(), central[stage])

    frequencies = {s: global_arrays[s].numpy() for s in STAGES}
    evals = []
    for local in locals_:
        m = local_metrics(local, frequencies, "test")
        m["num-examples"] = len(local.users)
        evals.append(RecordDict({"metrics": MetricRecord(m)}))
    federated = aggregate_metricrecords(evals, "num-examples")
    reference = evaluate(dataset, Popularity.fit(dataset), "test")
    for protocol, block in reference.items():
        for key, value in block.items():
            assert federated[f"{protocol}-{key}"] == pytest.approx(value)


def test_mismatched_supernode_count_is_explained(csv_dir: Path) -> None:
    with pytest.raises(FedrecError, match="federation has 5 SuperNodes but partitioning 'iid' gives 3"):
        local_data(run_config(csv_dir), {"partition-id": 0, "num-partitions": 5})


def test_missing_partition_id_is_explained(csv_dir: Path) -> None:
    with pytest.raises(FedrecError, match="no 'partition-id'"):
        local_data(run_config(csv_dir), {})
