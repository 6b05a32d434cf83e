"""Local training and evaluation on one node's users: plain functions the handlers call."""

from __future__ import annotations

import numpy as np
import torch

from client.data import LocalData
from shared.config import TrainConfig
from shared.models.batches import training_sequences
from shared.models.recommender import Recommender
from shared.models.training import evaluate_model, train_epoch


def local_fit(
    model: Recommender, local: LocalData, cfg: TrainConfig, server_round: int,
    proximal_mu: float = 0.0,
) -> dict[str, float]:  # fmt: skip
    """`cfg.epochs` local epochs over this node's users. Seeds depend on (seed, round, node)
    only, so a resumed run repeats exactly what an uninterrupted one would have done."""
    device = cfg.resolved_device()
    model.to(device)
    max_len = int(model.config["model"]["max_len"])
    data = training_sequences(local.dataset, local.users, max_len)
    if len(data) == 0:
        return {"num-examples": 0, "loss": 0.0}
    torch.manual_seed(hash((cfg.seed, server_round, local.partition_id)) % 2**31)
    rng = np.random.default_rng([cfg.seed, server_round, local.partition_id])
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    penalty = None
    if proximal_mu > 0:
        anchor = [p.detach().clone() for p in params]

        def penalty() -> torch.Tensor:
            return proximal_mu / 2 * sum(((p - a) ** 2).sum() for p, a in zip(params, anchor))

    losses: dict[str, float] = {}
    for _ in range(cfg.epochs):
        losses = train_epoch(model, model, optimizer, data, cfg, rng, device, progress=False,
                             penalty=penalty)  # fmt: skip
    model.cpu()
    return {"num-examples": len(data), **{f"train-{k}": v for k, v in losses.items()}}


def local_evaluate(model: Recommender, local: LocalData, stage: str, device: str) -> dict[str, float]:
    """Both stages and protocols over this node's users, flattened for a MetricRecord:
    'retrieval-full-hr@10', 'ranking-sampled-ndcg@10', ... plus num-examples (users)."""
    results = evaluate_model(model, local.dataset, stage, device, users=local.users)
    flat = {
        f"{stage_name}-{protocol}-{metric}": value
        for stage_name, protocols in results.items()
        for protocol, block in protocols.items()
        for metric, value in block.items()
    }
    flat["num-examples"] = len(local.users)
    return flat
