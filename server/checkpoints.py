"""Per-round checkpoints of the global model, in the models' checkpoint format, plus the
server's loop state and its optimizer's moments (FedAdam, FedYogi), so an interrupted run
resumes at the right round and takes the same steps an uninterrupted one would."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from safetensors import SafetensorError
from safetensors.numpy import load_file

from shared.errors import FedrecError
from shared.models.checkpoint import load_checkpoint, save_checkpoint
from shared.models.params import load_trainable, trainable_state
from shared.models.recommender import Recommender

STATE_FILE = "server_state.json"
OPTIMIZER_FILE = "server_optimizer.safetensors"


@dataclass
class ServerState:
    round: int = 0
    best_round: int = 0
    best_ndcg: float = -1.0
    stale_rounds: int = 0
    history: list[dict[str, Any]] = field(default_factory=list)


def round_dir(run_dir: Path, server_round: int) -> Path:
    return run_dir / f"round-{server_round:03d}"


def save_round(run_dir: Path, model: Recommender, state: ServerState,
               optimizer: dict[str, np.ndarray] | None = None) -> Path:  # fmt: skip
    """Written atomically (checkpoint directory renamed into place) so a crash mid-save leaves the
    previous round as the latest complete one. `optimizer`: the server optimizer's state
    (server.strategy.optimizer_state), if it keeps one."""
    directory = round_dir(run_dir, state.round)
    save_checkpoint(model, directory, {STATE_FILE: asdict(state)}, {OPTIMIZER_FILE: optimizer} if optimizer else None)
    return directory


def load_optimizer(directory: str | Path) -> dict[str, np.ndarray]:
    """The server optimizer's state saved with a round; empty when it kept none (FedAvg)."""
    path = Path(directory) / OPTIMIZER_FILE
    if not path.exists():
        return {}
    try:
        return load_file(str(path))
    except (OSError, SafetensorError):
        raise FedrecError(f"resume-from {directory}: corrupt {OPTIMIZER_FILE}") from None


def load_round(directory: str | Path, model: Recommender) -> ServerState:
    """Load a round checkpoint's global weights into `model` and return the loop state."""
    directory = Path(directory)
    saved = load_checkpoint(directory)
    if saved.config["catalog"] != model.config["catalog"]:
        raise FedrecError(f"resume-from {directory}: its item catalog differs from this run's")
    load_trainable(model, trainable_state(saved))
    try:
        state = json.loads((directory / "metrics.json").read_text())[STATE_FILE]
        return ServerState(**state)
    except (OSError, ValueError, KeyError, TypeError):
        raise FedrecError(f"resume-from {directory}: missing or corrupt {STATE_FILE}") from None
