"""Local training and evaluation on one node's users: plain functions the handlers call."""

from __future__ import annotations

import secrets
import time
import warnings
from collections.abc import Callable
from functools import lru_cache

import numpy as np
import torch
from opacus import GradSampleModule
from opacus.optimizers import DPOptimizer, DPOptimizerFastGradientClipping

from client.data import LocalData
from client.model import with_canaries
from client.ghost import GhostClipping
from client.privacy import RoundPlan
from shared.config import TrainConfig
from shared.eval.metrics import flatten
from shared.models.batches import Sequences, interaction_examples, training_sequences
from shared.models.recommender import Recommender
from shared.models.params import trainable_parameters
from shared.models.training import Backward, evaluate_model, make_optimizer, reset_optimizer, train_epoch
from shared.privacy.accounting import EXAMPLE


def local_examples(model: Recommender, local: LocalData, unit: str) -> Sequences:
    """One example per user (a silo's user-level unit) or per interaction (example level)."""
    max_len = int(model.config["model"]["max_len"])
    if unit == EXAMPLE:
        return interaction_examples(local.dataset, local.users, max_len)
    # An audit run's canary users train here too, never in local_evaluate (client/model.py).
    return with_canaries(training_sequences(local.dataset, local.users, max_len), local, max_len)


def local_fit(
    model: Recommender, local: LocalData, data: Sequences, cfg: TrainConfig, server_round: int,
    proximal_mu: float = 0.0, dp: RoundPlan | None = None, steps: int = 0,
) -> dict[str, float]:  # fmt: skip
    """`cfg.epochs` local epochs over this node's examples `data` (see `local_examples`), or
    `steps` optimizer steps when > 0, with `dp` as the plan's Poisson-sampled DP-SGD steps (the
    plan counts `steps` already).

    Without DP, seeds depend on (seed, round, node) only, so a resumed run repeats exactly what
    an uninterrupted one would have done. Under DP they must not: the server knows all three, and
    could replay which steps sampled an example (undoing the amplification by sampling) and
    regenerate the noise to subtract it. So under DP the sampling, the noise and everything
    else random come from the operating system's secure source, fresh for every message."""
    started = time.perf_counter()
    if len(data) == 0:
        return {"num-examples": 0, "train-loss": 0.0, "train-seconds": 0.0}
    device = cfg.resolved_device()
    # A no-op .to() still walks every submodule: a few ms of a one-user client's ~25.
    moved = next(model.parameters()).device != torch.device(device)
    if moved:
        model.to(device)
    if dp is None:
        seed_device(hash((cfg.seed, server_round, local.partition_id)) % 2**31, device)
        rng = np.random.default_rng([cfg.seed, server_round, local.partition_id])
    else:
        seed_device(secrets.randbits(63), device)
        rng = np.random.default_rng(secrets.randbits(128))
    params = trainable_parameters(model)
    optimizer = _optimizer(model, cfg)
    reset_optimizer(optimizer)
    anchor = [p.detach().clone() for p in params] if proximal_mu > 0 else []
    stepped: torch.nn.Module = model
    backward = None
    if dp is not None:
        stepped, optimizer, backward = dp_sgd(model, optimizer, dp, max(1, round(dp.sample_rate * len(data))), device)
    losses: dict[str, float] = {}
    executed = 0  # DP-SGD's noisy steps, empty batches' noise-only steps included
    num_items = int(model.config["num_items"])
    try:
        with warnings.catch_warnings():
            # Opacus's hooks on layers whose inputs need no gradient (the embeddings) make PyTorch
            # warn on every step; the per-sample gradients are right (tests/test_opacus.py).
            warnings.filterwarnings("ignore", message="Full backward hook is firing")
            passes = 1 if steps else cfg.epochs
            for _ in range(passes):
                batches = step_batches(len(data), cfg.batch_size, steps, rng) if steps else None
                if dp is not None:  # Poisson sampling: what the accountant's sample rate assumes
                    batches = [np.flatnonzero(rng.random(len(data)) < dp.sample_rate)
                               for _ in range(dp.steps // passes)]  # fmt: skip
                    executed += len(batches)
                after = _proximal_step(params, anchor, proximal_mu, cfg.lr)
                losses = train_epoch(stepped, num_items, optimizer, data, cfg, rng, device, batches=batches,
                                     progress=False, after_step=after, backward=backward,
                                     empty_step=_noise_step(optimizer, after) if dp else None)  # fmt: skip
    finally:
        if isinstance(stepped, (GradSampleModule, GhostClipping)):
            stepped._close()  # the model instance serves the process's next client: no hooks left
    if moved:
        model.cpu()
    # The seconds of local work let a round's time be split into training and federation overhead.
    return {"num-examples": len(data), "train-seconds": time.perf_counter() - started,
            **({"dp-steps": executed} if dp is not None else {}),
            **{f"train-{k}": v for k, v in losses.items()}}  # fmt: skip


def dp_sgd(
    model: Recommender, optimizer: torch.optim.Optimizer, plan: RoundPlan, expected_batch_size: int, device: str,
) -> tuple[GradSampleModule | GhostClipping, DPOptimizer, Backward | None]:  # fmt: skip
    """Opacus's DP-SGD around `model` and `optimizer` in the plan's grad-sample mode: the model to
    step, the optimizer that clips (hooks) or not (ghost: the backward does) and adds the noise,
    and the backward that turns per-example losses (B,) into gradients (None: their mean's).
    Either way each example's gradient is clipped to C, and N(0, (sigma C)^2) is added to the
    sum before it is divided by the expected batch size (tests/test_opacus.py).

    secure_mode: Opacus's noise robust to floating-point attacks, drawn from a generator seeded
    from the OS (torch's default one is seeded from public values in local_fit)."""
    noise = torch.Generator(device=device).manual_seed(secrets.randbits(63))
    kwargs = {"noise_multiplier": plan.noise_multiplier, "max_grad_norm": plan.max_grad_norm,
              "expected_batch_size": expected_batch_size, "generator": noise, "secure_mode": True}  # fmt: skip
    if plan.grad_sample_mode == "ghost":
        ghost = GhostClipping(model, plan.max_grad_norm)
        dp_optimizer = DPOptimizerFastGradientClipping(optimizer, **kwargs)
        return ghost, dp_optimizer, lambda losses: ghost.backward(losses, dp_optimizer)
    return GradSampleModule(model), FiniteDPOptimizer(optimizer, **kwargs), None


class FiniteDPOptimizer(DPOptimizer):
    """Opacus's DPOptimizer, except that an example whose per-example gradient is not finite
    contributes nothing. Opacus's clip factor C / (norm + 1e-6) is NaN for such an example, and
    one NaN makes the whole noisy sum NaN: weights a server crafted to overflow on one user's
    features would learn, from a NaN update, whether that user was in the batch. A zero gradient
    is within the sensitivity the accountant assumes (any example's contribution has norm <= C)."""

    def clip_and_accumulate(self) -> None:
        flat = [self._get_flat_grad_sample(p) for p in self.params]
        if len(flat[0]):
            finite = torch.stack([torch.isfinite(g.reshape(len(g), -1)).all(dim=1) for g in flat]).all(dim=0)
            if not bool(finite.all()):
                for p, g in zip(self.params, flat):
                    keep = finite.view(-1, *[1] * (g.dim() - 1))
                    p.grad_sample = torch.where(keep, g, torch.zeros((), dtype=g.dtype))
        super().clip_and_accumulate()


def seed_device(seed: int, device: str) -> None:
    """torch.manual_seed for the one device a client trains on. The full call also seeds every
    accelerator backend torch knows, and for each one not yet initialised it records the call's
    stack: 0.15 ms, every message of a one-user client."""
    torch.default_generator.manual_seed(seed)
    if device.startswith("cuda"):
        torch.cuda.manual_seed_all(seed)


@lru_cache(maxsize=1)
def _optimizer(model: Recommender, cfg: TrainConfig) -> torch.optim.Optimizer:
    """One optimizer per process's model (client/model.py keeps the model), reset for each client."""
    return make_optimizer(model, cfg)


def step_batches(n: int, batch_size: int, steps: int, rng: np.random.Generator) -> list[np.ndarray]:
    """`steps` batches of row indices: `batch_size` chunks of fresh shuffles of the n rows, as
    many shuffles as it takes, so each row is seen as evenly as the steps allow."""
    batches: list[np.ndarray] = []
    while len(batches) < steps:
        order = rng.permutation(n)
        batches += [order[i : i + batch_size] for i in range(0, n, batch_size)]
    return batches[:steps]


def _noise_step(optimizer: DPOptimizer,
                after_step: Callable[[], None] | None) -> Callable[[], None]:  # fmt: skip
    """An empty Poisson batch's step: no example, so no gradient, but the noise and the update
    as the accountant counts them (Opacus's DP data loader does the same), so the executed
    mechanism is the analysed one: every planned step adds noise."""

    def step() -> None:
        # The previous step's per-example gradients are still there (train_epoch clears them after
        # the next forward), marked as used: clear them, or Opacus refuses to step on them again.
        optimizer.zero_grad(set_to_none=True)
        for p in optimizer.params:
            if isinstance(optimizer, DPOptimizerFastGradientClipping):  # ghost: noises the summed p.grad
                p.grad = torch.zeros_like(p)
            else:  # hooks: clips and sums p.grad_sample, here no row
                p.grad_sample = torch.zeros((0, *p.shape), dtype=p.dtype, device=p.device)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if after_step:
            after_step()

    return step


def _proximal_step(params: list[torch.Tensor], anchor: list[torch.Tensor], mu: float, lr: float):  # type: ignore[no-untyped-def]
    """FedProx's proximal term as a step towards the global weights after each optimizer step.
    Added to the loss instead, its gradient would bypass (and be lost to) DP-SGD's per-example
    clipping; as a separate step it depends only on public weights, so it costs no privacy."""
    if not anchor:
        return None

    @torch.no_grad()
    def step() -> None:
        for p, a in zip(params, anchor):
            p.sub_(lr * mu * (p - a))

    return step


def local_evaluate(model: Recommender, local: LocalData, stage: str, device: str) -> dict[str, float]:
    """Both stages and protocols over this node's users, flattened for a MetricRecord:
    'retrieval-full-hr@10', 'ranking-sampled-ndcg@10', ... plus num-examples (users)."""
    flat = flatten(evaluate_model(model, local.dataset, stage, device, users=local.users))
    flat["num-examples"] = len(local.users)
    return flat
