"""The trivial app: clients echo the arrays they get; the server times each round."""

import json
import sys
import time
from pathlib import Path

import numpy as np
from flwr.app import Array, ArrayRecord, ConfigRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp
from flwr.serverapp import Grid, ServerApp
from flwr.serverapp.strategy import FedAvg

client = ClientApp()
server = ServerApp()


@client.train()
def train(msg: Message, context: Context) -> Message:
    if float(context.run_config["switch-interval"]) > 0:  # as fedrec's ClientApp (shared/gil_switch.py)
        sys.setswitchinterval(float(context.run_config["switch-interval"]))
    content = RecordDict({"arrays": msg.content["arrays"], "metrics": MetricRecord({"num-examples": 1})})
    return Message(content, reply_to=msg)


@server.main()
def main(grid: Grid, context: Context) -> None:
    cfg = context.run_config
    if float(cfg["switch-interval"]) > 0:  # as fedrec's ServerApp (shared/gil_switch.py)
        sys.setswitchinterval(float(cfg["switch-interval"]))
    arrays = ArrayRecord({"w": Array(np.zeros(int(cfg["array-floats"]), dtype=np.float32))})
    strategy = FedAvg(fraction_train=float(cfg["fraction-train"]), min_train_nodes=1, min_available_nodes=1)
    rounds = []
    for r in range(1, int(cfg["num-server-rounds"]) + 1):
        t0 = time.perf_counter()
        replies = list(grid.send_and_receive(strategy.configure_train(r, arrays, ConfigRecord(), grid)))
        rounds.append({"round": r, "seconds": time.perf_counter() - t0, "updates": len(replies)})
    Path(str(cfg["result-file"])).write_text(json.dumps({"rounds": rounds}))
