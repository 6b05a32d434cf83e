"""Flower ClientApp. Handlers stay thin: unpack the message, call a plain function, pack the reply.

train:    global trainable arrays in -> local epochs on this node's users -> trainable arrays and
          training metrics out (never the frozen text encoder, never data)
evaluate: global arrays in -> HR/NDCG/MRR of both stages on this node's held-out items out, as
          means over its users with num-examples = users, so the server's weighted average is
          exactly the global mean
"""

from __future__ import annotations

from dataclasses import replace

from flwr.app import ArrayRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp

from client.data import local_data, local_model
from client.training import local_evaluate, local_fit
from shared.config import TrainConfig, from_run_config
from shared.models.params import load_trainable, trainable_state

app = ClientApp()


def train_config(run_config: dict) -> TrainConfig:
    """TrainConfig from the run config; its epochs are the federation's `local-epochs`."""
    return replace(from_run_config(TrainConfig, run_config),
                   epochs=int(run_config.get("local-epochs", 1)))  # fmt: skip


@app.train()
def train(msg: Message, context: Context) -> Message:
    local = local_data(context.run_config, context.node_config)
    model = local_model(context.run_config, local.dataset)
    load_trainable(model, msg.content["arrays"].to_torch_state_dict())
    config = msg.content["config"]
    metrics = local_fit(
        model, local, train_config(context.run_config), int(config.get("server-round", 0)),
        float(config.get("proximal-mu", 0.0)),
    )  # fmt: skip
    content = RecordDict({"arrays": ArrayRecord(trainable_state(model)), "metrics": MetricRecord(metrics)})
    return Message(content, reply_to=msg)


@app.evaluate()
def evaluate(msg: Message, context: Context) -> Message:
    local = local_data(context.run_config, context.node_config)
    model = local_model(context.run_config, local.dataset)
    load_trainable(model, msg.content["arrays"].to_torch_state_dict())
    stage = str(msg.content["config"].get("stage", "valid"))
    device = train_config(context.run_config).resolved_device()
    metrics = local_evaluate(model, local, stage, device)
    return Message(RecordDict({"metrics": MetricRecord(metrics)}), reply_to=msg)
