"""This node's private data: the users of its partition, or an edge node's own files.

Answering the server's catalog query needs only this, and in a deployment every message is a
fresh process: so nothing here imports torch or the models (client/model.py does). Audit
canaries, a simulation-only tool, import them when a run plants some."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from shared.config import AuditConfig, DataConfig, FederationConfig, ModelConfig, PartitionConfig, from_run_config
from shared.data.dataset import Dataset, catalog_artifact, catalog_of, load_dataset, load_node_dataset
from shared.data.partition import Partition, partition_users
from shared.errors import FedrecError

if TYPE_CHECKING:
    from shared.privacy.canaries import Canaries


@dataclass(frozen=True)
class LocalData:
    dataset: Dataset
    users: np.ndarray  # indices of this node's users in `dataset`
    partition_id: int
    scheme: str  # the run's partitioning, or "node" for an edge node's own data-path
    # Audit canaries this node trains on (shared/privacy/canaries.py): (n, length) item indices,
    # extra training examples only, never evaluated.
    canaries: np.ndarray = field(default_factory=lambda: np.zeros((0, 0), dtype=np.int64))

    @property
    def client_id(self) -> str:
        """Names the node's privacy state: 'region-3', 'user-17', 'node-0'."""
        return f"{self.scheme}-{self.partition_id}"


NODE = "node"  # an edge node's own data: one silo of users, user-level privacy


@lru_cache(maxsize=2)
def _load(data: DataConfig, part: PartitionConfig) -> tuple[Dataset, Partition]:
    # One simulation process hosts many clients in turn; parsing ML-1M for each would cost
    # seconds per message, so the parsed dataset is kept per (data, partition) configuration.
    dataset = load_dataset(data)
    return dataset, partition_users(dataset, part)


@lru_cache(maxsize=2)
def _load_node(data: DataConfig, directory: str, catalog: str) -> Dataset:
    # A deployed node reads its own interaction and user files and the catalog, nothing else;
    # filtering and the leave-one-out split happen here, over its users. Without a catalog
    # directory (a simulation's convenience) the catalog is derived from the run's dataset.
    public = catalog_artifact(catalog) if catalog else catalog_of(load_dataset(data))
    return load_node_dataset(Path(directory), data, public)


def node_filters(data: DataConfig, node_config: Mapping[str, Any]) -> DataConfig:
    """`data` with a deployed node's own filters: its operator's min-interactions and
    rating-threshold (node config, set by `fedrec deploy supernode`), all of its users. Never the
    run config's: a server varying them, or max-users, across runs could difference two replies
    (user counts, metric means) down to one user."""
    defaults = DataConfig()
    return replace(data, max_users=0,
                   min_interactions=int(node_config.get("min-interactions", defaults.min_interactions)),
                   rating_threshold=float(node_config.get("rating-threshold", defaults.rating_threshold)))  # fmt: skip


def local_data(run_config: Mapping[str, Any], node_config: Mapping[str, Any]) -> LocalData:
    """The users this node holds: every user in its node config's `data-path` (an edge node's own
    data, on the federation's catalog: its node config's `catalog-path`, else the run's), or, in
    simulation, partition `partition-id` of the run's dataset."""
    if "partition-id" not in node_config:
        raise FedrecError("node config has no 'partition-id' (pass --node-config partition-id=N)")
    pid = int(node_config["partition-id"])
    data = from_run_config(DataConfig, run_config)
    if node_config.get("data-path"):
        directory = Path(str(node_config["data-path"])).expanduser()
        if not directory.is_dir():
            raise FedrecError(f"node config data-path '{directory}': no such directory")
        if from_run_config(AuditConfig, run_config).audit_canaries:
            raise FedrecError("audit-canaries is for simulations: an edge node trains on its own data only")
        data = node_filters(data, node_config)
        catalog = str(node_config.get("catalog-path") or data.catalog_path)
        dataset = _load_node(data, str(directory.resolve()), str(Path(catalog).expanduser().resolve()) if catalog else "")
        return LocalData(dataset=dataset, users=np.arange(dataset.num_users), partition_id=pid, scheme=NODE)
    part = from_run_config(PartitionConfig, run_config)
    dataset, partition = _load(data, part)
    expected = int(node_config.get("num-partitions", partition.num_partitions))
    if expected != partition.num_partitions:
        raise FedrecError(
            f"the federation has {expected} SuperNodes but partitioning '{part.partitioning}' "
            f"gives {partition.num_partitions} partitions; set num-supernodes to "
            f"{partition.num_partitions}"
        )
    audit = from_run_config(AuditConfig, run_config)
    canaries = None
    if audit.audit_canaries:
        from shared.privacy.canaries import check_partitioning

        check_partitioning(part.partitioning)
        canaries = _canaries(audit, dataset.num_items).for_partition(pid, partition.num_partitions)
    return LocalData(dataset=dataset, users=partition.users(pid), partition_id=pid, scheme=part.partitioning,
                     **({"canaries": canaries} if canaries is not None else {}))  # fmt: skip


@lru_cache(maxsize=1)
def _canaries(audit: AuditConfig, num_items: int) -> Canaries:
    from shared.privacy.canaries import make_canaries

    return make_canaries(audit.audit_canaries, num_items, audit.audit_seed)
