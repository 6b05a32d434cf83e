"""Sending a round's messages: a sliding window over the SuperLink, polled often.

Flower's `Grid.send_and_receive` pushes every message, then polls for replies every 3 seconds.
Both hurt a simulation with thousands of one-user clients:
- every queued message holds its own copy of the global arrays in the SuperLink, and the
  simulation engine scans all stored messages for every node on each dispatch pass, so sending
  a 6,040-node evaluation at once queues ~10 GB and slows dispatch to a crawl;
- a one-user client answers in tens of milliseconds, so a 3-second poll leaves the engine idle
  most of the round.
Here at most `window` messages are in flight, a new one goes out as each reply comes back, and
replies are polled every `poll` seconds.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable

from flwr.app import Message
from flwr.serverapp import Grid

log = logging.getLogger("flwr.fedrec")
WINDOW = 48
POLL_SECONDS = 0.05
PROGRESS_SECONDS = 30.0


def send_and_receive(
    grid: Grid, messages: Iterable[Message], timeout: float | None, *,
    window: int = WINDOW, poll: float = POLL_SECONDS,
) -> list[Message]:  # fmt: skip
    """Every message sent, at most `window` in flight; the replies that arrived within `timeout`
    seconds of the last send (a client that hangs costs the round `timeout`, not forever)."""
    pending = list(messages)
    total, replies, in_flight = len(pending), [], set[str]()
    deadline = None if timeout is None else time.monotonic() + timeout
    next_progress = time.monotonic() + PROGRESS_SECONDS
    while pending or in_flight:
        if pending and len(in_flight) < window:
            batch, pending = pending[: window - len(in_flight)], pending[window - len(in_flight) :]
            in_flight.update(i for i in grid.push_messages(batch) if i)
            if timeout is not None:
                deadline = time.monotonic() + timeout
        got = list(grid.pull_messages(list(in_flight))) if in_flight else []
        in_flight.difference_update(m.metadata.reply_to_message_id for m in got)
        replies.extend(got)
        if deadline is not None and time.monotonic() > deadline:
            log.warning("%d of %d clients did not reply within %.0f s", len(in_flight) + len(pending), total, timeout)
            break
        if time.monotonic() > next_progress:
            log.info("  %d/%d replies", len(replies), total)
            next_progress = time.monotonic() + PROGRESS_SECONDS
        if not got and in_flight:
            time.sleep(poll)
    return replies
