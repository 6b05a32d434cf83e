"""What the ClientApp does with a message (client/app.py routes to these): unpack the message,
call plain functions, pack the reply.

train:    global trainable arrays in -> local epochs or steps (DP-SGD when `dp` is on) on this node's
          examples -> trainable arrays, its example count and this round's privacy spend out
          (never the frozen text encoder, never data; under DP no training loss or time either:
          nothing computed from the data leaves unaccounted). A client whose budget this round
          would overrun declines: a normal reply with status `budget-exhausted` and no arrays.
          A run config that asks for less privacy than the node's policy (client/policy.py) is
          refused: a normal reply with a `refusal` record naming the key and the reason.
evaluate: global arrays in -> HR/NDCG/MRR of both stages on this node's held-out items out, as
          means over its users with num-examples = users, so the server's weighted average is
          exactly the global mean. Under DP a node with fewer than `min-eval-users` users sends
          no metrics (num-examples 0): a one-user client's metric is that user's own outcome.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from typing import Any

import numpy as np
import torch
from flwr.app import ConfigRecord, Context, Message, MetricRecord, RecordDict

from client.data import LocalData, local_data
from client.model import local_model
from client.policy import node_policy
from client.privacy import privacy_record, private_round, record_round, save_state, state_path
from client.state import state_dir
from client.training import local_evaluate, local_examples, local_fit
from shared.config import RunConfig, TrainConfig
from shared.data.consent import NON_CONSENTED, consented_users
from shared.data.dataset import CATALOG_KEY, check_catalog_fingerprint
from shared.errors import FedrecError
from shared.models.params import flat_trainable, load_flat, num_trainable
from shared.privacy.accounting import privacy_unit
from shared.privacy.central import CLIPPING_NORM_KEY, UNIFORM_WEIGHT, clip_update
from shared.wire import flat_record, weights_vector

MANY_NODES = 64
REFUSAL = "refusal"  # the reply record of a node whose policy forbids the run config


def train_config(run_config: dict) -> TrainConfig:
    """TrainConfig from the run config; its epochs are the federation's `local-epochs`."""
    return RunConfig.parse(run_config).local_train


def set_threads(cfg: TrainConfig, node_config: dict) -> None:
    """torch threads for this message. In a simulation of many one-user clients, a client's few
    small batches gain little from a second thread, while Flower's dispatch loop (its cost grows
    with the number of SuperNodes) keeps a core busy: two threads then fight it and a client
    update takes 3x as long (122 ms against 36, commit 5a3059e's message)."""
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    elif int(node_config.get("num-partitions", 0)) > MANY_NODES:
        torch.set_num_threads(1)


def train(msg: Message, context: Context) -> Message:
    local = local_data(context.run_config, context.node_config)
    config = msg.content["config"]
    check_catalog_fingerprint(local.dataset, str(config.get(CATALOG_KEY, "")))
    model = local_model(context.run_config, local.dataset)
    global_weights = finite_weights(msg.content["arrays"], num_trainable(model))
    load_flat(model, global_weights)  # copies: global_weights stays the round's start
    server_round = int(config.get("server-round", 0))
    run = RunConfig.parse(context.run_config)
    privacy = run.privacy
    policy = node_policy(context.node_config, privacy)
    refused = policy.refusal(privacy)
    if refused is not None:  # a normal answer too: the round goes on with the other nodes
        key, reason = refused
        return Message(RecordDict({REFUSAL: ConfigRecord({"key": key, "reason": reason,
                                                          "partition-id": local.partition_id})}), reply_to=msg)  # fmt: skip
    dp = privacy.dp
    unit = privacy_unit(local.scheme) if dp else "user"
    data = local_examples(model, local, unit)
    plan = state = None
    if dp:
        state, plan, eps = private_round(context, local, len(data), server_round, policy)
        if plan is None:  # declining is a normal answer: the server stops asking this client
            return Message(RecordDict({"privacy": privacy_record(state, local.partition_id)}), reply_to=msg)
    cfg = run.local_train
    set_threads(cfg, context.node_config)
    metrics = local_fit(model, local, data, cfg, server_round, float(config.get("proximal-mu", 0.0)), dp=plan,
                        steps=run.federation.local_steps)  # fmt: skip
    if state is not None and plan is not None:
        # Recorded as soon as the steps are taken, before anything is built from them: a node
        # killed between training and replying has its spending on disk (tests/test_privacy.py).
        state = record_round(state, plan, server_round, eps, int(metrics.get("dp-steps", 0)))
        save_state(state, state_path(state_dir(context), state.client_id), context)
    weights = flat_trainable(model)
    if CLIPPING_NORM_KEY in config:  # central DP: the server noises the average of clipped updates
        weights = clip_update(weights, global_weights, float(config[CLIPPING_NORM_KEY]))
    if dp:
        # The example count is public under replace-one adjacency (shared/privacy/accounting.py);
        # the loss and the seconds are not accounted for, so they stay on the node.
        metrics = {"num-examples": metrics["num-examples"]}
    content = RecordDict({"arrays": flat_record(weights), "metrics": MetricRecord({**metrics, UNIFORM_WEIGHT: 1})})
    if state is not None:
        content["privacy"] = privacy_record(state, local.partition_id)
    return Message(content, reply_to=msg)


def finite_weights(arrays: Any, size: int) -> torch.Tensor:
    """The server's weights, refused when any is not finite: a NaN or inf placed where one user's
    data reaches it would make what the node sends depend on that user beyond what DP bounds."""
    weights = weights_vector(arrays, size)
    if not bool(torch.isfinite(weights).all()):
        raise FedrecError("the server sent weights that are not finite (NaN or inf); refusing them")
    return weights


def _consented(local: LocalData, run: RunConfig, node_config: Mapping[str, Any]) -> np.ndarray:
    """This node's consented users. A node on its own data (a data-path) takes consent from that
    data's flags only: a fraction drawn with the run config's seed is a simulation device, and a
    server choosing fraction and seed could pick subsets that differ by one user and read that
    user's outcome from the difference of two means."""
    if node_config.get("data-path") and local.dataset.consent is None:
        return np.zeros(0, dtype=np.int64)  # no flags: nobody consented
    return consented_users(local.dataset, run.data.consent_fraction, run.partition.seed)


def evaluate(msg: Message, context: Context) -> Message:
    local = local_data(context.run_config, context.node_config)
    check_catalog_fingerprint(local.dataset, str(msg.content["config"].get(CATALOG_KEY, "")))
    model = local_model(context.run_config, local.dataset)
    load_flat(model, finite_weights(msg.content["arrays"], num_trainable(model)))
    stage = str(msg.content["config"].get("stage", "valid"))
    run = RunConfig.parse(context.run_config)
    set_threads(run.local_train, context.node_config)
    device = run.train.resolved_device()
    privacy = run.privacy
    policy = node_policy(context.node_config, privacy)
    # A deployed node's floor holds even in a run without DP (its operator may allow those).
    private = privacy.dp or privacy.central_dp or policy.dp_required or bool(context.node_config.get("state-dir"))
    if str(msg.content["config"].get("users", "all")) == NON_CONSENTED:
        # The users whose data reached the model only through this node's DP training.
        local = replace(local, users=np.setdiff1d(local.users, _consented(local, run, context.node_config)))
    withheld = not policy.evaluate or (private and len(local.users) < policy.eval_floor(privacy))
    if not len(local.users) or withheld:
        # Too few users for a mean to hide any one of them: nothing is sent.
        return Message(RecordDict({"metrics": MetricRecord({"num-examples": 0})}), reply_to=msg)
    metrics = local_evaluate(model, local, stage, device)
    return Message(RecordDict({"metrics": MetricRecord(metrics)}), reply_to=msg)
