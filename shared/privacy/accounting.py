"""Epsilon from a DP-SGD history, and the noise that keeps a planned history within a budget.

A history is what an accountant needs and nothing more: for each round, the noise multiplier
sigma, the Poisson sample rate q and the number of steps. Anyone holding a client's history can
recompute its epsilon with an independent accountant; the privacy report relies on that.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from functools import lru_cache

from opacus.accountants import create_accountant
from opacus.accountants.utils import get_noise_multiplier

# The unit a training example stands for, by partitioning: one interaction of the user a
# per-user client is, or one user's whole history inside a silo.
RECORD, USER = "record", "user"
GRID_PER_DECADE = 20


def privacy_unit(partitioning: str) -> str:
    return RECORD if partitioning == "user" else USER


@dataclass(frozen=True)
class Spend:
    """One round of DP-SGD on one client."""

    round: int
    noise_multiplier: float
    sample_rate: float
    steps: int
    max_grad_norm: float
    epsilon: float  # after this round, over the client's whole history

    def to_json(self) -> dict:
        return asdict(self)


def default_delta(num_examples: int) -> float:
    """At most 0.1 / n, well below the 1 / n at which a mechanism may publish one example whole.
    Rounded down to the calibration grid, so clients of similar size share a calibration."""
    return 10 ** (math.floor(math.log10(0.1 / max(num_examples, 1)) * GRID_PER_DECADE + 1e-9) / GRID_PER_DECADE)


def _compressed(steps: Iterable[tuple[float, float, int]]) -> list[tuple[float, float, int]]:
    # Rounds with the same (sigma, q) compose exactly like one entry with their summed steps;
    # PRV's cost grows with the number of entries, not of steps.
    out: list[tuple[float, float, int]] = []
    for sigma, q, n in steps:
        if out and out[-1][:2] == (sigma, q):
            out[-1] = (sigma, q, out[-1][2] + n)
        else:
            out.append((sigma, q, n))
    return out


def epsilon(steps: Sequence[tuple[float, float, int]], delta: float, accountant: str = "prv") -> float:
    """Epsilon after every (sigma, q, steps) entry, composed by Opacus's `accountant`."""
    entries = [e for e in _compressed(steps) if e[2] > 0]
    if not entries:
        return 0.0
    if any(sigma == 0 for sigma, _, _ in entries):
        return math.inf
    acc = create_accountant(accountant)
    acc.history = entries
    return float(acc.get_epsilon(delta=delta))


def calibrate_sigma(
    budget: float, delta: float, sample_rate: float, steps: int, accountant: str = "prv"
) -> float:
    """The smallest sigma (to 1%) whose `steps` steps at `sample_rate` stay within `budget`.

    q is first rounded up to a grid of 20 steps per decade (at most 12% up): a little more noise
    than needed, never less, and a process simulating thousands of clients, each with its own q,
    then calibrates each grid point once (a PRV calibration takes seconds)."""
    q = min(1.0, 10 ** (math.ceil(math.log10(sample_rate) * GRID_PER_DECADE - 1e-9) / GRID_PER_DECADE))
    return _calibrate(budget, delta, max(q, sample_rate), steps, accountant)


@lru_cache(maxsize=1024)
def _calibrate(budget: float, delta: float, q: float, steps: int, accountant: str) -> float:
    sigma = get_noise_multiplier(target_epsilon=budget, target_delta=delta, sample_rate=q,
                                 steps=steps, accountant=accountant, epsilon_tolerance=0.01)  # fmt: skip
    # Searching and composing may round differently; step up until the plan provably fits.
    while epsilon([(sigma, q, steps)], delta, accountant) > budget:
        sigma *= 1.01
    return float(sigma)
