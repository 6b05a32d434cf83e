"""Flower ClientApp: the mods every message passes through, then the handlers (client/handlers.py).

In a deployment the SuperNode starts a ClientApp process for every message, and torch,
transformers and Opacus take seconds to import on a small node. Only the messages that train or
evaluate need them, so the handlers are imported when one arrives: SecAgg+'s key-exchange and
unmasking messages (client/secure.py) are answered without them.

The handlers run inside two function mods: a short GIL switch interval (shared/gil_switch.py;
in a simulation the actor's training step otherwise waits on the actor's own background
threads) and, for training, the faults a run config may rehearse (client/faults.py).
"""

from __future__ import annotations

from flwr.app import Context, Message
from flwr.clientapp import ClientApp

from client.faults import fault_mod
from client.message_audit import message_audit_mod
from client.secure import secure_aggregation_mod
from client.state import state_dir
from shared.gil_switch import short_switch_interval_mod

# The audit mod is outermost, so it logs exactly what leaves the node, SecAgg+'s records included.
app = ClientApp(mods=[message_audit_mod(state_dir), secure_aggregation_mod])


@app.train(mods=[short_switch_interval_mod, fault_mod])
def train(msg: Message, context: Context) -> Message:
    from client import handlers

    return handlers.train(msg, context)


@app.evaluate(mods=[short_switch_interval_mod])
def evaluate(msg: Message, context: Context) -> Message:
    from client import handlers

    return handlers.evaluate(msg, context)


@app.query("catalog")
def catalog(msg: Message, context: Context) -> Message:
    """Before round 1 the server asks which catalog this node holds (server/outcomes.py): the
    public catalog's fingerprint, nothing about the node's users. Reading the node's data to
    answer also reports a node whose data does not read, before anyone trains."""
    from flwr.app import ConfigRecord, RecordDict

    from client.data import local_data
    from shared.data.dataset import catalog_fingerprint

    local = local_data(context.run_config, context.node_config)
    return Message(RecordDict({"catalog": ConfigRecord({"fingerprint": catalog_fingerprint(local.dataset)})}),
                   reply_to=msg)  # fmt: skip


@app.query("popularity")
def popularity(msg: Message, context: Context) -> Message:
    """Before round 1, when the run asks for a popularity prior: this silo's item counts under
    user-level DP, spent from its own budget (client/popularity.py)."""
    from client.popularity import release

    return release(msg, context)
