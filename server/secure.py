"""Secure aggregation (SecAgg+): the server learns the weighted mean of a round's updates and
nothing about any single one of them.

Flower's `SecAggPlusWorkflow` runs the protocol's four stages over the grid. It was written for
the legacy Strategy API, so it gets two small adapters here:
- a strategy whose `configure_fit` is fedrec's strategy's `configure_train` (the same sampling and
  the same config, central DP's clipping norm included) and whose `aggregate_fit` keeps the
  unmasked mean;
- a grid whose `send_and_receive` is fedrec's windowed one (server/messaging.py), keeping the
  training stage's replies: their metrics and privacy records are scalars the ledger needs.
Clients that drop out after the keys are shared are unmasked from their neighbours' shares, as
long as each node keeps `reconstruction threshold` live neighbours.

The mean then goes back to fedrec's strategy as one reply per surviving client, each carrying
global + mean update: FedAvg of identical vectors is that vector, FedAdam and FedYogi step from
it, and Flower's DP wrapper adds its noise and accounts for the reply count it expects.
Per-update validation and robust strategies need individual updates, so they do not apply.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
import torch
from flwr.app import Array, ArrayRecord, ConfigRecord, Context, Message, RecordDict
from flwr.common import FitIns, parameters_to_ndarrays
from flwr.common.secure_aggregation.secaggplus_constants import RECORD_KEY_CONFIGS, Key
from flwr.compat.common import recorddict_compat as compat
from flwr.server.compat.legacy_context import LegacyContext
from flwr.server.workflow import SecAggPlusWorkflow
from flwr.server.workflow.constant import MAIN_CONFIGS_RECORD, MAIN_PARAMS_RECORD
from flwr.server.workflow.constant import Key as WorkflowKey
from flwr.serverapp import Grid
from flwr.serverapp.strategy import Strategy

from server.messaging import send_and_receive
from server.privacy import PrivacyTracker, declined, is_central_dp
from server.validation import Rejection, RoundUpdates, validate_updates
from shared.config import SecureAggregationConfig
from shared.errors import FedrecError
from shared.models.params import num_trainable
from shared.wire import WEIGHTS, weights_vector

log = logging.getLogger("flwr.fedrec")
ROBUST = ("fedmedian", "fedtrimmedavg", "krum")


def check_secure_aggregation(strategy: str, secagg: SecureAggregationConfig) -> None:
    if secagg.secure_aggregation and strategy in ROBUST:
        raise FedrecError(f"secure-aggregation hides individual updates, which strategy={strategy} needs; "
                          "use fedavg, fedprox, fedadam or fedyogi")  # fmt: skip


@dataclass(frozen=True)
class _Node:
    """What the workflow asks of a legacy ClientProxy."""

    node_id: int


class _StrategyAdapter:
    """The two legacy Strategy calls the workflow makes, answered by fedrec's strategy."""

    def __init__(self, strategy: Strategy, arrays: ArrayRecord, config: ConfigRecord, grid: Grid) -> None:
        self.strategy, self.arrays, self.config, self.grid = strategy, arrays, config, grid
        self.mean: np.ndarray | None = None
        self.sampled: list[Message] = []

    def configure_fit(self, server_round: int, parameters, client_manager):  # type: ignore[no-untyped-def]
        messages = self.sampled = list(self.strategy.configure_train(server_round, self.arrays, self.config, self.grid))
        return [(_Node(m.metadata.dst_node_id),
                 FitIns(compat.arrayrecord_to_parameters(m.content["arrays"], keep_input=True), dict(m.content["config"])))
                for m in messages]  # fmt: skip

    def aggregate_fit(self, server_round: int, results, failures):  # type: ignore[no-untyped-def]
        if results:
            (self.mean,) = parameters_to_ndarrays(results[0][1].parameters)
        return None, {}  # fedrec applies the mean itself (see the module docstring)


class _NodeCount:
    """The workflow's client manager: it only logs how many nodes are available."""

    def __init__(self, grid: Grid) -> None:
        self.grid = grid

    def num_available(self) -> int:
        return len(self.grid.get_node_ids())


class _RecordingGrid:
    """fedrec's send_and_receive for each protocol stage; keeps the training stage's replies."""

    TRAINING_STAGE = 2  # setup, share keys, collect masked vectors (trains), unmask

    def __init__(self, grid: Grid, timeout: float | None) -> None:
        self.grid, self.timeout = grid, timeout
        self.stage = 0
        self.trained: list[Message] = []

    def send_and_receive(self, messages: Iterable[Message], *, timeout: float | None = None) -> list[Message]:
        replies = send_and_receive(self.grid, messages, self.timeout)
        if self.stage == self.TRAINING_STAGE:
            self.trained = replies
        self.stage += 1
        return replies


def secure_updates(
    grid: Grid, strategy: Strategy, model: torch.nn.Module, arrays: ArrayRecord, config: ConfigRecord,
    server_round: int, secagg: SecureAggregationConfig, timeout: float | None, privacy: PrivacyTracker,
) -> RoundUpdates:  # fmt: skip
    """One round of SecAgg+ over the clients `strategy` samples from `grid`; the clients'
    privacy records are ledgered. Under central DP every client weighs 1, so the weights are
    quantized exactly (max_weight 1)."""
    adapter = _StrategyAdapter(strategy, arrays, config, grid)
    recording = _RecordingGrid(grid, timeout)
    context = LegacyContext(Context(run_id=0, node_id=0, node_config={}, state=RecordDict(), run_config={}),
                            strategy=adapter, client_manager=_NodeCount(grid))  # type: ignore[arg-type]  # fmt: skip
    context.state.config_records[MAIN_CONFIGS_RECORD] = ConfigRecord({WorkflowKey.CURRENT_ROUND: server_round})
    context.state.array_records[MAIN_PARAMS_RECORD] = arrays
    workflow = SecAggPlusWorkflow(
        num_shares=secagg.secagg_num_shares, reconstruction_threshold=secagg.secagg_reconstruction_threshold,
        max_weight=1.0 if is_central_dp(strategy) else secagg.secagg_max_weight,
        clipping_range=secagg.secagg_clipping_range, timeout=timeout,
    )  # fmt: skip
    workflow(recording, context)  # type: ignore[arg-type]

    replies = recording.trained
    privacy.record(server_round, replies)
    masked = [sum(len(b) for b in m.content.config_records[RECORD_KEY_CONFIGS][Key.MASKED_PARAMETERS])
              for m in replies if not m.has_error() and RECORD_KEY_CONFIGS in m.content.config_records]  # fmt: skip
    candidates = [m for m in replies if not declined(m)]
    failed = validate_updates([m for m in candidates if m.has_error()], torch.zeros(0), 0)[1]
    answered = [m for m in candidates if not m.has_error()]
    if adapter.mean is None:
        log.warning("round %d: secure aggregation halted: too few clients answered to unmask the sum", server_round)
        halted = [Rejection(int(m.metadata.src_node_id), "secure aggregation halted") for m in answered]
        return RoundUpdates(replies, [], failed + halted, adapter.sampled, max(masked, default=0))
    # Each reply now carries the round's mean, so only the mean's finiteness can be checked.
    global_flat = weights_vector(arrays, num_trainable(model))
    new_weights = ArrayRecord({WEIGHTS: Array((global_flat.numpy() + adapter.mean).astype(np.float32))})
    for msg in answered:  # the round's own replies, rewritten: nothing else reads them afterwards
        msg.content = RecordDict({"arrays": new_weights, "metrics": msg.content["metrics"]})
    kept, refused = validate_updates(answered, global_flat, 0)
    return RoundUpdates(replies, kept, failed + refused, adapter.sampled, max(masked, default=0))
