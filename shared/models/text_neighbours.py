"""The items whose text is near the user's last items: a neighbourhood term from public text alone.

A federation that starts with nobody's consent has no co-occurrence table (transitions.py) and a
model trained only under DP noise. What every party does hold, at no privacy cost, is the
pretrained MiniLM's sense of which titles are alike: sequels, a director's films, one genre's
decade. This term scores candidate j as a soft nearest neighbour of the user's last `recent`
items h_k (k = 0 the last), each weighing recent_decay^k (the weights w_k summing to 1):

    weight x temperature x log sum_k w_k exp(cos(h_k, j) / temperature)

on the unit-length MiniLM vectors. A small temperature lets the nearest history item speak
(near-duplicate titles); a large one tends to the weighted mean of the cosines. The voting items
are the co-occurrences' (transitions.py: RECENT, RECENT_DECAY), not tuned again; TEMPERATURE
and `text-neighbours` (the weight) were chosen on validation items beside a DP-trained model and
the silos' popularity prior (simulations/results/text_neighbours.md).

What it discloses: its only inputs are the catalog's public item text and the history being
scored, which the user tower reads anyway. It has no parameters, so no gradient and no update
carries it; the evaluation metrics a node reports are computed with it, as with every other
part of the score (docs/privacy.md says what those metrics are not covered by).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np

from shared.models.transitions import RECENT, RECENT_DECAY

TEMPERATURE = 0.1  # of the soft maximum over the history items' cosines
CHUNK_VALUES = 1 << 23  # cosines held at once by `rows` (float32: 32 MiB), whatever the catalog's size


@dataclass(frozen=True)
class TextNeighbours:
    text: np.ndarray  # (I+1, D) item text embeddings; row 0 (padding) is all zeros
    weight: float
    recent: int = RECENT
    recent_decay: float = RECENT_DECAY
    temperature: float = TEMPERATURE

    @cached_property
    def _unit(self) -> np.ndarray:
        norms = np.linalg.norm(self.text, axis=1, keepdims=True)
        return (self.text / np.maximum(norms, 1e-12)).astype(np.float32)

    def _votes(self, history: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Each row's last `recent` items (B, k) and their log weights (B, k), float32: -inf for
        padding, and for every item of a row without history."""
        history = np.asarray(history, dtype=np.int64)
        recent = (history[:, None] if history.ndim == 1 else history)[:, -self.recent :]
        k = recent.shape[1]
        weights = np.where(recent > 0, self.recent_decay ** np.arange(k - 1, -1, -1, dtype=np.float64), 0.0)
        totals = weights.sum(axis=1, keepdims=True)
        log_w = np.full(weights.shape, -np.inf, dtype=np.float32)
        np.log(weights / np.where(totals > 0, totals, 1.0), out=log_w, where=weights > 0)
        return recent, log_w

    def _soft_max(self, cosines: np.ndarray, log_weights: np.ndarray) -> np.ndarray:
        """(B, k, C) cosines -> (B, C): the term; 0 for a row without history."""
        z = cosines / self.temperature + log_weights[:, :, None]
        top = z.max(axis=1, keepdims=True)
        empty = ~np.isfinite(top)
        top = np.where(empty, 0.0, top)
        sums = np.exp(z - top).sum(axis=1)
        sums[empty[:, 0]] = 1.0  # a row without history sums nothing: its 0 is set below, not log(0)
        soft = (top[:, 0] + np.log(sums)) * self.temperature
        return np.where(empty[:, 0], 0.0, self.weight * soft).astype(np.float32)

    def rows(self, history: np.ndarray) -> np.ndarray:
        """(B, I+1) float32: the term for every item after each row's history (B, L), left-padded;
        (B,) reads as the last item alone."""
        recent, log_w = self._votes(history)
        out = np.empty((len(recent), self._unit.shape[0]), dtype=np.float32)
        chunk = max(1, CHUNK_VALUES // max(recent.shape[1] * self._unit.shape[0], 1))
        for i in range(0, len(recent), chunk):
            cosines = self._unit[recent[i : i + chunk]] @ self._unit.T  # (b, k, I+1)
            out[i : i + chunk] = self._soft_max(cosines, log_w[i : i + chunk])
        out[:, 0] = 0.0  # padding is never a candidate
        return out

    def pairs(self, history: np.ndarray, candidates: np.ndarray) -> np.ndarray:
        """(B, C) float32: the term for each row's candidates (B, C) after its history."""
        recent, log_w = self._votes(history)
        candidates = np.asarray(candidates, dtype=np.int64)
        cosines = np.einsum("bkd,bcd->bkc", self._unit[recent], self._unit[candidates])
        return self._soft_max(cosines, log_w)

    def shares(self, history: np.ndarray, item: int) -> np.ndarray:
        """(L,) float32: each item of one history (L,)'s part of `item`'s term, in proportion to
        its part of the soft maximum; they sum to the term (explanations attribute it)."""
        history = np.asarray(history, dtype=np.int64)
        out = np.zeros(len(history), dtype=np.float32)
        recent, log_w = self._votes(history[None])
        if not np.isfinite(log_w).any():  # no history: no term to share
            return out
        z = self._unit[recent[0]] @ self._unit[int(item)] / self.temperature + log_w[0]
        parts = np.exp(z - z.max())
        total = self.weight * self.temperature * (z.max() + np.log(parts.sum()))  # _soft_max of this one item
        out[len(history) - recent.shape[1] :] = total * parts / parts.sum()
        return out
