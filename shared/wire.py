"""What travels between server and clients: the trainable weights as one flat float32 vector.

Flower stores and sends every Array of a message as its own object, one gRPC call each way per
array (and per chunk). A per-layer ArrayRecord of fedrec's ~55 tensors made the SuperLink traffic,
not the training, the cost of a one-user client's update; one vector makes it one object.
Elementwise strategies (FedAvg, FedProx, FedAdam, FedYogi, FedMedian, FedTrimmedAvg) and
whole-update ones (Krum, update-norm clipping) compute exactly the same on the flat vector.
Both sides cut it back into named tensors with the model they already have.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
from flwr.app import Array, ArrayRecord

from shared.errors import FedrecError

if TYPE_CHECKING:
    import torch

WEIGHTS = "weights"
# The popularity prior's reply (client/popularity.py, server/popularity.py): one record, one array.
COUNTS = "counts"
# torch is imported where it is used: a ClientApp answering SecAgg+'s key exchange reads WEIGHTS
# only, and must not pay torch's import for it (client/app.py).


def to_record(state: dict[str, torch.Tensor]) -> ArrayRecord:
    from shared.models.params import flatten

    return flat_record(flatten(state))


def flat_record(flat: torch.Tensor) -> ArrayRecord:
    """The record of a vector `flatten` or `flat_trainable` made."""
    return ArrayRecord({WEIGHTS: Array(flat.numpy())})


def weights_vector(record: ArrayRecord, size: int) -> torch.Tensor:
    """The flat vector of `size` trainable weights from a record `to_record` wrote; anything else
    (extra or missing keys, another dtype or length) is refused with the reason."""
    import torch

    if set(record.keys()) != {WEIGHTS}:
        raise FedrecError(f"arrays {sorted(record.keys())[:3]}: expected exactly '{WEIGHTS}'")
    array = record[WEIGHTS].numpy()  # deserialized afresh: the vector shares nothing with the message
    if array.dtype != np.float32:
        raise FedrecError(f"weights of dtype {array.dtype}, expected float32")
    if array.shape != (size,):
        raise FedrecError(f"weights vector of shape {array.shape}, expected ({size},)")
    return torch.from_numpy(array)
