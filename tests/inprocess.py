"""A federation in one process: fedrec's ServerApp `main` and its ClientApp object, mods included,
joined by a grid that hands every message to the ClientApp as a SuperNode would.

What a simulation does, without a SuperLink, Ray or any process of its own, so the fast tests can
drive whole runs (resume, budgets, faults, central DP, SecAgg+) in seconds. As Flower does:
- every message crosses the grid serialized (protobuf), so neither side shares objects;
- each node keeps one Context across messages (SecAgg+ keeps its keys there), updated only when
  its ClientApp returns;
- an exception in the ClientApp becomes an error reply in the SuperNode's words;
- a node whose ClientApp raises `NoReply` never answers, as a hung one would not in time.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from uuid import uuid4

from flwr.app import Context, Error, Message, RecordDict
from flwr.clientapp import ClientApp
from flwr.common.constant import SUPERLINK_NODE_ID, ErrorCode
from flwr.common.serde import context_from_proto, context_to_proto, message_from_proto, message_to_proto
from flwr.serverapp import Grid
from flwr.supercore.run import Run
from flwr.supercore.task_identity import TaskIdentity

from shared.config import FederationConfig, from_run_config

FIRST_NODE_ID = 101  # node ids are arbitrary; partition p lives on node FIRST_NODE_ID + p


class NoReply(Exception):
    """Raised inside a ClientApp (a test patches it in) for a node that never answers."""


def _copy(msg: Message) -> Message:
    return message_from_proto(message_to_proto(msg))


class InProcessGrid(Grid):
    """Nodes `node_configs` (node id -> node config), each answered by `client_app` in this process
    when a message is pushed to it."""

    def __init__(self, client_app: ClientApp, run_id: int, run_config: Mapping[str, Any],
                 node_configs: Mapping[int, Mapping[str, Any]]) -> None:  # fmt: skip
        self.client_app, self._run = client_app, Run.create_empty(run_id)
        self.contexts = {node: Context(run_id=run_id, node_id=node, node_config=dict(cfg), state=RecordDict(),
                                       run_config=dict(run_config))  # fmt: skip
                         for node, cfg in node_configs.items()}  # fmt: skip
        self.replies: dict[str, Message] = {}
        self.delivered: list[Message] = []  # every message a node received, as it received it

    def set_run(self, run: Run) -> None:
        self._run = run

    @property
    def run(self) -> Run:
        return self._run

    def create_message(self, content: RecordDict, message_type: str, dst_node_id: int, group_id: str,
                       ttl: float | None = None) -> Message:  # fmt: skip
        return Message(content, dst_node_id, message_type, ttl=ttl, group_id=group_id)

    def get_node_ids(self) -> Iterable[int]:
        return list(self.contexts)

    def push_messages(self, messages: Iterable[Message]) -> Iterable[str]:
        ids = []
        for msg in messages:
            msg.metadata.__dict__["_message_id"] = str(uuid4())
            ids.append(msg.metadata.message_id)
            reply = self._deliver(_copy(msg))
            if reply is not None:
                reply.metadata.__dict__["_message_id"] = str(uuid4())
                self.replies[msg.metadata.message_id] = _copy(reply)
        return ids

    def _deliver(self, msg: Message) -> Message | None:
        node = msg.metadata.dst_node_id
        self.delivered.append(msg)
        # The node's state changes only when its ClientApp returns (Flower keeps the old one on error).
        context = context_from_proto(context_to_proto(self.contexts[node]))
        try:
            reply = self.client_app(msg, context)
        except NoReply:
            return None
        except Exception as ex:  # noqa: BLE001 -- what a SuperNode does with any ClientApp error
            return Message(Error(code=ErrorCode.CLIENT_APP_RAISED_EXCEPTION,
                                 reason=str(type(ex)) + ":<'" + str(ex) + "'>"), reply_to=msg)  # fmt: skip
        self.contexts[node] = context
        return reply

    def pull_messages(self, message_ids: Iterable[str]) -> Iterable[Message]:
        return [self.replies.pop(i) for i in list(message_ids) if i in self.replies]

    def send_and_receive(self, messages: Iterable[Message], *, timeout: float | None = None) -> Iterable[Message]:
        ids = list(self.push_messages(messages))
        replies = list(self.pull_messages(ids))
        if timeout is not None and len(replies) < len(ids):
            time.sleep(timeout)  # the unanswered ones are waited for, as on a SuperLink
        return replies


@contextmanager
def server_task(run_id: int) -> Iterator[None]:
    """What a ServerApp process sets before its code makes messages, restored afterwards."""
    saved = (TaskIdentity._task_id, TaskIdentity._run_id, TaskIdentity._node_id)
    TaskIdentity._task_id, TaskIdentity._run_id, TaskIdentity._node_id = 1, run_id, SUPERLINK_NODE_ID
    try:
        yield
    finally:
        TaskIdentity._task_id, TaskIdentity._run_id, TaskIdentity._node_id = saved


def run_config(overrides: Mapping[str, Any], nodes: int) -> dict[str, Any]:
    """The run config a `fedrec simulate` of `nodes` SuperNodes gives its apps: the app's defaults
    ([tool.flwr.app.config]) under `overrides`, values typed as `--run-config KEY=VALUE` types
    them, and central DP's population the simulated federation."""
    from cli.simulate import app_defaults, check_run_config, parse_overrides

    typed = parse_overrides([f"{k}={v}" for k, v in overrides.items()])
    config = {**app_defaults(), "population": nodes, **typed}
    check_run_config(config)
    return config


@dataclass
class FederatedRun:
    """What an in-process run left: the ServerApp's exit code (0, or 2 as `fedrec simulate`
    reports a failed run) and why it failed, its run directory (None if it made none), the grid
    it ran on (every message delivered is there) and the run config its apps were given."""

    code: int
    run_dir: Path | None
    grid: InProcessGrid
    error: str = ""
    config: dict[str, Any] = field(default_factory=dict)


def run_federation(overrides: Mapping[str, Any], nodes: int, *,
                   node_configs: Mapping[int, Mapping[str, Any]] | None = None) -> FederatedRun:  # fmt: skip
    """fedrec's ServerApp over `nodes` simulated SuperNodes (partition p on node FIRST_NODE_ID + p),
    every message answered by fedrec's ClientApp in this process."""
    from client.app import app as client_app
    from server.app import main
    from server.outcomes import RunFailed

    config = run_config(overrides, nodes)
    run_id = secrets.randbits(62)
    if node_configs is None:
        node_configs = {FIRST_NODE_ID + p: {"partition-id": p, "num-partitions": nodes} for p in range(nodes)}
    grid = InProcessGrid(client_app, run_id, config, node_configs)
    context = Context(run_id=run_id, node_id=0, node_config={}, state=RecordDict(), run_config=config)
    code, error = 0, ""
    with server_task(run_id):
        try:
            main(grid, context)
        except SystemExit as exit_:
            code, error = int(exit_.code or 0), "the ServerApp refused its run config (its log says why)"
        except RunFailed as failed:
            code, error = 2, str(failed)
    run_dir = from_run_config(FederationConfig, config).run_dir(run_id)
    return FederatedRun(code, run_dir if run_dir.exists() else None, grid, error, config)
