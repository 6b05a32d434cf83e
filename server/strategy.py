"""The aggregation strategy chosen by run config: FedAvg, FedProx, FedAdam or FedYogi."""

from __future__ import annotations

from flwr.serverapp.strategy import FedAdam, FedAvg, FedProx, FedYogi, Strategy

from shared.config import FederationConfig


def make_strategy(cfg: FederationConfig) -> Strategy:
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
        return FedAdam(**common, eta=cfg.server_lr)
    if cfg.strategy == "fedyogi":
        return FedYogi(**common, eta=cfg.server_lr)
    return FedAvg(**common)
