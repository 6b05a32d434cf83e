"""Injected client faults, for rehearsing a federation's failure handling (`fault-*` run config).

Which clients fail is drawn from (seed, round, partition), so a rehearsal repeats exactly:
- crash: the ClientApp raises before training (the server gets an error reply);
- hang:  the client sleeps past the round timeout before training (the server stops waiting);
- nan:   the update is sent with NaN weights;
- scale: the update (trained minus global weights) is sent multiplied by SCALE.
The four fractions are disjoint shares of the clients of a round.
"""

from __future__ import annotations

import time

import numpy as np
import torch

from shared.config import FaultConfig

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


def corrupt(kind: str, trained: torch.Tensor, global_weights: torch.Tensor) -> torch.Tensor:
    """The flat trained weights as this fault sends them."""
    if kind == NAN:
        return torch.full_like(trained, float("nan"))
    if kind == SCALED:
        return global_weights + SCALE * (trained - global_weights)
    return trained
