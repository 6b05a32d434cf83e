"""Checkpoint directories: config.json + model.safetensors (+ metrics.json), written atomically."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
from safetensors.numpy import save_file

from shared.atomic import atomic_path, write_json
from shared.data.dataset import Dataset
from shared.errors import FedrecError
from shared.models.recommender import Recommender


def save_checkpoint(model: Recommender, directory: Path, metrics: dict[str, Any] | None = None,
                    tensors: Mapping[str, dict[str, np.ndarray]] | None = None) -> None:  # fmt: skip
    """Everything is staged in a sibling temp dir and renamed into place, so a crash mid-save
    never leaves a checkpoint that loads with half its weights. `tensors`: more safetensors
    files to keep with the model ({file name: arrays}), such as a server optimizer's state."""
    with atomic_path(Path(directory)) as staged:
        model.save_pretrained(staged)
        if model.transitions is not None:
            model.transitions.save(staged)
        if metrics is not None:
            write_json(staged / "metrics.json", metrics)
        for name, arrays in (tensors or {}).items():
            save_file(arrays, str(staged / name))


def load_checkpoint(directory: str | Path) -> Recommender:
    directory = Path(directory)
    if not directory.exists():
        raise FedrecError(f"--checkpoint {directory}: no such directory")
    return Recommender.from_pretrained(directory)


def check_catalog(model: Recommender, dataset: Dataset) -> None:
    """The checkpoint's item indices mean something only for the catalog it was trained on."""
    catalog = model.config["catalog"]
    ids = [str(i) for i in dataset.item_ids[1:]]
    if catalog != ids:
        raise FedrecError(
            f"dataset '{dataset.name}' ({len(ids)} items) does not match the checkpoint's item "
            f"catalog ({len(catalog)} items, trained on '{model.config['dataset']}')"
        )


ARCHITECTURE = ("dim", "num_layers", "num_heads", "max_len", "use_text", "use_id_embedding", "use_item_bias",
                "text_finetune_layers")  # fmt: skip


def load_pretrained(directory: str | Path, model: Recommender) -> None:
    """Start `model` from a checkpoint's weights (a federation's `pretrained`): same catalog, same
    architecture, or a one-line refusal naming what differs."""
    saved = load_checkpoint(directory)
    if saved.config["catalog"] != model.config["catalog"]:
        raise FedrecError(f"pretrained {directory}: its item catalog differs from this run's dataset")
    mine, theirs = model.config["model"], saved.config["model"]
    differ = [k for k in ARCHITECTURE if mine.get(k) != theirs.get(k, False if k == "use_item_bias" else None)]
    if differ:
        k = differ[0]
        raise FedrecError(f"pretrained {directory}: its {k.replace('_', '-')} is {theirs.get(k)}, "
                          f"the run's is {mine.get(k)}")  # fmt: skip
    model.load_state_dict(saved.state_dict())
    model.transitions = saved.transitions  # not weights: counts the server keeps beside them
