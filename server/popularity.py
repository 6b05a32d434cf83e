"""The popularity prior: before round 1, each silo's item counts under DP, summed into the item bias.

A model starting from scratch (nobody consented) has an item tower that reads only text, so it
starts knowing nothing of popularity, and the sampled protocol rewards popularity heavily. With
`popularity-epsilon` set, the server asks every connected node once for its users' item counts;
each silo answers under user-level DP from its own budget (client/popularity.py) or refuses. The
spends are ledgered as round 0, and every later privacy record carries them in its history, so
the privacy report composes them with the training rounds.

Against whom: each silo's counts leave it already noised, so the guarantee holds against the
server and anyone who reads the final model; it does not need SecAgg+.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path

import numpy as np
import torch
from flwr.app import ConfigRecord, Message, RecordDict
from flwr.serverapp import Grid

from server.messaging import send_and_receive
from server.privacy import PrivacyTracker
from shared.atomic import write_json
from shared.config import ModelConfig, PartitionConfig, PrivacyConfig
from shared.data.dataset import CATALOG_KEY
from shared.errors import FedrecError
from shared.models.recommender import Recommender
from shared.wire import COUNTS

log = logging.getLogger("flwr.fedrec")
POPULARITY_QUERY = "query.popularity"  # client/app.py answers it
PRIOR_FILE = "popularity_prior.json"  # in the run directory: the summed noisy counts
# How sharply the log counts enter the bias, chosen on validation items: the noise floor squeezes
# the log counts' range, and a model whose bias spans too little of it ranks below popularity on
# the sampled protocol (simulations/results/popularity_prior.md).
SHARPNESS = 2.0


def check_popularity_prior(privacy: PrivacyConfig, partition: PartitionConfig, model: ModelConfig) -> None:
    """Refuse, before anything runs, a popularity prior the run could not use or account."""
    if privacy.popularity_epsilon <= 0:
        return
    if not privacy.dp:
        raise FedrecError("popularity-epsilon needs dp=true: the silos account the release with their DP-SGD")
    if partition.partitioning == "user":
        raise FedrecError("popularity-epsilon needs silos: with partitioning=user a client is one user, "
                          "and its counts would be that user's own items")  # fmt: skip
    if not model.use_item_bias:
        raise FedrecError("popularity-epsilon needs use-item-bias=true: the prior starts the item bias")


def log_prior(counts: np.ndarray, noise_std: float, sharpness: float = 1.0) -> np.ndarray:
    """The item bias from noisy counts: sharpness x log(count + noise_std), centred over the
    items, 0 for padding. Negative noisy counts are floored at 0, and the noise's own size is
    added, so that items told apart only by noise start nearly level instead of ordered by it."""
    scores = sharpness * np.log(np.maximum(np.asarray(counts, dtype=np.float64), 0.0) + max(noise_std, 1e-6))
    scores[1:] -= scores[1:].mean()
    scores[0] = 0.0
    return scores


def popularity_prior(grid: Grid, run_dir: Path, catalog: str, num_items: int, timeout: float) -> np.ndarray | None:
    """Ask every node for its noisy counts, ledger what each spent (or why it refused), and
    return `log_prior` of their sum; None when no node released any."""
    content = lambda: RecordDict({"config": ConfigRecord({CATALOG_KEY: catalog})})  # noqa: E731
    nodes = list(grid.get_node_ids())
    replies = send_and_receive(grid, [Message(content(), dst_node_id=n, message_type=POPULARITY_QUERY)
                                      for n in nodes], timeout)  # fmt: skip
    PrivacyTracker(run_dir).record(0, replies)  # every spend and refusal ledgered as round 0
    total, variance, released = np.zeros(num_items + 1), 0.0, 0
    for msg in replies:
        if msg.has_error():
            log.warning("popularity prior: node %d answered with an error: %s", msg.metadata.src_node_id,
                        msg.error.reason)  # fmt: skip
            continue
        if COUNTS not in msg.content:  # a refusal, ledgered with its reason
            continue
        counts = np.asarray(msg.content[COUNTS][COUNTS].numpy(), dtype=np.float64)
        sigma = float(msg.content["privacy"]["noise-multiplier"]) if "privacy" in msg.content else math.nan
        # Counts without a finite, positive sigma on record are not accounted: never used.
        if counts.shape != total.shape or not np.isfinite(counts).all() or not math.isfinite(sigma) or sigma <= 0:
            log.warning("popularity prior: node %d sent counts of shape %s, not finite or not accounted; left out",
                        msg.metadata.src_node_id, counts.shape)  # fmt: skip
            continue
        total += counts
        variance += sigma**2
        released += 1
    if not released:
        log.warning("popularity prior: none of %d nodes released counts; the item bias starts at zero", len(nodes))
        return None
    log.info("popularity prior: counts from %d of %d nodes, noise std %.2f per item", released, len(nodes),
             math.sqrt(variance))  # fmt: skip
    # Released under DP, so kept: anyone can recompute the item bias the run started from.
    write_json(run_dir / PRIOR_FILE, {"nodes": released, "noise_std": math.sqrt(variance),
                                      "sharpness": SHARPNESS, "counts": total.tolist()})  # fmt: skip
    return log_prior(total, math.sqrt(variance), SHARPNESS)


def set_item_bias(model: Recommender, prior: np.ndarray) -> None:
    with torch.no_grad():
        model.item_bias.weight[:, 0] = torch.as_tensor(prior, dtype=model.item_bias.weight.dtype)
