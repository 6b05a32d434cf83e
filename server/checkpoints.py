"""Per-round checkpoints of the global model, in the models' checkpoint format, plus the
server's loop state so an interrupted run resumes at the right round."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from shared.errors import FedrecError
from shared.models.checkpoint import load_checkpoint, save_checkpoint
from shared.models.params import load_trainable, trainable_state
from shared.models.recommender import Recommender

STATE_FILE = "server_state.json"


@dataclass
class ServerState:
    round: int = 0
    best_round: int = 0
    best_ndcg: float = -1.0
    stale_rounds: int = 0
    history: list[dict[str, Any]] = field(default_factory=list)


def round_dir(run_dir: Path, server_round: int) -> Path:
    return run_dir / f"round-{server_round:03d}"


def save_round(run_dir: Path, model: Recommender, state: ServerState) -> Path:
    """Written atomically (checkpoint directory renamed into place) so a crash mid-save leaves the
    previous round as the latest complete one."""
    directory = round_dir(run_dir, state.round)
    save_checkpoint(model, directory, {STATE_FILE: asdict(state)})
    return directory


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
