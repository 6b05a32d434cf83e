"""DP-FedAvg's client half: clip the whole model update to the norm the server sends.

Flower's `fixedclipping_mod` does the same, but cannot let a budget-exhausted client answer
without arrays; this is its computation, applied by the train handler itself.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from flwr.supercore.differential_privacy import KEY_CLIPPING_NORM

if TYPE_CHECKING:  # the constants are read where torch is not loaded (client/secure.py)
    import torch

CLIPPING_NORM_KEY = KEY_CLIPPING_NORM  # set in the train config by Flower's DP wrapper
UNIFORM_WEIGHT = "client-weight"  # central DP's accounting needs every client to weigh the same


def clip_update(trained: torch.Tensor, global_weights: torch.Tensor, norm: float) -> torch.Tensor:
    """global + (trained - global) scaled so the update's L2 norm (flat weights: over the whole
    model) is <= norm."""
    import torch

    delta = trained - global_weights
    total = float(torch.linalg.vector_norm(delta.double()))
    scale = min(1.0, norm / total) if total > 0 else 1.0
    return global_weights + delta * scale
