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
    min_interactions: int = 5
    rating_threshold: float = 0.0
    text_columns: str = ""  # comma-separated; empty means title, year, genres where present

    def __post_init__(self) -> None:
        check_dataset_name(self.dataset)
        if int(self.min_interactions) < 3:
            raise FedrecError(
                f"min-interactions must be at least 3 (leave-one-out needs a train, a validation "
                f"and a test item), got {self.min_interactions}"
            )
        object.__setattr__(self, "min_interactions", int(self.min_interactions))
        object.__setattr__(self, "rating_threshold", float(self.rating_threshold))

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
