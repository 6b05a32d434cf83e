"""Ghost clipping: DP-SGD's per-example clipping without keeping per-example gradients.

Opacus's hooks mode builds a (B, *shape) gradient per example for every trainable tensor, and
keeps them all until the optimizer clips and sums them. Ghost clipping (Li et al. 2022; Opacus's
grad_sample_mode="ghost") runs two backward passes instead: the first yields only each
example's gradient norm, layer by layer, from the layer's inputs a (B, T, d_in) and output
gradients g (B, T, d_out); the second back-propagates sum_i min(1, C / ||grad_i||) loss_i, whose
gradient is the sum of the clipped per-example gradients. Opacus's DPOptimizerFastGradientClipping
then adds N(0, (sigma C)^2) to that sum and divides by the expected batch size, as hooks mode does.

Opacus's own module refuses a layer called twice in one forward ("parameter tying"), and gives
no norm for a Linear whose input has more than 3 dimensions. The Recommender has both: its item
tower embeds histories, targets, negatives and the ranker's candidates in separate calls, and
the ranker reads (B, R, C, d). Here a layer's calls are kept until its last backward, and the
norm is that of the example's gradient summed over all of them, each call flattened to
(B, T, .): exact. A Linear takes the cheaper of two exact norms (Bu et al. 2022's mixed ghost
clipping): the Gram form ||g^T a||^2 = <g g^T, a a^T>, two (B, T, T) matrices, while
2 T^2 <= d_in d_out, else the (B, d_out, d_in) gradient, freed once its norm is taken. An
Embedding always takes Opacus's ghost norm (its per-example gradient is a whole (B, V, d)
table). Any other layer (LayerNorm, or what only functorch differentiates) takes its per-example
gradient, as in hooks mode, freed once its norm is taken.
"""

from __future__ import annotations

from typing import Any

import torch
from opacus.grad_sample import GradSampleModuleFastGradientClipping
from opacus.grad_sample.embedding_norm_sample import compute_embedding_norm_sample
from opacus.grad_sample.functorch import ft_compute_per_sample_gradient
from opacus.grad_sample.grad_sample_module import GradSampleHooks
from opacus.optimizers import DPOptimizerFastGradientClipping
from opacus.utils.fast_gradient_clipping_utils import DPTensorFastGradientClipping
from opacus.utils.module_utils import trainable_parameters
from torch import nn

from shared.errors import FedrecError

Call = tuple[list[torch.Tensor], torch.Tensor]  # one forward call's inputs, its output's gradient


class GhostClipping(GradSampleModuleFastGradientClipping):
    """`model` wrapped for ghost clipping at norm `max_grad_norm`; `backward` runs both passes."""

    def __init__(self, model: nn.Module, max_grad_norm: float) -> None:
        super().__init__(model, max_grad_norm=max_grad_norm, use_ghost_clipping=True)
        self._names = {id(p): name for name, p in trainable_parameters(model)}

    def backward(self, losses: torch.Tensor, optimizer: DPOptimizerFastGradientClipping) -> None:
        """Per-example losses (B,) -> p.grad = the sum of the clipped per-example gradients."""
        DPTensorFastGradientClipping(self, optimizer, losses, loss_reduction="mean").backward()

    def capture_activations_hook(self, module: nn.Module, forward_input: Any, _forward_output: Any) -> None:
        # The hooks mode's capture: Opacus's ghost one refuses a second call of a layer.
        GradSampleHooks.capture_activations_hook(self, module, forward_input, _forward_output)

    def capture_backprops_hook(self, module: nn.Module, _forward_input: Any, forward_output: Any,
                               loss_reduction: str, batch_first: bool) -> None:  # fmt: skip
        if not self.hooks_enabled:  # the second pass
            return
        activations, backprops = self.rearrange_grad_samples(module=module, backprops=forward_output[0].detach(),
                                                             loss_reduction=loss_reduction, batch_first=batch_first)  # fmt: skip
        calls: list[Call] = module.__dict__.setdefault("_ghost_calls", [])
        calls.append((activations, backprops))
        params = [p for _, p in trainable_parameters(module)]
        for p in params:
            p._forward_counter -= 1
        if params[0]._forward_counter == 0:  # the layer's first call, back-propagated last
            for p, norm in layer_norms(module, calls, self.GRAD_SAMPLERS).items():
                p._norm_sample = norm
            calls.clear()
        if not module.activations and hasattr(module, "max_batch_len"):
            del module.max_batch_len

    def get_norm_sample(self) -> torch.Tensor:
        """(B,): each example's gradient norm over every trainable parameter, each taken once.
        A parameter without one would escape clipping in the second pass: refused, by name."""
        missing = [p for p in self.trainable_parameters if getattr(p, "_norm_sample", None) is None]
        if missing:
            raise FedrecError(f"ghost clipping: no per-example gradient norm for '{self._names[id(missing[0])]}' "
                              "(a layer called outside the loss, or a parameter read outside its layer's "
                              "forward); use dp-grad-sample-mode=hooks")  # fmt: skip
        norms = torch.stack([p._norm_sample for p in self.trainable_parameters]).norm(dim=0)
        for p in self.trainable_parameters:
            p._norm_sample = None  # a stale norm must never clip the next batch
        return norms

    def cleanup(self) -> None:
        super().cleanup()
        # A step cut short (an error mid-backward) leaves inputs behind, and the model serves
        # the process's next client: stale ones would set its batch size and so its norms.
        for module in self._module.modules():
            for attr in ("_ghost_calls", "activations", "max_batch_len"):
                module.__dict__.pop(attr, None)


def layer_norms(module: nn.Module, calls: list[Call], grad_samplers: dict) -> dict[nn.Parameter, torch.Tensor]:
    """Each example's gradient norm (B,) for each trainable parameter of `module`, the
    gradient summed over the layer's `calls`."""
    if type(module) is nn.Linear:
        return _linear_norms(module, calls)
    if type(module) is nn.Embedding and module.weight.requires_grad:
        ids = torch.cat([a[0].reshape(len(a[0]), -1) for a, _ in calls], dim=1)
        grads = torch.cat([g.reshape(len(g), -1, g.shape[-1]) for _, g in calls], dim=1)
        if module.padding_idx is not None:  # autograd gives the padding row nothing: nor does its norm
            grads = grads * (ids != module.padding_idx)[..., None]
        return compute_embedding_norm_sample(module, [ids], grads)
    summed: dict[nn.Parameter, torch.Tensor] = {}
    sampler = grad_samplers.get(type(module), ft_compute_per_sample_gradient)
    for activations, backprops in calls:
        for p, grad in sampler(module, activations, backprops).items():
            summed[p] = summed[p] + grad if p in summed else grad
    return {p: grad.reshape(len(grad), -1).norm(dim=1) for p, grad in summed.items()}


def _linear_norms(layer: nn.Linear, calls: list[Call]) -> dict[nn.Parameter, torch.Tensor]:
    a = torch.cat([x[0].reshape(len(x[0]), -1, layer.in_features) for x, _ in calls], dim=1)  # (B, T, d_in)
    g = torch.cat([y.reshape(len(y), -1, layer.out_features) for _, y in calls], dim=1).to(a.dtype)  # (B, T, d_out)
    norms = {}
    if layer.weight.requires_grad:
        if 2 * a.shape[1] ** 2 <= layer.in_features * layer.out_features:
            gram = (torch.bmm(g, g.transpose(1, 2)) * torch.bmm(a, a.transpose(1, 2))).sum((1, 2))
            norms[layer.weight] = gram.clamp(min=0).sqrt()
        else:
            norms[layer.weight] = torch.bmm(g.transpose(1, 2), a).flatten(1).norm(dim=1)
    if layer.bias is not None and layer.bias.requires_grad:
        norms[layer.bias] = g.sum(1).norm(dim=1)
    return norms
