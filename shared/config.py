"""Configuration dataclasses, one per concern, mirroring `[tool.flwr.app.config]`.

Each is built and validated once at the boundary (the CLI or a Flower app's `run_config`);
everything past that point can trust its fields.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any, TypeVar

from shared.data.sources import check_dataset_name
from shared.errors import FedrecError

T = TypeVar("T")

PARTITIONINGS = ("user", "region", "occupation", "dirichlet", "iid")
DOC = "doc"  # a field's metadata key for what its run-config key means (docs/configuration.md)


def knob(default: Any, doc: str) -> Any:
    """A run-config key's field: its default and its meaning, written once, here. The Flower
    manifest (`[tool.flwr.app.config]`) is held equal to the defaults by tests/test_config.py,
    and docs/configuration.md is generated from both (`make docs`, shared/config_docs.py)."""
    return field(default=default, metadata={DOC: doc})


def from_run_config(cls: type[T], run_config: Mapping[str, Any]) -> T:
    """Build `cls` from hyphenated run-config keys (`min-interactions` -> `min_interactions`)."""
    kwargs = {}
    for f in fields(cls):  # type: ignore[arg-type]
        key = f.name.replace("_", "-")
        if key in run_config:
            kwargs[f.name] = run_config[key]
    return cls(**kwargs)


@dataclass(frozen=True)
class DataConfig:
    """Which dataset, where it lives, and how raw ratings become implicit-feedback sequences."""

    dataset: str = knob("movielens-1m", "`movielens-100k`, `movielens-1m` or `csv`")
    data_path: str = knob("", "a directory to read instead of the cache (required for `csv`)")
    cache_dir: str = knob("", "download and embedding cache; empty means `~/.cache/fedrec`")
    catalog_path: str = knob("", "a public catalog directory (`fedrec catalog build`): the server reads it and "
                             "nothing else, nodes index their own data on it (a node's own `catalog-path` node "
                             "config comes first); `\"\"`: derived from `dataset` (simulation)")
    min_interactions: int = knob(5, "users with fewer interactions are dropped (at least 3); a deployed node "
                                 "applies its own (`fedrec deploy supernode --min-interactions`)")
    rating_threshold: float = knob(0.0, "ratings below it are not interactions; a deployed node applies its own")
    text_columns: str = knob("", "item columns the item text is built from, comma-separated (e.g. "
                             "`title,author,publisher`); empty: every string column but `item_id`")
    max_users: int = knob(0, "keep only the first N users (scale experiments); `0`: all; a deployed node "
                               "keeps all of its users")
    # Consent is decided per user by users.csv's column where there is one (shared/data/consent.py).
    consent_fraction: float = knob(0.0, "simulation: the share of users who authorise central use of their "
                                   "data, drawn with `seed` (a `consent` column in `users.csv` decides instead)")

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

    partitioning: str = knob("region", "`user`, `region`, `occupation`, `dirichlet` or `iid`")
    num_partitions: int = knob(0, "K for `dirichlet`/`iid`; 0 means the data's own count for the others")
    dirichlet_alpha: float = knob(0.5, "concentration of the genre (or popularity-tier) skew for `dirichlet`")
    seed: int = knob(42, "partitioning and training seed")

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


RETRIEVAL_LOSSES = ("softmax", "bce")
# What `finetune` may name; shared/models/recommender.py says which parameters each trains.
FINETUNE_MODES = ("all", "head", "items", "bias")


@dataclass(frozen=True)
class ModelConfig:
    """Shape of the two-stage model. Saved in every checkpoint's config.json."""

    dim: int = knob(64, "model width")
    num_layers: int = knob(2, "user-tower transformer layers")
    num_heads: int = knob(2, "attention heads")
    max_len: int = knob(200, "history length read")
    dropout: float = knob(0.2, "dropout")
    use_text: bool = knob(True, "item tower uses the MiniLM text embedding")
    # Off as the federation runs it: ID tables drown in DP noise (docs/privacy.md). `fedrec
    # train`, the non-private reference, turns it on unless --no-id-embedding.
    use_id_embedding: bool = knob(False, "item tower adds a learned ID embedding to the text (off in the "
                                  "federation: see docs/privacy.md; `fedrec train` has it on)")
    use_item_bias: bool = knob(False, "a per-item scalar added to every score of the item: the popularity "
                               "prior a text-only item tower lacks (shared/models/recommender.py)")
    # Anything but "all": fewer parameters, less DP noise, smaller updates.
    finetune: str = knob("all", "what trains: `all`; `head` (item tower, ranker, LayerNorms and biases; the "
                         "user tower's other weights stay at the `pretrained` checkpoint's values, which every "
                         "node loads too); `items` (the head without the ranker's weights); or `bias` "
                         "(biases, LayerNorms and the per-item bias only)")
    retrieve_top_n: int = knob(100, "candidates the ranker re-scores")
    # Both losses are per sample, as Opacus needs (see shared/models/recommender.py).
    retrieval_loss: str = knob("softmax", "`softmax`: cross-entropy of the next item against the "
                               "sequence's sampled negatives (SASRec+'s lever); `bce`: each scored on its own")
    # Costly: every item vector then runs N transformer layers; meant for GPUs or small catalogs.
    text_finetune_layers: int = knob(0, "fine-tune MiniLM's top N layers inside the item tower (0: frozen, "
                                     "cached embeddings; slow on CPU)")
    # Public text only: no parameter, no privacy cost (shared/models/text_neighbours.py).
    text_neighbours: float = knob(0.0, "weight of a term scoring each item by how near its MiniLM text is to the "
                                  "user's last items (0: off; the grid's `regional-text` runs use 40, chosen "
                                  "on validation items: simulations/results/text_neighbours.md)")
    # A scoring weight, not a parameter: what it weighs was learned at 1 (recommender.py `bias`).
    item_bias_weight: float = knob(1.0, "weight of the per-item bias in every score once trained (training "
                                   "learns it at 1): above 1 leans on the popularity prior against towers "
                                   "trained under DP noise (the grid's `regional-text` runs use 1.5, chosen on "
                                   "validation items: simulations/results/text_neighbours.md)")

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
        if self.retrieval_loss not in RETRIEVAL_LOSSES:
            raise FedrecError(f"retrieval-loss must be softmax or bce, got '{self.retrieval_loss}'")
        if self.finetune not in FINETUNE_MODES:
            raise FedrecError(f"finetune must be one of {', '.join(FINETUNE_MODES)}, got '{self.finetune}'")
        if not 0 <= float(self.dropout) < 1:
            raise FedrecError(f"dropout must be in [0, 1), got {self.dropout}")
        if not (math.isfinite(float(self.text_neighbours)) and float(self.text_neighbours) >= 0):
            raise FedrecError(f"text-neighbours must be a finite number >= 0, got {self.text_neighbours}")
        if float(self.text_neighbours) and not self.use_text:
            raise FedrecError("text-neighbours needs the text tower (use-text=true)")
        if not (math.isfinite(float(self.item_bias_weight)) and float(self.item_bias_weight) > 0):
            raise FedrecError(f"item-bias-weight must be a finite number > 0, got {self.item_bias_weight}")
        if float(self.item_bias_weight) != 1.0 and not self.use_item_bias:
            raise FedrecError("item-bias-weight needs the per-item bias (use-item-bias=true)")


OPTIMIZERS = ("adamw", "sgd")


@dataclass(frozen=True)
class TrainConfig:
    """How the model is fitted: the same knobs for centralized and local federated training."""

    # Fields without a knob are not run-config keys: `fedrec train` sets them, and a federated
    # client takes its epochs from FederationConfig.local_epochs.
    epochs: int = 20
    # On CPU a smaller batch costs about the same per epoch and takes 4x the steps.
    batch_size: int = knob(32, "local batch size (sequences)")
    lr: float = knob(2e-3, "local learning rate")
    weight_decay: float = knob(0.01, "weight decay")
    # adamw: the centralized optimizer. sgd: a local step is then the client's gradient (times
    # lr), so FedAdam/FedYogi average gradients, not the per-client signs of a fresh Adam's
    # first steps: one client per user needs this (docs/results.md).
    optimizer: str = knob("adamw", "local optimizer, `adamw` or `sgd`; with `sgd` and one local epoch a "
                          "client's update is its gradient times `lr`, which FedAdam needs with one client "
                          "per user")
    num_negatives: int = knob(64, "retrieval negatives per sequence, shared by its positions")
    rank_positions: int = 4  # ranking: positions per sequence that train the ranker
    # Few hard negatives: early in training the retrieval top-k is mostly popular items, and
    # many of them teach the ranker to bury popular true positives (measured on ML-100k).
    rank_hard_negatives: int = 2  # ... each against this many retrieval hard negatives
    rank_random_negatives: int = 10  # ... and this many uniform ones
    patience: int = 3  # epochs without validation NDCG@10 gain before stopping
    seed: int = 42  # the run config's `seed` (documented with PartitionConfig, which it also seeds)
    device: str = knob("auto", "`auto` (CUDA if present), `cpu` or `cuda`")
    threads: int = knob(0, "torch threads per client; `0`: torch's default, except 1 in a simulation of more "
                        "than 64 SuperNodes (one user's few batches gain nothing from more, and Flower's "
                        "dispatch loop needs a core)")

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
GRAD_SAMPLE_MODES = ("hooks", "ghost")  # how DP-SGD clips each example (client/training.py's dp_sgd)


@dataclass(frozen=True)
class PrivacyConfig:
    """Local DP-SGD on every client (Opacus), and the budget each client may spend."""

    dp: bool = knob(True, "DP-SGD (Opacus) on every client; `false` trains without noise or clipping")
    target_epsilon: float = knob(8.0, "each client's privacy budget, over every run on the same private data")
    noise_multiplier: float = knob(0.0, "sigma; `0` calibrates it once so `num-server-rounds` rounds fit the "
                                   "budget")
    max_grad_norm: float = knob(1.0, "per-example gradient clipping norm")
    # The same mechanism (clip each example to C, add N(0, (sigma C)^2) to the sum) either way;
    # only its cost differs (simulations/dp_step.py measures both).
    dp_grad_sample_mode: str = knob("hooks", "how DP-SGD clips each example: `hooks` (Opacus's per-example "
                                    "gradients of every layer, kept until the step) or `ghost` (two backward "
                                    "passes and per-example gradient norms only; client/ghost.py). A deployed node "
                                    "clips with hooks whatever this says (client/policy.py)")
    # Public and fixed: a delta derived from a node's data size would itself disclose that size.
    target_delta: float = knob(1e-6, "delta: public and fixed, never derived from a node's data (at most 1e-3)")
    accountant: str = knob("pld", "Google `dp_accounting`'s PLD accountant, replace-one adjacency")
    # Each client's whole update is clipped, the server adds noise to their average.
    central_dp: bool = knob(False, "DP-FedAvg across the federation (Flower's client-side fixed-clipping "
                            "wrapper, RDP accountant); needs `strategy=fedavg`")
    central_noise_multiplier: float = knob(1.0, "central DP: noise std over the clipping norm, added to the sum "
                                           "of updates")
    central_clipping_norm: float = knob(1.0, "central DP: each client's whole update is clipped to this L2 norm")
    # From configuration, not from whoever connects; a smaller N only lowers delta's cap.
    population: int = knob(0, "central DP's N, the clients in the federation (delta is capped at 1/N^1.1); "
                           "`fedrec simulate` sets it to the SuperNodes it starts; `0` in a deployment: the "
                           "nodes connected at the start, with a warning")
    # One release of each silo's item counts, the server's popularity prior (server/popularity.py):
    # a text-only item tower starting from scratch knows nothing of which items are popular.
    popularity_epsilon: float = knob(0.0, "before round 1, each silo releases its users' item counts once under "
                                     "DP at this epsilon, out of its budget, and the server starts the item bias "
                                     "from their sum; `0`: off. Needs `dp`, `use-item-bias` and silos (not "
                                     "`partitioning=user`); a deployed node releases only as far as its own "
                                     "policy allows (`fedrec deploy supernode --max-popularity-epsilon`)")
    audit_messages: bool = knob(False, "each node appends the shape (never the values) of every reply it sends "
                                "to `messages-<node>.jsonl` in its state directory (client/message_audit.py)")
    # A one-user client's metric is exactly that user's own outcome.
    min_eval_users: int = knob(20, "under DP, a node with fewer users sends no evaluation metrics (a deployed node "
                                                       "keeps its own policy's floor when it is higher)")

    def __post_init__(self) -> None:
        if self.central_dp and float(self.central_noise_multiplier) <= 0:
            raise FedrecError(f"central-noise-multiplier must be > 0, got {self.central_noise_multiplier}")
        if float(self.central_clipping_norm) <= 0:
            raise FedrecError(f"central-clipping-norm must be > 0, got {self.central_clipping_norm}")
        if float(self.target_epsilon) <= 0:
            raise FedrecError(f"target-epsilon must be > 0, got {self.target_epsilon}")
        if not 0 <= float(self.popularity_epsilon) < float(self.target_epsilon):
            raise FedrecError(f"popularity-epsilon must be in [0, target-epsilon {self.target_epsilon}): it is spent "
                              f"out of the budget, got {self.popularity_epsilon}")
        if float(self.noise_multiplier) < 0:
            raise FedrecError(f"noise-multiplier must be >= 0 (0: calibrate), got {self.noise_multiplier}")
        if float(self.max_grad_norm) <= 0:
            raise FedrecError(f"max-grad-norm must be > 0, got {self.max_grad_norm}")
        if not 0 < float(self.target_delta) <= 1e-3:
            raise FedrecError(f"target-delta must be in (0, 1e-3], got {self.target_delta}")
        if self.dp_grad_sample_mode not in GRAD_SAMPLE_MODES:
            raise FedrecError(f"dp-grad-sample-mode must be one of {', '.join(GRAD_SAMPLE_MODES)}, "
                              f"got '{self.dp_grad_sample_mode}'")
        if self.accountant not in ACCOUNTANTS:
            raise FedrecError(f"accountant must be one of {', '.join(ACCOUNTANTS)}, got '{self.accountant}'")
        for name in ("target_epsilon", "noise_multiplier", "max_grad_norm", "target_delta",
                     "central_noise_multiplier", "central_clipping_norm", "popularity_epsilon"):  # fmt: skip
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

    num_server_rounds: int = knob(5, "federated rounds")
    fraction_train: float = knob(1.0, "fraction of nodes sampled for training each round")
    fraction_evaluate: float = knob(1.0, "fraction of nodes asked for validation metrics each round (the final "
                                    "test asks all)")
    min_train_nodes: int = knob(2, "at least this many nodes train (and must be available)")
    local_epochs: int = knob(1, "local epochs per round")
    # Equal work per client whatever its data size.
    local_steps: int = knob(0, "local optimizer steps per round instead of epochs (batches through fresh "
                            "shuffles of the node's data; with DP, the accountant counts these steps); `0`: "
                            "`local-epochs`")
    strategy: str = knob("fedavg", "`fedavg`, `fedprox`, `fedadam`, `fedyogi`, or the robust `fedmedian`, "
                         "`fedtrimmedavg` (20% trimmed each side), `krum` (assumes one malicious client)")
    proximal_mu: float = knob(0.01, "FedProx's proximal weight")
    server_lr: float = knob(0.01, "FedAdam / FedYogi server learning rate (eta)")
    # Flower's 1e-3 damps every coordinate whose mean update is smaller, which with
    # `optimizer = "sgd"` clients is most of them.
    server_tau: float = knob(1e-3, "FedAdam / FedYogi adaptivity (Adam's epsilon, Flower's default); updates "
                             "smaller than it are damped, so `sgd` clients want about `1e-8`")
    early_stopping_rounds: int = knob(0, "stop after this many rounds without validation NDCG@10 gain (0: off)")
    server_eval: bool = knob(False, "simulation only: also evaluate on the server's copy of the data")
    resume_from: str = knob("", "a `round-NNN` checkpoint directory of an earlier run to continue from")
    pretrained: str = knob("", "a checkpoint whose weights start round 1, e.g. `fedrec train --consented-only`'s")
    round_timeout: float = knob(3600.0, "seconds the server waits for a round's replies; a hung client costs "
                                "the round this, then it goes on without it")
    max_update_norm_ratio: float = knob(10.0, "refuse updates whose norm exceeds this many times the round's "
                                        "median update norm; `0`: off")
    round_retries: int = knob(1, "a round with fewer valid updates than `min-train-nodes` is re-sampled this "
                              "many times, then the run ends with the reason")
    output_dir: str = knob("outputs", "where runs write their results")

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

    fault_crash_fraction: float = knob(0.0, "share of each round's clients that crash (rehearsal)")
    fault_hang_fraction: float = knob(0.0, "share that hang past `round-timeout`")
    fault_nan_fraction: float = knob(0.0, "share that send NaN weights")
    fault_scale_fraction: float = knob(0.0, "share that send their update multiplied by 1,000")

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

    secure_aggregation: bool = knob(False, "SecAgg+: the server sees only the weighted mean of each round's "
                                    "updates; needs `fedavg`, `fedprox`, `fedadam` or `fedyogi`")
    secagg_num_shares: float = knob(3, "SecAgg+: neighbours each client shares its keys with (an integer > 2, "
                                    "or a fraction of the round's clients)")
    secagg_reconstruction_threshold: float = knob(2, "SecAgg+: shares needed to unmask a client (an integer, or "
                                                  "a fraction of the shares); fewer live neighbours fail the round")
    secagg_clipping_range: float = knob(1.0, "SecAgg+: each weighted update value is clipped to ± this before "
                                        "quantization")
    secagg_max_weight: float = knob(1000.0, "SecAgg+: the largest client weight (num-examples; 1 under "
                                    "`central-dp`); smaller is finer")

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

    audit_canaries: int = knob(0, "simulation only: M canary users for `fedrec audit`, each trained on with "
                               "probability 1/2 by silo k mod K; `0`: none")
    audit_seed: int = knob(0, "draws the canaries and their membership coins")

    def __post_init__(self) -> None:
        if int(self.audit_canaries) < 0:
            raise FedrecError(f"audit-canaries must be >= 0, got {self.audit_canaries}")
        object.__setattr__(self, "audit_canaries", int(self.audit_canaries))
        object.__setattr__(self, "audit_seed", int(self.audit_seed))


# The dataclasses a Flower run config is parsed into, in the order docs/configuration.md lists them.
RUN_CONFIGS = (DataConfig, PartitionConfig, FederationConfig, TrainConfig, ModelConfig, PrivacyConfig,
               AuditConfig, FaultConfig, SecureAggregationConfig)


@dataclass(frozen=True)
class RunConfig:
    """A whole Flower run config, parsed and validated at once: what a handler reads from it,
    it reads here, never with `run_config.get(key, default)`, whose default would be a second
    copy of the ones above, free to drift."""

    data: DataConfig
    partition: PartitionConfig
    federation: FederationConfig
    train: TrainConfig
    model: ModelConfig
    privacy: PrivacyConfig
    audit: AuditConfig
    faults: FaultConfig
    secure_aggregation: SecureAggregationConfig

    @classmethod
    def parse(cls, run_config: Mapping[str, Any]) -> RunConfig:
        return cls(data=from_run_config(DataConfig, run_config),
                   partition=from_run_config(PartitionConfig, run_config),
                   federation=from_run_config(FederationConfig, run_config),
                   train=from_run_config(TrainConfig, run_config),
                   model=from_run_config(ModelConfig, run_config),
                   privacy=from_run_config(PrivacyConfig, run_config),
                   audit=from_run_config(AuditConfig, run_config),
                   faults=from_run_config(FaultConfig, run_config),
                   secure_aggregation=from_run_config(SecureAggregationConfig, run_config))  # fmt: skip

    @property
    def local_train(self) -> TrainConfig:
        """A client's TrainConfig: its epochs per round are the federation's `local-epochs`."""
        return replace(self.train, epochs=self.federation.local_epochs)
