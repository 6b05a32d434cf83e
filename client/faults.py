"""Injected client faults, for rehearsing a federation's failure handling (`fault-*` run config).

`fault_mod`, a mod on the ClientApp's train function, plays them around the handler, which knows
nothing of them. Which clients fail is drawn from (seed, round, partition), so a rehearsal
repeats exactly:
- crash: the ClientApp raises before training (the server gets an error reply);
- hang:  the client sleeps past the round timeout before training (the server stops waiting);
- nan:   the update is sent with NaN weights;
- scale: the update (trained minus global weights) is sent multiplied by SCALE.
The four fractions are disjoint shares of the clients of a round. Under SecAgg+ the mod sits
inside the secure-aggregation mod, so a faulty update is what gets masked, as a real one would be.
"""

from __future__ import annotations

import time

import numpy as np
from flwr.app import Array, ArrayRecord, Context, Message

from shared.config import FaultConfig, RunConfig
from shared.wire import WEIGHTS

SCALE = 1000.0
CRASH, HANG, NAN, SCALED = "crash", "hang", "nan", "scale"


class InjectedCrash(RuntimeError):
    """A crash the run config asked for."""


def fault_for(cfg: FaultConfig, seed: int, server_round: int, partition_id: int) -> str:
    """This client's fault in this round, or ''."""
    shares = ((CRASH, cfg.fault_crash_fraction), (HANG, cfg.fault_hang_fraction),
              (NAN, cfg.fault_nan_fraction), (SCALED, cfg.fault_scale_fraction))  # fmt: skip
    if not any(share for _, share in shares):
        return ""  # the usual run: no generator to seed for every message
    u = float(np.random.default_rng([seed, server_round, partition_id, 0xFA]).random())
    edge = 0.0
    for kind, share in shares:
        edge += float(share)
        if u < edge:
            return kind
    return ""


def before_training(kind: str, hang_seconds: float) -> None:
    if kind == CRASH:
        raise InjectedCrash("injected crash (fault-crash-fraction)")
    if kind == HANG:
        time.sleep(hang_seconds)


def corrupt(kind: str, trained: np.ndarray, global_weights: np.ndarray) -> np.ndarray:
    """The flat trained weights as this fault sends them."""
    if kind == NAN:
        return np.full_like(trained, np.nan)
    if kind == SCALED:
        return global_weights + np.float32(SCALE) * (trained - global_weights)
    return trained


def clipped_as_sent(sent: np.ndarray, global_weights: np.ndarray, config: dict) -> np.ndarray:
    """The corrupted update as the node may send it: under central DP (the round's config carries
    the clipping norm) clipped again, since the norm bound is the node's guarantee and a server
    that writes the run config could otherwise ask a node for a scaled, unclipped update."""
    from shared.privacy.central import CLIPPING_NORM_KEY, clip_update

    if CLIPPING_NORM_KEY not in config:
        return sent
    import torch

    norm = float(config[CLIPPING_NORM_KEY])
    return clip_update(torch.from_numpy(sent), torch.from_numpy(global_weights), norm).numpy()


def fault_mod(msg: Message, context: Context, call_next):  # type: ignore[no-untyped-def]
    """This simulated node's fault for this round, if the run config rehearses any: a crash or a
    hang before the handler trains, a NaN or scaled update in place of the one it sends."""
    if context.node_config.get("state-dir"):
        # A deployed node rehearses nothing a server asks: a hang or a NaN would cost its
        # operator time and budget for no one's benefit.
        return call_next(msg, context)
    run = RunConfig.parse(context.run_config)
    server_round = int(msg.content["config"].get("server-round", 0))
    kind = fault_for(run.faults, run.partition.seed, server_round, int(context.node_config.get("partition-id", 0)))
    if not kind:
        return call_next(msg, context)
    before_training(kind, 2 * run.federation.round_timeout)
    reply = call_next(msg, context)
    if not reply.has_error() and "arrays" in reply.content:  # a declining or refusing node sends none
        trained, global_weights = reply.content["arrays"][WEIGHTS].numpy(), msg.content["arrays"][WEIGHTS].numpy()
        sent = clipped_as_sent(corrupt(kind, trained, global_weights), global_weights, dict(msg.content["config"]))
        reply.content["arrays"] = ArrayRecord({WEIGHTS: Array(sent)})
    return reply
