"""Peak resident memory of a process tree, sampled while it runs."""

from __future__ import annotations

import threading
from types import TracebackType

import psutil

RAY_NAMES = ("ray::", "raylet", "gcs_server")


def tree_rss(root: psutil.Process, with_ray: bool = False) -> int:
    """Resident memory of `root` and its descendants (and Ray's daemons, which may detach from
    the tree, when `with_ray`), each process counted once."""
    try:
        procs = {p.pid: p for p in [root, *root.children(recursive=True)]}
    except psutil.Error:
        return 0
    if with_ray:
        for p in psutil.process_iter(["name"]):
            if (p.info["name"] or "").startswith(RAY_NAMES):
                procs.setdefault(p.pid, p)
    total = 0
    for proc in procs.values():
        try:
            total += proc.memory_info().rss
        except psutil.Error:
            pass
    return total


class PeakRSS:
    """`with PeakRSS(pid) as peak: ...`, then `peak.bytes`: the largest tree RSS seen."""

    def __init__(self, pid: int, with_ray: bool = False, interval: float = 0.5) -> None:
        self._root, self._with_ray, self._interval = psutil.Process(pid), with_ray, interval
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self.bytes = 0

    def _sample(self) -> None:
        while not self._done.is_set():
            self.bytes = max(self.bytes, tree_rss(self._root, self._with_ray))
            self._done.wait(self._interval)

    def __enter__(self) -> PeakRSS:
        self._thread.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:  # fmt: skip
        self._done.set()
        self._thread.join()
