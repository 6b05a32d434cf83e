"""The client's half of secure aggregation: Flower's `secaggplus_mod` around fedrec's train handler.

SecAgg+ runs in four train messages per round (setup, share keys, collect masked vectors,
unmask); only the third trains. `secaggplus_mod` speaks Flower's legacy FitIns/FitRes records,
so this module translates at its edge:
- in:  'fitins.parameters' + 'fitins.config' -> fedrec's 'arrays' + 'config' for the handler;
- out: the handler's trained weights -> the update (trained - global) and its weight as a FitRes,
  which the mod quantizes and masks. The update, not the weights, is what gets masked: it is
  small, so a narrow clipping range keeps the quantization fine.
The reply keeps fedrec's 'metrics' and 'privacy' records (scalars the ledger needs); the mod
clears the arrays, so no individual update leaves the node in the clear.
"""

from __future__ import annotations

import numpy as np
from flwr.app import Array, ArrayRecord, ConfigRecord, Context, Message, RecordDict
from flwr.app.message_type import MessageType
from flwr.client.mod import secaggplus_mod
from flwr.common import Code, FitRes, Status, ndarrays_to_parameters, parameters_to_ndarrays
from flwr.common.secure_aggregation.secaggplus_constants import RECORD_KEY_CONFIGS
from flwr.compat.common import recorddict_compat as compat

from shared.errors import FedrecError
from shared.privacy.central import CLIPPING_NORM_KEY, UNIFORM_WEIGHT
from shared.wire import WEIGHTS


def secure_aggregation_mod(msg: Message, context: Context, call_next):  # type: ignore[no-untyped-def]
    """SecAgg+ for the train messages that carry its protocol record; everything else as is."""
    if msg.metadata.message_type != MessageType.TRAIN or RECORD_KEY_CONFIGS not in msg.content.config_records:
        return call_next(msg, context)
    return secaggplus_mod(msg, context, lambda m, c: _train_as_fitres(m, c, call_next))


def _train_as_fitres(msg: Message, context: Context, call_next) -> Message:  # type: ignore[no-untyped-def]
    fitins = compat.recorddict_to_fitins(msg.content, keep_input=True)
    (global_flat,) = parameters_to_ndarrays(fitins.parameters)
    config = dict(fitins.config)
    msg.content = RecordDict({"arrays": ArrayRecord({WEIGHTS: Array(global_flat)}), "config": ConfigRecord(config)})
    reply = call_next(msg, context)
    if reply.has_error():
        raise FedrecError(f"training failed: {reply.error.reason}")
    content = reply.content
    if "arrays" in content:
        update = content["arrays"][WEIGHTS].numpy() - global_flat
        if not np.isfinite(update).all():  # masked, a NaN would corrupt the sum undetectably
            raise FedrecError("the trained update is not finite; not sending it")
        metrics = content["metrics"]
        weight = int(metrics[UNIFORM_WEIGHT] if CLIPPING_NORM_KEY in config else metrics["num-examples"])
    else:  # declined (budget spent): a zero update of weight zero keeps the protocol going
        update, weight = np.zeros_like(global_flat), 0
    fitres = FitRes(Status(Code.OK, ""), ndarrays_to_parameters([update]), weight, {})
    out = compat.fitres_to_recorddict(fitres, keep_input=False)
    for name in ("metrics", "privacy"):
        if name in content:
            out[name] = content[name]
    return Message(out, reply_to=msg)
