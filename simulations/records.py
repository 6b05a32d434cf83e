"""Reading the benchmark records in simulations/results/: shared by the results page (page.py)
and the numbers the docs quote (doc_numbers.py), so both read a record the same way."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from shared.errors import FedrecError

RESULTS = Path(__file__).parent / "results"


def load(name: str) -> dict[str, Any] | None:
    """The record `name`.json, or None when it has not been run: the page leaves its section out."""
    path = RESULTS / f"{name}.json"
    return json.loads(path.read_text(encoding="utf-8")) if path.exists() else None


def require(name: str) -> dict[str, Any]:
    """The record `name`.json, which a doc quotes: a missing one is an error, not a blank."""
    if (record := load(name)) is None:
        raise FedrecError(f"simulations/results/{name}.json is missing, and the docs quote it")
    return record


def run_setting(command: str, key: str) -> str:
    """A run-config value from a recorded `fedrec simulate --run-config k=v ...` command."""
    found = re.search(rf"(?:^|\s){re.escape(key)}=(\S+)", command)
    return found.group(1) if found else "?"


def prior_share_of(row: dict[str, Any]) -> float | None:
    """The share of its epsilon a grid row's silos gave the popularity prior, read from its
    command; None without a prior."""
    released = run_setting(row.get("command", ""), "popularity-epsilon")
    return float(released) / float(row["epsilon"]) if released != "?" and float(released) > 0 else None


def protocol(command: str) -> str:
    """'10 x 10' or '200 x 1, fedadam (server lr 0.005, tau 1e-8), SGD clients': rounds x local
    epochs, the server's optimizer when it is not FedAvg (commands recorded before the option name
    none), and the clients' when it is not AdamW."""
    rounds, local = run_setting(command, "num-server-rounds"), run_setting(command, "local-epochs")
    strategy, tau = run_setting(command, "strategy"), run_setting(command, "server-tau")
    server = "" if strategy in ("?", "fedavg") else (
        f", {strategy} (server lr {run_setting(command, 'server-lr')}" + ("" if tau == "?" else f", tau {tau}") + ")")
    clients = ", SGD clients" if run_setting(command, "optimizer") == "sgd" else ""
    return f"{rounds} x {local}{server}{clients}"
