"""This node's local copy of the model, and the canary examples an audit run trains on."""

from __future__ import annotations

from collections.abc import Mapping
from functools import lru_cache
from pathlib import Path
from typing import Any

from client.data import LocalData
from shared.config import DataConfig, FederationConfig, ModelConfig, from_run_config
from shared.data.dataset import Dataset
from shared.data.sources import default_cache_dir
from shared.models.batches import Sequences, feature_names
from shared.models.checkpoint import load_pretrained
from shared.models.recommender import Recommender
from shared.models.training import build_model
from shared.privacy.canaries import canary_examples, joined


def with_canaries(data: Sequences, local: LocalData, max_len: int) -> Sequences:
    """This node's user-level training examples `data`, then its audit canaries' (if any)."""
    if not len(local.canaries):
        return data
    return joined(data, canary_examples(local.canaries, max_len, len(feature_names(local.dataset))))


def local_model(run_config: Mapping[str, Any], dataset: Dataset) -> Recommender:
    """The local copy of the architecture. Every message loads the global trainable weights into
    it, which overwrites all that training changes, so one instance per process serves all the
    clients that process simulates in turn (building it costs more than a one-user client's
    whole evaluation). Item text embeddings come from the public catalog, cached on disk."""
    return _model(from_run_config(DataConfig, run_config), from_run_config(ModelConfig, run_config),
                  dataset, from_run_config(FederationConfig, run_config).pretrained)  # fmt: skip


@lru_cache(maxsize=1)
def _model(data: DataConfig, model: ModelConfig, dataset: Dataset, pretrained: str) -> Recommender:
    cache = data.cache_path or default_cache_dir()
    built = build_model(dataset, model, Path(cache))
    if pretrained:  # frozen weights (finetune=head) never travel: each node starts from the file
        load_pretrained(pretrained, built)
    return built
