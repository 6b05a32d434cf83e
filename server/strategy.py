"""The aggregation strategy chosen by run config: FedAvg, FedProx, FedAdam, FedYogi, or a robust
one (FedMedian, FedTrimmedAvg, Krum) against updates that validation cannot tell are bad."""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
from flwr.app import Array, ArrayRecord, Message, MetricRecord
from flwr.serverapp import NeighboringRelation, SamplingMethod
from flwr.serverapp import PrivacyConfig as FlowerPrivacyConfig
from flwr.serverapp.strategy import (
    DifferentialPrivacyClientSideFixedClipping,
    FedAdam,
    FedAvg,
    FedMedian,
    FedProx,
    FedTrimmedAvg,
    FedYogi,
    Krum,
    Strategy,
)

from shared.config import FederationConfig, PrivacyConfig
from shared.errors import FedrecError
from shared.privacy.central import UNIFORM_WEIGHT


def make_strategy(cfg: FederationConfig, privacy: PrivacyConfig | None = None, num_nodes: int = 0,
                  population: int = 0) -> Strategy:  # fmt: skip
    """Training samples `fraction-train` of the nodes (at least `min-train-nodes`), validation
    `fraction-evaluate` of them (with one client per user, asking all 6,040 every round is the
    slow part); the final test evaluation asks every node (see server.rounds)."""
    common = dict(
        fraction_train=cfg.fraction_train,
        fraction_evaluate=cfg.fraction_evaluate,
        min_train_nodes=cfg.min_train_nodes,
        min_evaluate_nodes=cfg.min_train_nodes,
        min_available_nodes=cfg.min_train_nodes,
    )
    if cfg.strategy == "fedprox":
        return FedProx(**common, proximal_mu=cfg.proximal_mu)
    if cfg.strategy == "fedadam":
        return Float32FedAdam(**common, eta=cfg.server_lr, tau=cfg.server_tau)
    if cfg.strategy == "fedyogi":
        return FedYogi(**common, eta=cfg.server_lr, tau=cfg.server_tau)
    if cfg.strategy == "fedmedian":
        return FedMedian(**common)
    if cfg.strategy == "fedtrimmedavg":
        return FedTrimmedAvg(**common, beta=0.2)
    if cfg.strategy == "krum":
        return Krum(**common, num_malicious_nodes=1)
    if privacy is not None and privacy.central_dp:
        return central_dp(UniformTrainFedAvg(**common, weighted_by_key=UNIFORM_WEIGHT), cfg, privacy, num_nodes,
                          population or num_nodes)  # fmt: skip
    return FedAvg(**common)


class Float32FedAdam(FedAdam):
    """Flower's FedAdam scales its server step by a bias-corrected learning rate computed as a
    numpy float64, to which numpy 2 promotes the whole model; the model travels as float32
    (shared/wire.py refuses anything else), so the aggregate is cast back. (FedYogi's step
    stays float32: tests/test_strategy.py checks every strategy.)"""

    def aggregate_train(
        self, server_round: int, replies: Iterable[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        arrays, metrics = super().aggregate_train(server_round, replies)
        if arrays is not None:
            arrays = ArrayRecord({k: Array(v.numpy().astype(np.float32, copy=False)) for k, v in arrays.items()})
        return arrays, metrics


class UniformTrainFedAvg(FedAvg):
    """FedAvg weighing every client's update equally, as central DP's accounting requires, while
    evaluation stays weighted by users, so its metrics remain exact global means. Training's
    aggregation is FedAvg's own: Flower's DP wrapper accepts only that."""

    def aggregate_evaluate(self, server_round: int, replies: Iterable[Message]) -> MetricRecord | None:
        uniform, self.weighted_by_key = self.weighted_by_key, "num-examples"
        try:
            return super().aggregate_evaluate(server_round, replies)
        finally:
            self.weighted_by_key = uniform


def central_dp(strategy: FedAvg, cfg: FederationConfig, privacy: PrivacyConfig, num_nodes: int,
               population: int) -> Strategy:  # fmt: skip
    """DP-FedAvg with client-side fixed clipping and Flower's RDP accountant. Flower accounts it
    without sampling amplification (a conservative bound for sampled rounds)."""
    from flwr.serverapp import RdpAccountant

    sampled = max(int(num_nodes * cfg.fraction_train), cfg.min_train_nodes)
    accountant = RdpAccountant(FlowerPrivacyConfig(
        # Public, and at most 1 / N^1.1: a delta near 1 / N could publish one client whole.
        target_delta=min(privacy.target_delta, max(population, 1) ** -1.1), population_size=max(population, 1),
        neighboring_relation=NeighboringRelation.ADD_OR_REMOVE_ONE,
        sampling_method=SamplingMethod.NO_AMPLIFICATION,
    ))  # fmt: skip
    return DifferentialPrivacyClientSideFixedClipping(
        strategy, privacy.central_noise_multiplier, privacy.central_clipping_norm, sampled, accountant=accountant
    )


def check_central_dp(cfg: FederationConfig, privacy: PrivacyConfig) -> None:
    if privacy.central_dp and cfg.strategy != "fedavg":
        raise FedrecError(f"central-dp needs strategy=fedavg (Flower accounts only FedAvg), got '{cfg.strategy}'")


MOMENTS = ("m_t", "v_t")  # where Flower's FedAdam and FedYogi keep their moments between rounds


def optimizer_state(strategy: Strategy) -> dict[str, np.ndarray]:
    """The adaptive strategies' moments as flat '<moment>/<array>' keys; empty for the others.
    Saved with each round: a resumed FedAdam starting from zero moments takes different steps."""
    return {f"{moment}/{key}": np.ascontiguousarray(value)
            for moment in MOMENTS for key, value in (getattr(strategy, moment, None) or {}).items()}  # fmt: skip


def restore_optimizer_state(strategy: Strategy, state: dict[str, np.ndarray]) -> None:
    """Put `optimizer_state`'s output back; ignored by a strategy without moments."""
    for name, value in state.items():
        moment, key = name.split("/", 1)
        if moment in MOMENTS and hasattr(strategy, moment):
            setattr(strategy, moment, {**(getattr(strategy, moment) or {}), key: value})
