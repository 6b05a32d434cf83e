"""This silo's item counts, released once under user-level DP for the server's popularity prior.

A text-only item tower trained from scratch knows nothing of which items are popular, and the
sampled protocol rewards popularity: a private model starting without consented data then
recommends worse than the most popular items (docs/private-model.md). The server asks each silo,
before round 1, for its users' item counts (server/popularity.py); this module answers.

The mechanism is one full-batch DP-SGD step on a different "gradient": each user's indicator
vector over the items of their training history, scaled to L2 norm at most 1, summed over the
silo's users, plus N(0, sigma^2) on every item. Replacing one user moves the sum by at most 2,
as replacing one user's clipped gradient moves DP-SGD's, so the release is the history entry
(sigma, q=1, 1 step) that the node's accountant and the privacy report already compose. The node,
not the server, sets sigma: from the `popularity-epsilon` the run asks for, raised to its own
policy's noise floor, and it records the spend before the counts leave. Validation and test
items are not counted.

The node also decides whether it releases counts at all: its policy's `max-popularity-epsilon`
(0, never, unless its operator opts in) caps what a run may ask, and it answers one request per
run: every copy would be accounted, but a second one tells the server little it did not know and
spends budget the training would have had.
"""

from __future__ import annotations

import secrets
from dataclasses import replace

import numpy as np
import torch
from flwr.app import Array, ArrayRecord, ConfigRecord, Context, Message, RecordDict
from opacus.optimizers.optimizer import _generate_noise

from client.data import LocalData, local_data
from client.policy import node_policy
from client.privacy import load_state, new_state, privacy_record, save_state, state_path
from client.state import state_dir
from shared.config import PrivacyConfig, from_run_config
from shared.data.dataset import CATALOG_KEY, check_catalog_fingerprint
from shared.privacy.accounting import EXHAUSTED, USER, Spend, calibrate_sigma, epsilon, privacy_unit
from shared.wire import COUNTS

CLIP = 1.0  # each user's count vector's L2 norm bound; sigma is relative to it
RELEASED_KEY = "fedrec-popularity-released"  # in the node's per-run context.state
REFUSAL = "refusal"  # as client/handlers.py: the node's policy forbids what the run asks


def clipped_counts(local: LocalData) -> np.ndarray:
    """(num_items + 1,) float64: the sum over this node's users of their training items'
    indicator vectors, each scaled to L2 norm at most CLIP. A user's repeated item counts once."""
    counts = np.zeros(local.dataset.num_items + 1)
    for user in local.users:
        items = np.unique(local.dataset.train_sequence(int(user)))
        items = items[items > 0]
        if len(items):
            counts[items] += min(1.0, CLIP / np.sqrt(len(items)))
    return counts


def secure_noise(std: float, size: int) -> np.ndarray:
    """(size,) float64 N(0, std^2), drawn as DP-SGD's is (client/training.py): Opacus's secure
    mode, whose sum of four draws resists floating-point attacks on the low bits, from a generator
    seeded afresh from the OS's secure source, so nobody holding the run config can regenerate the
    noise and subtract it."""
    generator = torch.Generator().manual_seed(secrets.randbits(63))
    return _generate_noise(std, torch.zeros(size, dtype=torch.float64), generator, secure_mode=True).numpy()


def _refuse(msg: Message, local: LocalData, key: str, reason: str) -> Message:
    record = ConfigRecord({"key": key, "reason": reason, "partition-id": local.partition_id})
    return Message(RecordDict({REFUSAL: record}), reply_to=msg)


def release(msg: Message, context: Context) -> Message:
    """The node's noisy item counts and its privacy record; a refusal when the node's policy
    forbids the run config, when its users are not whole histories (one client per user has no
    silo to hide a user in), or when the release would leave no budget to train."""
    local = local_data(context.run_config, context.node_config)
    check_catalog_fingerprint(local.dataset, str(msg.content["config"].get(CATALOG_KEY, "")))
    privacy = from_run_config(PrivacyConfig, context.run_config)
    policy = node_policy(context.node_config, privacy)
    refused = policy.refusal(privacy)
    if refused is not None:
        return _refuse(msg, local, *refused)
    if not privacy.dp or privacy_unit(local.scheme) != USER:
        return _refuse(msg, local, "popularity-epsilon", "counts are released only by a silo under user-level DP")
    capped = policy.count_refusal(privacy)
    if capped is not None:
        return _refuse(msg, local, "popularity-epsilon", capped)
    if RELEASED_KEY in context.state:
        return _refuse(msg, local, "popularity-epsilon", "this node already released its counts in this run")
    path = state_path(state_dir(context), local.client_id)
    state = load_state(path, context) or new_state(local.client_id, USER, privacy)
    state = replace(state, budget=min(state.budget, privacy.target_epsilon, policy.max_epsilon))
    if state.status == EXHAUSTED:
        return _refuse(msg, local, "popularity-epsilon", "the node's budget is exhausted")
    sigma = policy.noise_floor(calibrate_sigma(privacy.popularity_epsilon, state.delta, 1.0, 1))
    eps = epsilon([*state.steps(), (sigma, 1.0, 1)], state.delta)
    if eps >= state.budget:
        return _refuse(msg, local, "popularity-epsilon", f"the release would bring epsilon to {eps:.3f}, leaving "
                       f"nothing of the node's budget {state.budget:g} to train")  # fmt: skip
    # Recorded before anything is computed from the data: a crash afterwards wastes budget,
    # never hides spending.
    state = replace(state, history=(*state.history, Spend(0, sigma, 1.0, 1, CLIP, eps)))
    save_state(state, path, context)
    context.state[RELEASED_KEY] = ConfigRecord({"round": 0})
    noisy = clipped_counts(local) + secure_noise(sigma * CLIP, local.dataset.num_items + 1)
    content = RecordDict({COUNTS: ArrayRecord({COUNTS: Array(noisy.astype(np.float32))}),
                          "privacy": privacy_record(state, local.partition_id)})  # fmt: skip
    return Message(content, reply_to=msg)
