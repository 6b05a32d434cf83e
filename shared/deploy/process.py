"""Handing the process over to a Flower binary of this environment."""

from __future__ import annotations

import os
import sys
from pathlib import Path

BIN = Path(sys.executable).parent  # this environment's scripts (flower-superlink, flwr, ...)


def flower_env() -> dict[str, str]:
    """The environment with this venv's scripts first on PATH: Flower starts its SuperExec and
    app processes by name, also when the venv is not activated (make, CI, a service unit)."""
    return {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"}


def exec_command(cmd: list[str]) -> None:
    """Replace this process with `cmd`, so signals (Ctrl-C, a service manager's stop) reach it."""
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(cmd[0], cmd, flower_env())
