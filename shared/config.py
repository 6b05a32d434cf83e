"""Configuration dataclasses, one per concern, mirroring `[tool.flwr.app.config]`.

Each is built and validated once at the boundary (the CLI or a Flower app's `run_config`);
everything past that point can trust its fields.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, TypeVar

from shared.data.sources import check_dataset_name
from shared.errors import FedrecError

T = TypeVar("T")

PARTITIONINGS = ("user", "region", "occupation", "dirichlet", "iid")


def from_run_config(cls: type[T], run_config: Mapping[str, Any]) -> T:
    """Build `cls` from hyphenated run-config keys (`min-interactions` -> `min_interactions`)."""
    kwargs = {}
    for field in fields(cls):  # type: ignore[arg-type]
        key = field.name.replace("_", "-")
        if key in run_config:
            kwargs[field.name] = run_config[key]
    return cls(**kwargs)


@dataclass(frozen=True)
class DataConfig:
    """Which dataset, where it lives, and how raw ratings become implicit-feedback sequences."""

    dataset: str = "movielens-1m"
    data_path: str = ""
    cache_dir: str = ""
    # A public catalog directory (`fedrec catalog build`): the server reads it and nothing else;
    # a node reads its own interactions against it. "": derived from `dataset` (simulation).
    catalog_path: str = ""
    min_interactions: int = 5
    rating_threshold: float = 0.0
    text_columns: str = ""  # comma-separated; empty means every string column but item_id
    max_users: int = 0  # keep only the first N users (scale experiments); 0: all
    # Simulation: the share of users who authorise central use of their data (drawn with the
    # seed); users.csv's `consent` column, when present, decides instead (shared/data/consent.py).
    consent_fraction: float = 0.0

    def __post_init__(self) -> None:
        check_dataset_name(self.dataset)
        if int(self.min_interactions) < 3:
            raise FedrecError(
                f"min-interactions must be at least 3 (leave-one-out needs a train, a validation "
                f"and a test item), got {self.min_interactions}"
            )
        object.__setattr__(self, "min_interactions", int(self.min_interactions))
        if int(self.max_users) < 0:
            raise FedrecError(f"max-users must be >= 0, got {self.max_users}")
        object.__setattr__(self, "max_users", int(self.max_users))
        object.__setattr__(self, "rating_threshold", float(self.rating_threshold))
        if not 0 <= float(self.consent_fraction) <= 1:
            raise FedrecError(f"consent-fraction must be in [0, 1], got {self.consent_fraction}")
        object.__setattr__(self, "consent_fraction", float(self.consent_fraction))

    @property
    def cache_path(self) -> Path | None:
        return Path(self.cache_dir).expanduser() if self.cache_dir else None

    @property
    def text_column_list(self) -> list[str]:
        return [c.strip() for c in self.text_columns.split(",") if c.strip()]


@dataclass(frozen=True)
class PartitionConfig:
    """How users are grouped into federated clients."""

    partitioning: str = "region"
    num_partitions: int = 0  # 0: as many as the data gives (user, region, occupation)
    dirichlet_alpha: float = 0.5
    seed: int = 42

    def __post_init__(self) -> None:
        if self.partitioning not in PARTITIONINGS:
            raise FedrecError(
                f"unknown partitioning '{self.partitioning}' "
                f"(choose one of: {', '.join(PARTITIONINGS)})"
            )
        if int(self.num_partitions) < 0:
            raise FedrecError(f"num-partitions must be >= 0, got {self.num_partitions}")
        if self.partitioning in ("dirichlet", "iid") and int(self.num_partitions) < 1:
            raise FedrecError(f"partitioning '{self.partitioning}' needs num-partitions >= 1")
        if float(self.dirichlet_alpha) <= 0:
            raise FedrecError(f"dirichlet-alpha must be > 0, got {self.dirichlet_alpha}")
        object.__setattr__(self, "num_partitions", int(self.num_partitions))
        object.__setattr__(self, "dirichlet_alpha", float(self.dirichlet_alpha))
        object.__setattr__(self, "seed", int(self.seed))


@dataclass(frozen=True)
class ModelConfig:
    """Shape of the two-stage model. Saved in every checkpoint's config.json."""

    dim: int = 64
    num_layers: int = 2
    num_heads: int = 2
    max_len: int = 200
    dropout: float = 0.2
    use_text: bool = True
    # Off as the federation runs it: ID tables drown in DP noise (README, Privacy). `fedrec
    # train`, the non-private reference, turns it on unless --no-id-embedding.
    use_id_embedding: bool = False
    use_item_bias: bool = False  # a per-item scalar: the popularity prior (shared/models/recommender.py)
    # What trains: "all", or "head" (item tower, ranker, norms and biases; the rest frozen at
    # the `pretrained` checkpoint's values): fewer parameters, less DP noise, smaller updates.
    finetune: str = "all"
    retrieve_top_n: int = 100
    # Fine-tune the top N MiniLM layers inside the item tower (0: frozen, cached embeddings).
    # Costly: every item vector then runs N transformer layers; meant for GPUs or small catalogs.
    text_finetune_layers: int = 0

    def __post_init__(self) -> None:
        if not (self.use_text or self.use_id_embedding):
            raise FedrecError("the item tower needs text, ID embeddings or both")
        for name in ("dim", "num_layers", "num_heads", "max_len", "retrieve_top_n"):
            if int(getattr(self, name)) < 1:
                raise FedrecError(f"{name.replace('_', '-')} must be >= 1")
        if int(self.dim) % int(self.num_heads):
            raise FedrecError(f"dim {self.dim} is not divisible by num-heads {self.num_heads}")
        if not 0 <= int(self.text_finetune_layers) <= 6:
            raise FedrecError(f"text-finetune-layers must be 0..6, got {self.text_finetune_layers}")
        if self.text_finetune_layers and not self.use_text:
            raise FedrecError("text-finetune-layers needs the text tower (drop --no-text)")
        if self.finetune not in ("all", "head"):
            raise FedrecError(f"finetune must be all or head, got '{self.finetune}'")
        if not 0 <= float(self.dropout) < 1:
            raise FedrecError(f"dropout must be in [0, 1), got {self.dropout}")


OPTIMIZERS = ("adamw", "sgd")


@dataclass(frozen=True)
class TrainConfig:
    """How the model is fitted: the same knobs for centralized and local federated training."""

    epochs: int = 20
    batch_size: int = 32  # on CPU a smaller batch costs about the same per epoch and takes 4x the steps
    lr: float = 2e-3
    weight_decay: float = 0.01
    # adamw: the centralized optimizer. sgd: a local step is then the client's gradient (times
    # lr), so FedAdam/FedYogi average gradients, not the per-client signs of a fresh Adam's
    # first steps: one client per user needs this (README, Results).
    optimizer: str = "adamw"
    num_negatives: int = 64  # retrieval: sampled negatives per sequence, shared by its positions
    rank_positions: int = 4  # ranking: positions per sequence that train the ranker
    # Few hard negatives: early in training the retrieval top-k is mostly popular items, and
    # many of them teach the ranker to bury popular true positives (measured on ML-100k).
    rank_hard_negatives: int = 2  # ... each against this many retrieval hard negatives
    rank_random_negatives: int = 10  # ... and this many uniform ones
    patience: int = 3  # epochs without validation NDCG@10 gain before stopping
    seed: int = 42
    device: str = "auto"
    threads: int = 0  # torch threads; 0: torch's default, or 1 for a client of a large simulation

    def __post_init__(self) -> None:
        if int(self.threads) < 0:
            raise FedrecError(f"threads must be >= 0, got {self.threads}")
        for name in ("epochs", "batch_size", "num_negatives", "rank_positions"):
            if int(getattr(self, name)) < 1:
                raise FedrecError(f"{name.replace('_', '-')} must be >= 1, got {getattr(self, name)}")
        if float(self.lr) <= 0:
            raise FedrecError(f"lr must be > 0, got {self.lr}")
        if self.optimizer not in OPTIMIZERS:
            raise FedrecError(f"optimizer must be one of {', '.join(OPTIMIZERS)}, got '{self.optimizer}'")
        if self.device not in ("auto", "cpu", "cuda"):
            raise FedrecError(f"device must be auto, cpu or cuda, got '{self.device}'")

    def resolved_device(self) -> str:
        if self.device == "auto":
            import torch

            return "cuda" if torch.cuda.is_available() else "cpu"
        return self.device


ACCOUNTANTS = ("pld",)  # dp_accounting's PLD, replace-one adjacency (shared/privacy/accounting.py)


@dataclass(frozen=True)
class PrivacyConfig:
    """Local DP-SGD on every client (Opacus), and the budget each client may spend."""

    dp: bool = True
    target_epsilon: float = 8.0  # each client's budget, over all runs on the same private data
    noise_multiplier: float = 0.0  # sigma; 0: calibrated once so the planned rounds fit the budget
    max_grad_norm: float = 1.0  # per-example clipping norm C
    # Public and fixed: a delta derived from a node's data size would itself disclose that size.
    target_delta: float = 1e-6
    accountant: str = "pld"
    # DP-FedAvg across the federation (Flower's client-side fixed-clipping wrapper): each
    # client's whole update is clipped, the server adds noise to their average.
    central_dp: bool = False
    central_noise_multiplier: float = 1.0
    central_clipping_norm: float = 1.0
    # Central DP's N: the clients in the federation, from configuration (delta <= 1/N^1.1).
    # `fedrec simulate` sets it to the SuperNodes it starts; 0 in a deployment: the nodes
    # connected when the server starts, with a warning (a smaller N only lowers delta's cap).
    population: int = 0
    audit_messages: bool = False  # each node logs the shape of every reply it sends (client/audit.py)
    # Under DP, a node with fewer users sends no evaluation metrics: its mean would be too close
    # to one user's own outcome (a one-user client's metric is exactly that).
    min_eval_users: int = 20

    def __post_init__(self) -> None:
        if self.central_dp and float(self.central_noise_multiplier) <= 0:
            raise FedrecError(f"central-noise-multiplier must be > 0, got {self.central_noise_multiplier}")
        if float(self.central_clipping_norm) <= 0:
            raise FedrecError(f"central-clipping-norm must be > 0, got {self.central_clipping_norm}")
        if float(self.target_epsilon) <= 0:
            raise FedrecError(f"target-epsilon must be > 0, got {self.target_epsilon}")
        if float(self.noise_multiplier) < 0:
            raise FedrecError(f"noise-multiplier must be >= 0 (0: calibrate), got {self.noise_multiplier}")
        if float(self.max_grad_norm) <= 0:
            raise FedrecError(f"max-grad-norm must be > 0, got {self.max_grad_norm}")
        if not 0 < float(self.target_delta) <= 1e-3:
            raise FedrecError(f"target-delta must be in (0, 1e-3], got {self.target_delta}")
        if self.accountant not in ACCOUNTANTS:
            raise FedrecError(f"accountant must be one of {', '.join(ACCOUNTANTS)}, got '{self.accountant}'")
        for name in ("target_epsilon", "noise_multiplier", "max_grad_norm", "target_delta",
                     "central_noise_multiplier", "central_clipping_norm"):  # fmt: skip
            object.__setattr__(self, name, float(getattr(self, name)))
        object.__setattr__(self, "dp", bool(self.dp))
        object.__setattr__(self, "central_dp", bool(self.central_dp))
        if int(self.population) < 0:
            raise FedrecError(f"population must be >= 0, got {self.population}")
        object.__setattr__(self, "population", int(self.population))
        if int(self.min_eval_users) < 1:
            raise FedrecError(f"min-eval-users must be >= 1, got {self.min_eval_users}")
        object.__setattr__(self, "min_eval_users", int(self.min_eval_users))


STRATEGIES = ("fedavg", "fedprox", "fedadam", "fedyogi", "fedmedian", "fedtrimmedavg", "krum")


@dataclass(frozen=True)
class FederationConfig:
    """The server's side of a run: rounds, sampling, aggregation, outputs."""

    num_server_rounds: int = 5
    fraction_train: float = 1.0
    fraction_evaluate: float = 1.0  # per-round validation; the final test always asks every node
    min_train_nodes: int = 2
    local_epochs: int = 1
    # Optimizer steps per round instead (batches drawn through fresh shuffles of the node's
    # examples); 0: local-epochs full passes. Equal work per client whatever its data size.
    local_steps: int = 0
    strategy: str = "fedavg"
    proximal_mu: float = 0.01  # FedProx only
    server_lr: float = 0.01  # FedAdam / FedYogi server learning rate (eta)
    # FedAdam / FedYogi's adaptivity (tau, Adam's epsilon). Flower's 1e-3 damps every coordinate
    # whose mean update is smaller, which with `optimizer = "sgd"` clients is most of them.
    server_tau: float = 1e-3
    early_stopping_rounds: int = 0  # stop after this many rounds without validation gain; 0: off
    server_eval: bool = False  # simulation only: also evaluate on the server's copy of the data
    resume_from: str = ""  # a round checkpoint directory of an earlier run
    # A checkpoint (e.g. `fedrec train --consented-only`) whose weights start round 1.
    pretrained: str = ""
    round_timeout: float = 3600.0
    max_update_norm_ratio: float = 10.0  # refuse updates this far beyond the round's median norm; 0: off
    round_retries: int = 1  # re-sample a round whose valid updates fall short of min-train-nodes
    output_dir: str = "outputs"

    def __post_init__(self) -> None:
        if self.strategy not in STRATEGIES:
            raise FedrecError(
                f"unknown strategy '{self.strategy}' (choose one of: {', '.join(STRATEGIES)})"
            )
        if int(self.num_server_rounds) < 1:
            raise FedrecError(f"num-server-rounds must be >= 1, got {self.num_server_rounds}")
        for name in ("fraction_train", "fraction_evaluate"):
            if not 0 < float(getattr(self, name)) <= 1:
                raise FedrecError(f"{name.replace('_', '-')} must be in (0, 1], got {getattr(self, name)}")
        if int(self.min_train_nodes) < 1:
            raise FedrecError(f"min-train-nodes must be >= 1, got {self.min_train_nodes}")
        if float(self.max_update_norm_ratio) < 0 or int(self.round_retries) < 0:
            raise FedrecError("max-update-norm-ratio and round-retries must be >= 0")
        if int(self.local_epochs) < 1:
            raise FedrecError(f"local-epochs must be >= 1, got {self.local_epochs}")
        if int(self.local_steps) < 0:
            raise FedrecError(f"local-steps must be >= 0, got {self.local_steps}")
        if float(self.server_lr) <= 0 or float(self.server_tau) <= 0:
            raise FedrecError(f"server-lr and server-tau must be > 0, got {self.server_lr} and {self.server_tau}")

    def run_dir(self, run_id: int) -> Path:
        """Where this run writes: `output-dir/run-<id>/`, or the run a `resume-from` continues.
        Both apps compute it, so a simulated client keeps its privacy state beside the run."""
        if self.resume_from:
            return Path(self.resume_from).parent
        return Path(self.output_dir) / f"run-{run_id}"


@dataclass(frozen=True)
class FaultConfig:
    """Injected client faults, to rehearse failure handling (client/faults.py); disjoint shares
    of each round's clients."""

    fault_crash_fraction: float = 0.0
    fault_hang_fraction: float = 0.0
    fault_nan_fraction: float = 0.0
    fault_scale_fraction: float = 0.0

    def __post_init__(self) -> None:
        shares = [float(getattr(self, f.name)) for f in fields(self)]
        for f, share in zip(fields(self), shares):
            if not 0 <= share <= 1:
                raise FedrecError(f"{f.name.replace('_', '-')} must be in [0, 1], got {share}")
        if sum(shares) > 1:
            raise FedrecError(f"the fault-*-fraction keys add up to {sum(shares):g}; at most 1")


@dataclass(frozen=True)
class SecureAggregationConfig:
    """Flower's SecAgg+ (server/secure.py, client/secure.py): the server learns only the
    weighted mean of the round's updates. Clients send updates (trained - global), quantized to
    2**22 levels over [-secagg-clipping-range, +secagg-clipping-range] after scaling by
    weight / secagg-max-weight, so the precision of one client's update is about
    2 * range / 2**22 * max-weight / weight."""

    secure_aggregation: bool = False
    secagg_num_shares: float = 3  # an integer > 2 (neighbours per client), or a fraction of the round
    secagg_reconstruction_threshold: float = 2  # shares needed to unmask: integer, or fraction of shares
    secagg_clipping_range: float = 1.0
    secagg_max_weight: float = 1000.0  # the largest client weight (num-examples; 1 under central DP)

    def __post_init__(self) -> None:
        object.__setattr__(self, "secure_aggregation", bool(self.secure_aggregation))
        shares, threshold = self.secagg_num_shares, self.secagg_reconstruction_threshold
        if not _count_or_fraction(shares) or (float(shares) >= 1 and float(shares) <= 2):
            raise FedrecError(f"secagg-num-shares must be an integer > 2 or a fraction in (0, 1), got {shares}")
        if not _count_or_fraction(threshold) or float(threshold) == 1:
            raise FedrecError(f"secagg-reconstruction-threshold must be an integer >= 2 or a fraction in (0, 1), got {threshold}")
        if float(shares) > 2 and float(threshold) >= 2 and float(threshold) >= float(shares):
            raise FedrecError(f"secagg-reconstruction-threshold ({threshold}) must be below secagg-num-shares ({shares})")
        for name in ("secagg_clipping_range", "secagg_max_weight"):
            if float(getattr(self, name)) <= 0:
                raise FedrecError(f"{name.replace('_', '-')} must be > 0, got {getattr(self, name)}")
            object.__setattr__(self, name, float(getattr(self, name)))
        for name in ("secagg_num_shares", "secagg_reconstruction_threshold"):
            value = float(getattr(self, name))
            object.__setattr__(self, name, int(value) if value >= 1 else value)  # Flower reads int vs float


def _count_or_fraction(value: float) -> bool:
    """A positive whole number, or a fraction strictly between 0 and 1."""
    v = float(value)
    return 0 < v < 1 or (v >= 1 and v == int(v))


@dataclass(frozen=True)
class AuditConfig:
    """Canary users planted in a simulation's training data, for `fedrec audit`'s one-run
    epsilon lower bound (shared/privacy/canaries.py, shared/privacy/one_run.py)."""

    audit_canaries: int = 0  # m canaries, each trained on with probability 1/2; 0: none
    audit_seed: int = 0  # draws the canaries and their coins

    def __post_init__(self) -> None:
        if int(self.audit_canaries) < 0:
            raise FedrecError(f"audit-canaries must be >= 0, got {self.audit_canaries}")
        object.__setattr__(self, "audit_canaries", int(self.audit_canaries))
        object.__setattr__(self, "audit_seed", int(self.audit_seed))
