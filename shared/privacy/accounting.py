"""Epsilon from a DP-SGD history, and the noise that keeps a planned history within a budget.

A history is what an accountant needs and nothing more: for each round, the noise multiplier
sigma, the Poisson sample rate q and the number of steps. Anyone holding a client's history can
recompute its epsilon with Google's `dp_accounting`; the privacy report and the tests do that.

Why replace-one adjacency. A node's example count n leaves it: q = batch / n is in its ledger
entry and n weighs its update in FedAvg. Under add/remove adjacency the neighbouring dataset has
n +- 1 examples, so disclosing n already tells the two apart and the guarantee is void. Under
replace-one the neighbours have the same n (one example's content is swapped for another's),
so n is public by construction and the guarantee holds for what is disclosed. It costs more
noise for the same epsilon (about twice the sensitivity). Google's PLD accountant analyses the
Poisson-sampled Gaussian under replace-one; Opacus's accountants do not, so fedrec uses
`dp_accounting` (declared in pyproject.toml) and not Opacus for accounting.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from functools import lru_cache
from importlib.metadata import version
from typing import TYPE_CHECKING

# dp_accounting (with scipy) takes about 1.5 s to import, and a deployed node pays imports per
# message: it is imported where epsilon is computed, so a node answering an evaluation skips it.
if TYPE_CHECKING:
    from dp_accounting import dp_event, pld

# The unit a training example stands for, by partitioning: a per-user client trains on examples
# cut from one user's history (one interaction as target, the items before it as context), a
# silo on whole user histories, one example each.
EXAMPLE, USER = "example", "user"
ACCOUNTANT = "pld"  # dp_accounting's privacy-loss-distribution accountant
NEIGHBOURING_RELATION = "replace_one"
SAMPLING = "poisson"
GRID_PER_DECADE = 20
DEFAULT_DELTA = 1e-6  # public and fixed: never derived from a node's data
# The PLD grid's step in privacy loss. Its estimate is pessimistic (an upper bound) at any step;
# 1e-3 agrees with 1e-4 to 4 digits on fedrec's histories at a tenth of the time (0.2 s).
DISCRETIZATION = 1e-3
# A node's privacy status, in its privacy record: it trains ('active'), or its next round would
# overrun its budget, so it declines and the server stops sampling it.
ACTIVE, EXHAUSTED = "active", "budget-exhausted"


def privacy_unit(partitioning: str) -> str:
    return EXAMPLE if partitioning == "user" else USER


def accountant_version() -> str:
    return f"dp_accounting {version('dp-accounting')} PLD"


@dataclass(frozen=True)
class Spend:
    """One round of DP-SGD on one client."""

    round: int
    noise_multiplier: float
    sample_rate: float
    steps: int
    max_grad_norm: float
    epsilon: float  # after this round, over the client's whole history
    # The noisy steps that ran (an empty Poisson batch's noise-only step counts): what epsilon is
    # computed from. Equal to the planned `steps` unless training stopped early.
    executed_steps: int | None = None

    def __post_init__(self) -> None:
        if self.executed_steps is None:
            object.__setattr__(self, "executed_steps", self.steps)

    def to_json(self) -> dict:
        return asdict(self)


def _compressed(steps: Iterable[tuple[float, float, int]]) -> list[tuple[float, float, int]]:
    # Rounds with the same (sigma, q) compose exactly like one entry with their summed steps;
    # the accountant's cost grows with the number of entries, not of steps.
    out: list[tuple[float, float, int]] = []
    for sigma, q, n in steps:
        if out and out[-1][:2] == (sigma, q):
            out[-1] = (sigma, q, out[-1][2] + n)
        else:
            out.append((sigma, q, n))
    return out


def dp_events(steps: Sequence[tuple[float, float, int]]) -> dp_event.DpEvent:
    """The history as one composed DpEvent: each entry `steps` Poisson-sampled Gaussian steps."""
    from dp_accounting import dp_event

    return dp_event.ComposedDpEvent([
        dp_event.SelfComposedDpEvent(dp_event.PoissonSampledDpEvent(q, dp_event.GaussianDpEvent(sigma)), n)
        for sigma, q, n in _compressed(steps) if n > 0
    ])  # fmt: skip


def _accountant() -> pld.PLDAccountant:
    from dp_accounting import NeighboringRelation, pld

    return pld.PLDAccountant(neighboring_relation=NeighboringRelation.REPLACE_ONE,
                             value_discretization_interval=DISCRETIZATION)  # fmt: skip


def epsilon(steps: Sequence[tuple[float, float, int]], delta: float) -> float:
    """Epsilon under replace-one adjacency after every (sigma, q, steps) entry."""
    entries = [e for e in _compressed(steps) if e[2] > 0]
    if not entries:
        return 0.0
    if any(sigma == 0 for sigma, _, _ in entries):
        return math.inf
    return _epsilon(tuple(entries), delta)


@lru_cache(maxsize=4096)
def _epsilon(entries: tuple[tuple[float, float, int], ...], delta: float) -> float:
    acc = _accountant()
    acc.compose(dp_events(entries))
    return float(acc.get_epsilon(delta))


def calibrate_sigma(budget: float, delta: float, sample_rate: float, steps: int,
                    spent: Sequence[tuple[float, float, int]] = ()) -> float:  # fmt: skip
    """The smallest sigma (to 1%) whose `steps` steps at `sample_rate`, after the history
    `spent` (a node's earlier releases, e.g. its popularity counts), stay within `budget`.

    q is first rounded up to a grid of 20 steps per decade (at most 12% up): a little more noise
    than needed, never less, and a process simulating thousands of clients, each with its own q,
    then calibrates each grid point once."""
    q = min(1.0, 10 ** (math.ceil(math.log10(sample_rate) * GRID_PER_DECADE - 1e-9) / GRID_PER_DECADE))
    prior = tuple(e for e in _compressed(spent) if e[2] > 0)
    if epsilon(prior, delta) >= budget:
        raise ValueError(f"the history already spends epsilon {epsilon(prior, delta):.3f} of budget {budget}")
    return _calibrate(budget, delta, max(q, sample_rate), steps, prior)


@lru_cache(maxsize=1024)
def _calibrate(budget: float, delta: float, q: float, steps: int,
               prior: tuple[tuple[float, float, int], ...] = ()) -> float:  # fmt: skip
    from dp_accounting.mechanism_calibration import calibrate_dp_mechanism

    def event(sigma: float) -> dp_event.DpEvent:
        return dp_events([*prior, (sigma, q, steps)])

    sigma = float(calibrate_dp_mechanism(_accountant, event, budget, delta, tol=0.005))
    # The search stops near the boundary; step up until the plan provably fits.
    while epsilon([*prior, (sigma, q, steps)], delta) > budget:
        sigma *= 1.01
    return sigma


def central_epsilon(noise_multiplier: float, releases: int, delta: float) -> float:
    """DP-FedAvg's client-level epsilon after `releases` noised sums (sensitivity: the clipping
    norm; noise: `noise_multiplier` x it), add/remove adjacency of one client, no amplification by
    sampling (conservative). Computed from the round count alone, so it survives a resume."""
    if releases <= 0:
        return 0.0
    from dp_accounting import NeighboringRelation, dp_event, pld

    acc = pld.PLDAccountant(neighboring_relation=NeighboringRelation.ADD_OR_REMOVE_ONE,
                            value_discretization_interval=DISCRETIZATION)  # fmt: skip
    acc.compose(dp_event.GaussianDpEvent(noise_multiplier), releases)
    return float(acc.get_epsilon(delta))


def central_noise_multiplier(budget: float, releases: int, delta: float) -> float:
    """The noise multiplier whose `releases` noised sums spend at most `budget` (the inverse of
    `central_epsilon`, within 0.5% of the smallest). `releases` Gaussian releases at z compose
    exactly to one at z / sqrt(releases), whose (epsilon, delta) curve is analytic (Balle & Wang,
    ICML 2018); that gives z, and the PLD accountant, which the report uses, has the last word."""
    if budget <= 0 or releases <= 0 or not 0 < delta < 1:
        raise ValueError(f"central noise for budget {budget}, {releases} releases, delta {delta}: all must be > 0")

    def normal_cdf(x: float) -> float:
        return 0.5 * math.erfc(-x / math.sqrt(2))

    def analytic_delta(z: float) -> float:
        mu = math.sqrt(releases) / z  # sensitivity over noise, after composition
        return normal_cdf(mu / 2 - budget / mu) - math.exp(budget) * normal_cdf(-mu / 2 - budget / mu)

    low, high = 1e-3, 1e4  # delta falls as z grows; bisect on log z
    for _ in range(60):
        mid = math.sqrt(low * high)
        low, high = (mid, high) if analytic_delta(mid) > delta else (low, mid)
    z = high
    while central_epsilon(z, releases, delta) > budget:  # the PLD grid is a pessimistic upper bound
        z *= 1.005
    return z
