"""Flower ServerApp.

Today it runs the federated popularity baseline (see `client/app.py`): one FedAvg round whose
aggregate is the global item popularity, then a federated evaluation on every node's test items.
The server holds no user data: it starts from empty arrays and only ever sees aggregates.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
from flwr.app import Array, ArrayRecord, ConfigRecord, Context
from flwr.serverapp import Grid, ServerApp
from flwr.serverapp.strategy import FedAvg

from shared.atomic import write_json
from shared.data.dataset import STAGES

log = logging.getLogger(__name__)
app = ServerApp()


@app.main()
def main(grid: Grid, context: Context) -> None:
    cfg = context.run_config
    min_nodes = int(cfg.get("min-train-nodes", 2))
    strategy = FedAvg(
        fraction_train=1.0, fraction_evaluate=1.0, min_train_nodes=min_nodes,
        min_evaluate_nodes=min_nodes, min_available_nodes=min_nodes,
    )  # fmt: skip
    empty = ArrayRecord(array_dict={s: Array(np.zeros(0)) for s in STAGES})
    result = strategy.start(
        grid=grid, initial_arrays=empty, num_rounds=1,
        evaluate_config=ConfigRecord({"stage": "test"}),
    )  # fmt: skip
    metrics = {str(r): dict(m) for r, m in result.evaluate_metrics_clientapp.items()}
    out = Path(str(cfg.get("output-dir", "outputs"))) / f"run-{context.run_id}" / "metrics.json"
    write_json(out, {"baseline": "federated-popularity", "evaluate": metrics})
    log.info("federated popularity metrics written to %s", out)
