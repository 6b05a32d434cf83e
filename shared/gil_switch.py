"""A shorter GIL switch interval while a simulation's Python threads hand work to each other.

A thread that wants the GIL waits until the holder lets go, which a busy holder does only every
`sys.getswitchinterval()` seconds (5 ms by default). Two places in a Flower simulation pay it
several times per client update:
- the ServerApp shares its process with Flower's simulation engine, whose dispatch loop scans
  every SuperNode's queue; the threads that carry each message to the client actor and take its
  reply back wait on that loop;
- the client actor's training step lets go of the GIL inside torch's kernels and waits to take
  it back from the actor's other threads (Ray's); 0.5 ms instead of 5 cut a one-user client's
  step by about a sixth in the same simulation (commit 36e56f6).
Both sides hold it only while they work (server/app.py, client/app.py), so the process's own
setting is back once they are done.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager

# 0.5 ms: the overhead benchmark's numbers behind it are in simulations/results/overhead.md.
SWITCH_INTERVAL = 0.0005


@contextmanager
def short_switch_interval(interval: float = SWITCH_INTERVAL) -> Iterator[None]:
    """The interpreter's GIL switch interval set to `interval` seconds, restored afterwards."""
    previous = sys.getswitchinterval()
    sys.setswitchinterval(interval)
    try:
        yield
    finally:
        sys.setswitchinterval(previous)


def short_switch_interval_mod(msg, context, call_next):  # type: ignore[no-untyped-def]
    """The same, as a Flower mod: the ClientApp's handlers run inside it (client/app.py)."""
    with short_switch_interval():
        return call_next(msg, context)
