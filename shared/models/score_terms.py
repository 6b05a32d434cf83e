"""The terms added to every score beside the two towers: no weights, so no gradient and no DP.

Each is a neighbourhood model over the user's last items: the consented users' co-occurrences
(transitions.py) and the items whose public text is near (text_neighbours.py). Scoring, ranking,
serving and explanations see them as one: their sum, for every item (`rows`) or for given
candidates (`pairs`), and each history item's part of it (`shares`).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Protocol

import numpy as np


class Term(Protocol):
    recent: int  # how many of the user's last items the term reads

    def rows(self, history: np.ndarray) -> np.ndarray: ...

    def pairs(self, history: np.ndarray, candidates: np.ndarray) -> np.ndarray: ...

    def shares(self, history: np.ndarray, item: int) -> np.ndarray: ...


class ScoreTerms:
    """The sum of one or more terms, with the interface of each."""

    def __init__(self, terms: list[Term]) -> None:
        if not terms:
            raise ValueError("ScoreTerms needs at least one term")
        self.terms = terms
        self.recent = max(t.recent for t in terms)

    @staticmethod
    def of(*terms: Term | ScoreTerms | None) -> ScoreTerms | None:
        """The sum of the given terms, sums flattened and None left out; None when none is left."""
        flat = [part for t in terms if t is not None for part in (t.terms if isinstance(t, ScoreTerms) else [t])]
        return ScoreTerms(flat) if flat else None

    def rows(self, history: np.ndarray) -> np.ndarray:
        """(B, I+1) float32 for left-padded histories (B, L)."""
        return _total(t.rows(history) for t in self.terms)

    def pairs(self, history: np.ndarray, candidates: np.ndarray) -> np.ndarray:
        """(B, C) float32 for candidates (B, C)."""
        return _total(t.pairs(history, candidates) for t in self.terms)

    def shares(self, history: np.ndarray, item: int) -> np.ndarray:
        """(L,) float32: each history item's part of `item`'s summed term."""
        return _total(t.shares(history, item) for t in self.terms)


def _total(parts: Iterator[np.ndarray]) -> np.ndarray:
    total = next(parts)
    for part in parts:
        total = total + part
    return total
