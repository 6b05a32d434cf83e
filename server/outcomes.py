"""What the nodes said, in their own words, and the checks that end a run before it wastes a round.

- `node_reason`: why a node sent no update (its ClientApp's error, its policy's refusal, its spent
  budget), so that a run which could not train says why, node by node;
- `check_node_catalogs`: before round 1, every connected node's catalog fingerprint against the
  server's (a `query.catalog` message; the node answers with its fingerprint only), so a node on
  another catalog is found before anyone trains, not as an error in every round;
- `RunFailed`: raised by the ServerApp after it has written what it could, so that Flower marks
  the run failed (`flwr ls`: finished:failed) instead of completed.
"""

from __future__ import annotations

import logging
import random
import re
import time
from collections.abc import Sequence

from flwr.app import ConfigRecord, Message, RecordDict
from flwr.serverapp import Grid

from server.messaging import send_and_receive
from shared.data.dataset import CATALOG_KEY
from shared.errors import FedrecError

log = logging.getLogger("flwr.fedrec")
CATALOG_QUERY = "query.catalog"  # client/app.py answers it
CATALOG_REPLY = "catalog"  # the reply's record: {"fingerprint": ...}, nothing else
MAX_ASKED = 100  # a larger federation is checked on a sample: a mismatch is a setup-wide mistake
REASONS_SHOWN = 5
_FLOWER_ERROR = re.compile(r"^<class '(?:[\w.]+\.)?(\w+)'>:<'(.*)'>$", re.S)


class RunFailed(Exception):
    """The run ended without doing what it was for; Flower records it as failed."""


def _error_text(reason: str) -> str:
    """Flower wraps a ClientApp's exception as "<class 'x.FedrecError'>:<'message'>": keep the
    message (and the type, unless it is fedrec's own one-line error)."""
    match = _FLOWER_ERROR.match(reason.strip())
    if not match:
        return reason.strip()
    kind, text = match.groups()
    return text if kind == "FedrecError" else f"{kind}: {text}"


def node_reason(msg: Message) -> str | None:
    """Why this reply carries no update, in the node's words; None if it carries one."""
    if msg.has_error():
        return _error_text(msg.error.reason)
    if "refusal" in msg.content:
        refusal = msg.content["refusal"]
        return f"refused by its privacy policy: {refusal['key']}: {refusal['reason']}"
    if "privacy" in msg.content and "arrays" not in msg.content:
        return f"declined: {msg.content['privacy']['status']}"
    return None


def reasons_line(replies: Sequence[Message], rejected: Sequence[tuple[int, str]] = ()) -> str:
    """'node 12: ...; node 40: ...' over the replies that carried no update and the refused
    updates, at most REASONS_SHOWN of them, the rest counted."""
    said = {m.metadata.src_node_id: r for m in replies if (r := node_reason(m))}
    for node, why in rejected:  # a node's own error is also a refused update: said once
        said.setdefault(node, f"update refused: {why}")
    reasons = [f"node {node}: {why}" for node, why in said.items()]
    if not reasons:
        return ""
    more = len(reasons) - REASONS_SHOWN
    return "; ".join(reasons[:REASONS_SHOWN]) + (f"; and {more} more" if more > 0 else "")


def judge_catalogs(fingerprint: str, asked: int, replies: Sequence[Message]) -> tuple[int, list[str]]:
    """How many of the `asked` nodes hold the server's catalog, and what the others said."""
    matching, problems = 0, []
    for msg in replies:
        node = msg.metadata.src_node_id
        if msg.has_error():
            problems.append(f"node {node}: {_error_text(msg.error.reason)}")
        elif str(msg.content[CATALOG_REPLY]["fingerprint"]) == fingerprint:
            matching += 1
        else:
            problems.append(f"node {node}: its catalog ({msg.content[CATALOG_REPLY]['fingerprint']}) differs "
                            f"from the server's ({fingerprint})")  # fmt: skip
    if asked > len(replies):
        problems.append(f"{asked - len(replies)} node(s) did not answer")
    return matching, problems


def check_node_catalogs(grid: Grid, fingerprint: str, min_nodes: int, timeout: float, seed: int = 0) -> None:
    """Before round 1: wait (up to `timeout`) until `min_nodes` nodes are connected, ask them for
    their catalog's fingerprint, and refuse the run when fewer than `min_nodes` hold the server's
    catalog; a few that do not are named in a warning (they will refuse every round)."""
    deadline = time.monotonic() + timeout
    nodes = list(grid.get_node_ids())
    while len(nodes) < min_nodes and time.monotonic() < deadline:
        time.sleep(1.0)
        nodes = list(grid.get_node_ids())
    if len(nodes) > MAX_ASKED:
        nodes = random.Random(seed).sample(nodes, MAX_ASKED)
    content = lambda: RecordDict({"config": ConfigRecord({CATALOG_KEY: fingerprint})})  # noqa: E731
    messages = [Message(content(), dst_node_id=n, message_type=CATALOG_QUERY) for n in nodes]
    replies = send_and_receive(grid, messages, max(deadline - time.monotonic(), 60.0))
    matching, problems = judge_catalogs(fingerprint, len(nodes), replies)
    needed = min(min_nodes, len(nodes)) if len(nodes) == MAX_ASKED else min_nodes
    if matching < needed:
        shown = "; ".join(problems[:REASONS_SHOWN]) + (f"; and {len(problems) - REASONS_SHOWN} more"
                                                       if len(problems) > REASONS_SHOWN else "")  # fmt: skip
        raise FedrecError(f"before round 1: {matching} of {len(nodes)} connected nodes hold the server's catalog "
                          f"{fingerprint} (min-train-nodes {min_nodes}): {shown or 'none answered'}")  # fmt: skip
    for problem in problems:
        log.warning("catalog check: %s", problem)
    log.info("catalog check: %d of %d nodes hold catalog %s", matching, len(nodes), fingerprint)
