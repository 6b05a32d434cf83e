"""Bookkeeping for a long item-text encoding: finished chunks on disk, and a time estimate.

A large catalog takes minutes to encode on a CPU (a 100k-book catalog: several). Each finished
chunk is saved as its own file, so an interrupted encoding resumes from the chunks it has; the
estimate, from the first batch's measured time, tells the user up front what they are in for.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from shared.atomic import atomic_path

log = logging.getLogger(__name__)

CHUNK_SIZE = 2048  # texts per saved chunk: an interruption loses at most this much work
CHARS_PER_TOKEN = 4  # English averages about 4 characters per word piece: enough for an estimate


class ChunkStore:
    """Finished rows [start, end) of a (total, width) float32 array, one .npy file per chunk,
    under `directory` (named after the cache key, so only the same texts ever reuse them). The
    file names carry the range: a run with another chunk size just does not find them."""

    def __init__(self, directory: Path, total: int, chunk_size: int, width: int) -> None:
        self.directory = Path(directory)
        self.total, self.chunk_size, self.width = total, max(1, int(chunk_size)), width

    def ranges(self) -> list[tuple[int, int]]:
        return [(s, min(s + self.chunk_size, self.total)) for s in range(0, self.total, self.chunk_size)]

    def _file(self, start: int, end: int) -> Path:
        return self.directory / f"{start:010d}-{end:010d}.npy"

    def load(self, start: int, end: int) -> np.ndarray | None:
        """The chunk's rows, or None if it was not finished (or its file is unreadable)."""
        path = self._file(start, end)
        if not path.exists():
            return None
        try:
            rows = np.load(path)
        except (OSError, ValueError):
            return None
        return rows if rows.shape == (end - start, self.width) else None

    def save(self, start: int, end: int, rows: np.ndarray) -> None:
        """Written atomically. A failure to save only costs a later resume this chunk: it is
        logged, never raised (another process may have just finished and removed the store)."""
        try:
            with atomic_path(self._file(start, end)) as tmp:
                with open(tmp, "wb") as f:
                    np.save(f, rows)
        except OSError as err:
            log.debug("could not keep encoded chunk %d-%d: %s", start, end, err)


def padded_tokens(texts: list[str], batches: list[tuple[int, int]], max_tokens: int) -> np.ndarray:
    """(len(batches),) each batch's cost in padded tokens: its size times its longest text (in
    estimated word pieces, capped at `max_tokens`), which is what a padded forward pass costs."""
    lengths = np.array([min(len(t) // CHARS_PER_TOKEN + 2, max_tokens) for t in texts], dtype=np.float64)
    return np.array([(end - start) * lengths[start:end].max() for start, end in batches])


def format_duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"
