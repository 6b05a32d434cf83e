"""Where a node keeps what must outlive a message: its privacy accountant and message audit."""

from __future__ import annotations

from pathlib import Path

from flwr.app import Context

from shared.config import FederationConfig, from_run_config


def state_dir(context: Context) -> Path:
    """The node's own `state-dir` when deployed; in simulation, beside the run's outputs."""
    if context.node_config.get("state-dir"):
        return Path(str(context.node_config["state-dir"])).expanduser()
    return from_run_config(FederationConfig, context.run_config).run_dir(context.run_id) / "node-state"
