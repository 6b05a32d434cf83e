"""An epsilon lower bound from guessing which canaries were trained on, in one training run.

Steinke, Nasr and Jagielski, "Privacy auditing with one (1) training run", NeurIPS 2023
(arXiv 2305.08846), Theorem 3 and its Algorithm 2 (the appendix's p-value), as also computed by
jax_privacy's `auditing.py`:

m canaries are each included in training independently with probability 1/2. After training,
an auditor guesses "in" or "out" for r of them (abstaining on the rest) and gets v right. If the
training algorithm is (eps, delta)-DP with respect to each canary, each guess is right with
probability at most q = e^eps / (1 + e^eps) (randomized response's accuracy), even given the
other guesses, so

    P[v or more right] <= P[Binomial(r, q) >= v] + 2 m delta * alpha,
    alpha = max over i = 1..v of P[v - i <= Binomial(r, q) < v] / i.

The lower bound is the largest eps at which that p-value is still below 1 - confidence: had the
run been (eps, delta)-DP, so many right guesses would have happened with probability under 5%.
It holds whatever scored the canaries, as long as the guesses depend only on the trained model
and the canaries, never on the membership coins. The guessing rule (how many guesses) must be
fixed before looking, or paid for: `audit_guesses` tries a few rules and splits the 5% among
them (Bonferroni), so the best one's bound is still a 95% bound.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
from scipy.optimize import brentq
from scipy.special import expit
from scipy.stats import binom

CONFIDENCE = 0.95
# Guess on this share of the canaries (half of them "in" from the top scores, half "out" from
# the bottom): fixed in advance, the 5% split among them.
GUESS_FRACTIONS = (0.1, 0.2, 0.5, 1.0)
EPS_MAX = 50.0  # beyond any budget anyone reports; the search stops here


def p_value(canaries: int, guesses: int, correct: int, eps: float, delta: float = 0.0) -> float:
    """P[at least `correct` right out of `guesses`] under (eps, delta)-DP, `canaries` in all."""
    if correct <= 0:
        return 1.0
    q = float(expit(eps))
    beta = float(binom.sf(correct - 1, guesses, q))  # P[Binomial >= correct]
    if delta == 0:
        return beta
    i = np.arange(1, correct + 1)
    # P[correct - i <= Binomial < correct] / i: the mass delta's failure events can move upwards.
    alpha = float(np.max((binom.sf(correct - i - 1, guesses, q) - beta) / i))
    return min(1.0, beta + 2 * canaries * delta * alpha)


def epsilon_lower_bound(canaries: int, guesses: int, correct: int, delta: float = 0.0,
                        confidence: float = CONFIDENCE) -> float:  # fmt: skip
    """The largest eps that `correct` right guesses out of `guesses` refute at `confidence`;
    0 when they refute none (no better than coin flips, or too few guesses)."""
    if not 0 <= correct <= guesses <= canaries:
        raise ValueError(f"need 0 <= correct <= guesses <= canaries, got {correct}, {guesses}, {canaries}")
    if not 0 <= delta < 1 or not 0 < confidence < 1:
        raise ValueError(f"delta must be in [0, 1) and confidence in (0, 1), got {delta} and {confidence}")
    significance = 1 - confidence
    gap = lambda eps: significance - p_value(canaries, guesses, correct, eps, delta)  # noqa: E731
    if gap(0.0) <= 0:  # even eps = 0 explains the guesses
        return 0.0
    if gap(EPS_MAX) > 0:
        return EPS_MAX
    # The p-value grows with eps, so the bound is where it crosses the significance level.
    return float(brentq(gap, 0.0, EPS_MAX, xtol=1e-6))


@dataclass(frozen=True)
class Guessing:
    """One guessing rule's outcome: `top` guessed in, `bottom` guessed out, `correct` right."""

    top: int
    bottom: int
    correct: int
    epsilon_lower_bound: float


def audit_guesses(scores: np.ndarray, members: np.ndarray, delta: float = 0.0, confidence: float = CONFIDENCE,
                  fractions: tuple[float, ...] = GUESS_FRACTIONS) -> tuple[float, list[Guessing]]:  # fmt: skip
    """The epsilon lower bound at `confidence` from canary `scores` (higher: more likely trained
    on) and their true membership: for each fraction f, guess "in" for the f*m/2 highest scores
    and "out" for the f*m/2 lowest, and bound at 1 - (1 - confidence) / len(fractions). Returns
    the best bound and every rule's outcome."""
    scores, members = np.asarray(scores, dtype=float), np.asarray(members, dtype=bool)
    m = len(scores)
    if m < 2 or len(members) != m:
        raise ValueError(f"need 2 or more scores and one membership each, got {m} and {len(members)}")
    # Ties broken by a fixed order (the canary index), never by membership.
    order = np.argsort(-scores, kind="stable")
    level = 1 - (1 - confidence) / len(fractions)
    rules = []
    for f in fractions:
        half = max(1, min(m // 2, int(round(f * m / 2))))  # the two ends never overlap
        top, bottom = order[:half], order[m - half :]
        correct = int(members[top].sum() + (~members[bottom]).sum())
        bound = epsilon_lower_bound(m, len(top) + len(bottom), correct, delta, level)
        rules.append(Guessing(len(top), len(bottom), correct, bound))
    return max(r.epsilon_lower_bound for r in rules), rules


def rules_json(rules: list[Guessing]) -> list[dict]:
    return [asdict(r) for r in rules]
