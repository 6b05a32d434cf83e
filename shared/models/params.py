"""What travels between client and server: the trainable parameters, and nothing else.

Frozen weights (the text embeddings, the unused word-embedding table of the user tower) and
buffers never leave a node: every participant rebuilds them from the public item catalog.
"""

from __future__ import annotations

from collections import OrderedDict

import torch

from shared.errors import FedrecError


def trainable_state(model: torch.nn.Module) -> OrderedDict[str, torch.Tensor]:
    return OrderedDict(
        (name, p.detach().cpu().clone()) for name, p in model.named_parameters() if p.requires_grad
    )


def load_trainable(model: torch.nn.Module, state: dict[str, torch.Tensor]) -> None:
    """Copy `state` into the model's trainable parameters; the keys and shapes must match."""
    params = {n: p for n, p in model.named_parameters() if p.requires_grad}
    missing, extra = sorted(set(params) - set(state)), sorted(set(state) - set(params))
    if missing or extra:
        raise FedrecError(f"parameter mismatch: missing {missing[:3]}, unexpected {extra[:3]}")
    with torch.no_grad():
        for name, p in params.items():
            value = torch.as_tensor(state[name])
            if value.shape != p.shape:
                raise FedrecError(f"parameter {name}: shape {tuple(value.shape)}, expected {tuple(p.shape)}")
            p.copy_(value)


def trainable_parameters(model: torch.nn.Module) -> list[torch.nn.Parameter]:
    """The model's parameters that train, in its order; the Recommender keeps its list (an Opacus
    wrapper hands the call on to it), any other module is walked."""
    listed = getattr(model, "trainable_parameters", None)
    return listed() if callable(listed) else [p for p in model.parameters() if p.requires_grad]


def flatten(state: dict[str, torch.Tensor]) -> torch.Tensor:
    """One float32 vector, the parameters in `state`'s order (the model's own order)."""
    return torch.cat([v.detach().reshape(-1).float().cpu() for v in state.values()])


def num_trainable(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in trainable_parameters(model))


def flat_trainable(model: torch.nn.Module) -> torch.Tensor:
    """`flatten(trainable_state(model))` in one copy instead of two."""
    return torch.cat([p.detach().reshape(-1) for p in trainable_parameters(model)]).float().cpu()


def load_flat(model: torch.nn.Module, flat: torch.Tensor) -> None:
    """Copy the vector `flatten` made into the model's trainable parameters. A one-user client
    loads the global weights for every message, so this copies once into the listed parameters:
    named tensors and `load_trainable` cost it two copies and two module walks, ~2 ms of a
    ~30 ms update."""
    params = trainable_parameters(model)
    expected = sum(p.numel() for p in params)
    if flat.dim() != 1 or flat.numel() != expected:
        raise FedrecError(f"weights vector of shape {tuple(flat.shape)}, expected ({expected},)")
    with torch.no_grad():
        for p, chunk in zip(params, flat.split([p.numel() for p in params])):
            p.copy_(chunk.view_as(p))
