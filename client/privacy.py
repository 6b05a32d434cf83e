"""This node's privacy budget: what it has spent, kept where the node keeps its data.

The accountant history (sigma, q, steps per round) is the state. It lives in a JSON file in the
node's state directory, so a later run on the same private data keeps spending the same budget,
and is mirrored in Flower's per-node `context.state` for the current run. It is written before
a trained update leaves the node: a reply lost afterwards may waste budget, never hide spending.
An unreadable file is refused, never reset: resetting would silently grant a fresh budget.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field, replace
from pathlib import Path

from flwr.app import ConfigRecord, Context

from client.data import LocalData
from client.state import state_dir
from shared.atomic import write_json
from shared.config import FederationConfig, PrivacyConfig, TrainConfig, from_run_config
from shared.errors import FedrecError
from client.policy import NodePolicy
from shared.privacy.accounting import ACTIVE, EXHAUSTED, Spend, calibrate_sigma, epsilon, privacy_unit

STATE_KEY = "fedrec-privacy"


@dataclass(frozen=True)
class PrivacyState:
    client_id: str
    unit: str
    accountant: str
    delta: float
    budget: float
    noise_multiplier: float  # fixed, or calibrated once at the first round and kept
    history: tuple[Spend, ...] = field(default_factory=tuple)
    status: str = ACTIVE

    @property
    def epsilon(self) -> float:
        return self.history[-1].epsilon if self.history else 0.0

    def steps(self) -> list[tuple[float, float, int]]:
        return [(s.noise_multiplier, s.sample_rate, int(s.executed_steps)) for s in self.history]

    def to_json(self) -> dict:
        return {**{k: getattr(self, k) for k in ("client_id", "unit", "accountant", "delta", "budget",
                                                  "noise_multiplier", "status")},
                "history": [s.to_json() for s in self.history]}  # fmt: skip

    @classmethod
    def from_json(cls, raw: dict) -> PrivacyState:
        return cls(**{**raw, "history": tuple(Spend(**s) for s in raw["history"])})


@dataclass(frozen=True)
class RoundPlan:
    noise_multiplier: float
    sample_rate: float
    steps: int  # per round: local epochs x steps per epoch
    max_grad_norm: float
    # How the steps clip each example (PrivacyConfig.dp_grad_sample_mode): the same mechanism,
    # so the accountant never reads it.
    grad_sample_mode: str = "hooks"


def state_path(state_dir: Path, client_id: str) -> Path:
    return state_dir / f"privacy-{client_id}.json"


def load_state(path: Path, context: Context | None = None) -> PrivacyState | None:
    """The saved state, from disk (authoritative) or else this run's context; None if new."""
    if path.exists():
        try:
            state = PrivacyState.from_json(json.loads(path.read_text()))
            if any(not math.isfinite(s.epsilon) or s.epsilon < 0 for s in state.history):
                raise ValueError("an epsilon is not a finite non-negative number")
            return state
        except (OSError, ValueError, KeyError, TypeError) as err:
            raise FedrecError(f"privacy state {path} is unreadable ({err}); refusing to train "
                              "rather than resetting the budget") from None  # fmt: skip
    if context is not None and STATE_KEY in context.state:
        return PrivacyState.from_json(json.loads(str(context.state[STATE_KEY]["json"])))
    return None


def save_state(state: PrivacyState, path: Path, context: Context | None = None) -> None:
    write_json(path, state.to_json())  # atomic, fsynced: it must survive a crash of the node
    if context is not None:
        context.state[STATE_KEY] = ConfigRecord({"json": json.dumps(state.to_json())})


def new_state(client_id: str, unit: str, cfg: PrivacyConfig) -> PrivacyState:
    """A node's first state. Delta is the run's public one, never derived from the data."""
    return PrivacyState(
        client_id=client_id, unit=unit, accountant=cfg.accountant, delta=cfg.target_delta,
        budget=cfg.target_epsilon, noise_multiplier=cfg.noise_multiplier,
    )  # fmt: skip


def plan_round(
    state: PrivacyState, cfg: PrivacyConfig, num_examples: int, batch_size: int,
    local_epochs: int, planned_rounds: int, local_steps: int = 0, policy: NodePolicy | None = None,
) -> tuple[PrivacyState, RoundPlan]:  # fmt: skip
    """This round's (sigma, q, steps): `local_steps` steps, or else `local_epochs` epochs of
    1/q. sigma is calibrated on the first round only, so that `planned_rounds` such rounds, after
    whatever the history already holds, end within the budget; raised to the node policy's
    floor, and then kept."""
    q = min(1.0, batch_size / max(num_examples, 1))
    steps = local_steps or local_epochs * max(1, round(1 / q))
    if state.noise_multiplier == 0:
        # What the node already released (its popularity counts, round 0) is composed first, so
        # the rounds get what remains of the budget.
        remaining = max(planned_rounds - sum(1 for s in state.history if s.round > 0), 1)
        sigma = calibrate_sigma(state.budget, state.delta, q, remaining * steps, state.steps())
        state = replace(state, noise_multiplier=policy.noise_floor(sigma) if policy else sigma)
    ghost = cfg.dp_grad_sample_mode == "ghost" and (policy is None or policy.ghost_clipping)
    return state, RoundPlan(state.noise_multiplier, q, steps, cfg.max_grad_norm, "ghost" if ghost else "hooks")


def epsilon_after(state: PrivacyState, plan: RoundPlan) -> float:
    return epsilon([*state.steps(), (plan.noise_multiplier, plan.sample_rate, plan.steps)], state.delta)


def record_round(state: PrivacyState, plan: RoundPlan, server_round: int, eps: float, executed: int) -> PrivacyState:
    """The state after this round's `executed` noisy steps (the plan's, unless training stopped
    early); `eps` is the plan's epsilon, recomputed when fewer steps ran."""
    if executed != plan.steps:
        eps = epsilon_after(state, replace(plan, steps=executed))
    spend = Spend(server_round, plan.noise_multiplier, plan.sample_rate, plan.steps, plan.max_grad_norm, eps, executed)
    return replace(state, history=(*state.history, spend))


def privacy_record(state: PrivacyState, partition_id: int) -> ConfigRecord:
    last = state.history[-1] if state.history else None
    return ConfigRecord({
        "client-id": state.client_id, "partition-id": partition_id, "unit": state.unit,
        "status": state.status, "epsilon": state.epsilon, "delta": state.delta,
        "budget": state.budget, "accountant": state.accountant,
        "noise-multiplier": last.noise_multiplier if last else state.noise_multiplier,
        "sample-rate": last.sample_rate if last else 0.0, "steps": last.steps if last else 0,
        "max-grad-norm": last.max_grad_norm if last else 0.0,
        # The whole history, earlier runs included, so the ledger alone can recompute epsilon.
        "history": json.dumps([s.to_json() for s in state.history]),
    })  # fmt: skip


def private_round(
    context: Context, local: LocalData, num_examples: int, server_round: int, policy: NodePolicy
) -> tuple[PrivacyState, RoundPlan | None, float]:
    """This round's state and plan, or no plan when the round would overrun the budget. The
    budget is the smallest the node has ever been given: its policy's, the run config's, and
    the one its saved state already holds (a later run never widens it)."""
    cfg = from_run_config(PrivacyConfig, context.run_config)
    path = state_path(state_dir(context), local.client_id)
    state = load_state(path, context) or new_state(local.client_id, privacy_unit(local.scheme), cfg)
    state = replace(state, budget=min(state.budget, cfg.target_epsilon, policy.max_epsilon))
    if state.history and epsilon(state.steps(), state.delta) >= state.budget:
        # Spent already (a popularity release under a budget since lowered): decline, as below;
        # there is no sigma left to calibrate.
        state = replace(state, status=EXHAUSTED)
        save_state(state, path, context)
        return state, None, state.epsilon
    fed = from_run_config(FederationConfig, context.run_config)
    batch_size = from_run_config(TrainConfig, context.run_config).batch_size
    state, plan = plan_round(state, cfg, num_examples, batch_size, fed.local_epochs, fed.num_server_rounds,
                             fed.local_steps, policy)  # fmt: skip
    eps = epsilon_after(state, plan)
    if eps > state.budget:
        state = replace(state, status=EXHAUSTED)
        save_state(state, path, context)
        return state, None, eps
    return state, plan, eps
