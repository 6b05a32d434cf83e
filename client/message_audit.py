"""What leaves a node, written down on the node (`audit-messages=true`).

A Flower mod sees every reply the ClientApp sends and appends its shape, never its values, to
`messages-<node>.jsonl` in the node's state directory: record names and types, array keys with
dtypes and shapes, metric and config keys with value types. `violations` checks such a line
against what fedrec is meant to send: the weights vector, whitelisted scalar metrics, the
privacy accountant's record and the popularity prior's noisy counts. A privacy officer can audit a node from that file alone.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from flwr.app import ArrayRecord, ConfigRecord, Context, Message, MetricRecord

from client.policy import node_policy
from shared.config import PrivacyConfig, from_run_config
from shared.wire import COUNTS, WEIGHTS

ALLOWED_RECORDS = {"arrays": "ArrayRecord", "metrics": "MetricRecord", "privacy": "ConfigRecord",
                   "refusal": "ConfigRecord", "catalog": "ConfigRecord",
                   COUNTS: "ArrayRecord"}  # fmt: skip
# SecAgg+ (client/secure.py): public keys, encrypted key shares, the masked update and unmasking
# shares, plus the legacy FitRes records its mod reads, emptied of arrays before they leave.
SECAGG_RECORDS = {"secaggplus_configs": ("ConfigRecord", {"pk1", "pk2", "dsts", "ctxts", "masked_params", "nids", "shares"}),
                  "fitres.parameters": ("ArrayRecord", set()), "fitres.metrics": ("ConfigRecord", set()),
                  "fitres.num_examples": ("MetricRecord", {"num_examples"}), "fitres.status": ("ConfigRecord", {"code", "message"})}  # fmt: skip
TRAIN_METRICS = {"num-examples", "train-seconds", "train-loss", "train-retrieval", "train-ranking", "client-weight"}
# Under DP only what is public under replace-one adjacency: the example count, and the constant
# weight central DP asks for. A loss or a time computed from the data would leave unaccounted.
DP_TRAIN_METRICS = {"num-examples", "client-weight"}
REFUSAL_KEYS = {"key", "reason", "partition-id"}
CATALOG_KEYS = {"fingerprint"}  # the answer to the server's catalog check: a hash of public data
# The metric names shared.eval.metrics.summarize writes at k = 10 (and 100 for retrieval).
EVAL_METRIC_PARTS = ({"retrieval", "ranking"}, {"full", "sampled"},
                     {"hr@10", "ndcg@10", "mrr", "hr@100", "recall@100", "ndcg@100", "precision@10",
                      "recall@10", "f1@10", "precision@100", "f1@100"})  # fmt: skip
PRIVACY_KEYS = {"client-id", "partition-id", "unit", "status", "noise-multiplier", "sample-rate", "steps",
                "max-grad-norm", "epsilon", "delta", "budget", "accountant", "history"}  # fmt: skip


def describe(msg: Message, dp: bool = False) -> dict:
    """A reply's structure: no values, only names, types, dtypes and shapes; and whether the run
    asked for DP, which narrows what may be sent. An error carries no records but a text that
    leaves the node: its kind and length are written down (the text stays in the node's log)."""
    if msg.has_error():  # e.g. SecAgg+'s mod reporting a failed stage
        return {"message_type": msg.metadata.message_type, "dp": dp, "records": {},
                "error": {"code": int(msg.error.code), "reason_chars": len(msg.error.reason or "")}}  # fmt: skip
    records = {}
    for name, record in msg.content.items():
        if isinstance(record, ArrayRecord):
            records[name] = {"type": "ArrayRecord", "arrays": {k: [str(a.dtype), list(a.shape)] for k, a in record.items()}}
        elif isinstance(record, (MetricRecord, ConfigRecord)):
            records[name] = {"type": type(record).__name__, "keys": {k: type(v).__name__ for k, v in record.items()}}
        else:
            records[name] = {"type": type(record).__name__}
    return {"message_type": msg.metadata.message_type, "dp": dp, "records": records}


def _metric_allowed(key: str, dp: bool) -> bool:
    if key in (DP_TRAIN_METRICS if dp else TRAIN_METRICS):
        return True
    parts = key.split("-", 2)
    return len(parts) == 3 and all(p in allowed for p, allowed in zip(parts, EVAL_METRIC_PARTS))


def violations(line: dict, num_weights: int) -> list[str]:
    """What in a described reply is not on fedrec's list of things a node may send."""
    found = []
    for name, rec in line["records"].items():
        if name in SECAGG_RECORDS:
            kind, keys = SECAGG_RECORDS[name]
            listed = set(rec.get("arrays", rec.get("keys", {})))
            if rec["type"] != kind or not listed <= keys:
                found.append(f"record '{name}' ({rec['type']}: {sorted(listed - keys)})")
        elif ALLOWED_RECORDS.get(name) != rec["type"]:
            found.append(f"record '{name}' ({rec['type']})")
        elif name == "arrays" and rec["arrays"] != {WEIGHTS: ["float32", [num_weights]]}:
            found.append(f"arrays {rec['arrays']}")
        elif name == COUNTS and (set(rec["arrays"]) != {COUNTS} or rec["arrays"][COUNTS][0] != "float32"
                                 or len(rec["arrays"][COUNTS][1]) != 1):  # fmt: skip
            # The popularity prior's noisy item counts (client/popularity.py): one float32 vector.
            found.append(f"counts {rec['arrays']}")
        elif name == "metrics":
            dp = bool(line.get("dp", False))
            found += [f"metric '{k}'" for k, t in rec["keys"].items() if not _metric_allowed(k, dp) or t not in ("int", "float")]
        elif name == "privacy":
            found += [f"privacy key '{k}'" for k in rec["keys"] if k not in PRIVACY_KEYS]
        elif name == "refusal":
            found += [f"refusal key '{k}'" for k in rec["keys"] if k not in REFUSAL_KEYS]
        elif name == "catalog":
            found += [f"catalog key '{k}'" for k in rec["keys"] if k not in CATALOG_KEYS]
    return found


def audit_path(state_dir: Path, node_id: int) -> Path:
    return state_dir / f"messages-{node_id}.jsonl"


def _append(directory: Path, node_id: int, line: dict) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    with open(audit_path(directory, node_id), "a", encoding="utf-8") as f:
        f.write(json.dumps(line) + "\n")


def message_audit_mod(state_dir_of: Callable[[Context], Path]):  # type: ignore[no-untyped-def]
    """A ClientApp mod appending every reply's description, error replies included, when the run
    or the node's own policy asks for it (a server cannot switch a node's audit off)."""

    def mod(msg: Message, context: Context, call_next):  # type: ignore[no-untyped-def]
        privacy = from_run_config(PrivacyConfig, context.run_config)
        audit = privacy.audit_messages or node_policy(context.node_config, privacy).audit_messages
        try:
            reply = call_next(msg, context)
        except Exception as err:
            # Flower turns the exception into an error reply whose text leaves the node.
            if audit:
                _append(state_dir_of(context), context.node_id, {
                    "message_type": msg.metadata.message_type, "dp": privacy.dp, "records": {},
                    "error": {"type": type(err).__name__, "reason_chars": len(str(err))}})  # fmt: skip
            raise
        if audit:
            _append(state_dir_of(context), context.node_id, describe(reply, privacy.dp))
        return reply

    return mod
