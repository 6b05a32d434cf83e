"""Flower ClientApp. Handlers stay thin: unpack the message, call a plain function, pack the reply.

Today the federation trains the popularity baseline: `train` returns this node's normalised item
frequencies (FedAvg weighted by interaction counts turns them into the global ones), `evaluate`
scores this node's held-out items against the global popularity and returns metric means that
FedAvg averages, weighted by users, into the global means. No item id or interaction list leaves
the node; the transformer models replace this once they land.
"""

from __future__ import annotations

import numpy as np
from flwr.app import Array, ArrayRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp

from client.data import LocalData, local_data
from shared.data.dataset import STAGES
from shared.eval.protocols import evaluate as evaluate_protocols
from shared.models.popularity import Popularity

app = ClientApp()


def local_frequencies(local: LocalData) -> tuple[dict[str, np.ndarray], int]:
    """Per-stage item counts over this node's users, divided by its training-interaction count,
    which is also FedAvg's weight: the weighted mean is then sum(counts) / sum(weights), the
    global counts up to one shared factor, for both stages."""
    counts = Popularity.count(local.dataset, local.users)
    total = int(counts["valid"].sum())
    return {stage: c / max(total, 1) for stage, c in counts.items()}, total


def local_metrics(local: LocalData, frequencies: dict[str, np.ndarray], stage: str) -> dict[str, float]:
    """Both protocols over this node's users, flattened as 'full-hr@10', 'sampled-ndcg@10', ...

    FedAvg's float arithmetic leaves equal global counts a few ulps apart; rounding restores the
    ties, which the harness counts against the model exactly as it does centrally."""
    snapped = {s: np.round(f, 12) for s, f in frequencies.items()}
    results = evaluate_protocols(local.dataset, Popularity(snapped), stage, users=local.users)
    return {f"{protocol}-{k}": v for protocol, block in results.items() for k, v in block.items()}


@app.train()
def train(msg: Message, context: Context) -> Message:
    local = local_data(context.run_config, context.node_config)
    frequencies, total = local_frequencies(local)
    arrays = ArrayRecord(array_dict={s: Array(frequencies[s]) for s in STAGES})
    metrics = MetricRecord({"num-examples": total})
    return Message(RecordDict({"arrays": arrays, "metrics": metrics}), reply_to=msg)


@app.evaluate()
def evaluate(msg: Message, context: Context) -> Message:
    local = local_data(context.run_config, context.node_config)
    arrays = msg.content["arrays"]
    frequencies = {s: arrays[s].numpy() for s in STAGES}
    stage = str(msg.content["config"].get("stage", "valid"))
    metrics = local_metrics(local, frequencies, stage)
    metrics["num-examples"] = len(local.users)
    return Message(RecordDict({"metrics": MetricRecord(metrics)}), reply_to=msg)
