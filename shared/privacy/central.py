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


def clip_update(
    trained: dict[str, torch.Tensor], global_weights: dict[str, torch.Tensor], norm: float
) -> dict[str, torch.Tensor]:
    """global + (trained - global) scaled so the update's L2 norm over all arrays is <= norm."""
    import torch

    deltas = {k: trained[k] - global_weights[k] for k in trained}
    total = torch.sqrt(sum((d.double() ** 2).sum() for d in deltas.values()))
    scale = min(1.0, norm / float(total)) if float(total) > 0 else 1.0
    return {k: global_weights[k] + deltas[k] * scale for k in trained}
