"""The node's own privacy policy: the least privacy it accepts, whatever the server asks.

The run config comes from the server. If it alone decided `dp`, sigma or the budget, a curious
server could send `dp=false` and receive raw updates. So a deployed node holds a policy of its
own, set where the node is set up (`fedrec deploy supernode` writes `privacy-policy.json` into
the node's state directory), and refuses a run config that asks for less privacy. The refusal
is a normal reply naming the key and the reason; the server logs and ledgers it and the round
goes on with the other nodes.

In simulation a node has no state directory of its own: its policy is the run config's, so a
research run behaves as it is configured.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Any

from shared.atomic import check_writable, write_json
from shared.config import ACCOUNTANTS, PrivacyConfig
from shared.errors import FedrecError

POLICY_FILE = "privacy-policy.json"


@dataclass(frozen=True)
class NodePolicy:
    dp_required: bool = True
    max_epsilon: float = 8.0  # the node's budget over every run on its data
    max_delta: float = 1e-6
    min_noise_multiplier: float = 0.0  # 0: any sigma the accountant calibrates to the budget
    max_grad_norm: float = 1.0  # the largest per-example clipping norm C it accepts
    accountant: str = "pld"
    # Evaluation metrics are released without noise. The run config's min-eval-users comes from
    # the server, which could set it to 1 and read one user's outcome: the node's floor holds.
    min_eval_users: int = 20
    # Metrics are exact means of a function of the weights the server sends, which it can make
    # depend on one user's data: a node that must not answer such queries sends none.
    evaluate: bool = True
    # The node's own message audit (client/message_audit.py), on whatever the run config says.
    audit_messages: bool = False
    # Ghost clipping (client/ghost.py) cannot yet leave out an example whose gradient is not finite:
    # weights a server crafted to overflow on one user's features would turn the whole update into
    # NaN, a bit about that user. Hooks mode zeroes such an example (client/training.py), so a
    # deployed node clips with hooks whatever the run config asks.
    ghost_clipping: bool = False
    # The popularity prior's counts (client/popularity.py) are accounted out of the same budget,
    # but they are a second kind of release beside the training: an operator opts in, and caps
    # the share of the budget they may take. 0: this node never releases counts.
    max_popularity_epsilon: float = 0.0

    def __post_init__(self) -> None:
        if float(self.max_epsilon) <= 0 or not 0 < float(self.max_delta) < 1:
            raise FedrecError(f"privacy policy: max-epsilon must be > 0 and max-delta in (0, 1), got "
                              f"{self.max_epsilon} and {self.max_delta}")  # fmt: skip
        if float(self.min_noise_multiplier) < 0 or float(self.max_grad_norm) <= 0:
            raise FedrecError("privacy policy: min-noise-multiplier must be >= 0 and max-grad-norm > 0")
        if float(self.max_popularity_epsilon) < 0:
            raise FedrecError(f"privacy policy: max-popularity-epsilon must be >= 0, got {self.max_popularity_epsilon}")
        if int(self.min_eval_users) < 1:
            raise FedrecError(f"privacy policy: min-eval-users must be >= 1, got {self.min_eval_users}")
        if self.accountant not in ACCOUNTANTS:
            raise FedrecError(f"privacy policy: accountant must be one of {', '.join(ACCOUNTANTS)}")

    def refusal(self, cfg: PrivacyConfig) -> tuple[str, str] | None:
        """(run-config key, reason) for the first thing `cfg` asks that this policy forbids."""
        if self.dp_required and not cfg.dp:
            return "dp", "this node trains only with DP-SGD (its policy: dp required)"
        if not cfg.dp:
            return None
        checks = [
            ("target-epsilon", cfg.target_epsilon > self.max_epsilon, f"{cfg.target_epsilon:g} > the node's {self.max_epsilon:g}"),
            ("target-delta", cfg.target_delta > self.max_delta, f"{cfg.target_delta:g} > the node's {self.max_delta:g}"),
            ("noise-multiplier", 0 < cfg.noise_multiplier < self.min_noise_multiplier,
             f"{cfg.noise_multiplier:g} < the node's minimum {self.min_noise_multiplier:g}"),
            ("max-grad-norm", cfg.max_grad_norm > self.max_grad_norm, f"{cfg.max_grad_norm:g} > the node's {self.max_grad_norm:g}"),
            ("accountant", cfg.accountant != self.accountant, f"'{cfg.accountant}', the node accounts with '{self.accountant}'"),
        ]  # fmt: skip
        return next(((key, reason) for key, bad, reason in checks if bad), None)

    def count_refusal(self, cfg: PrivacyConfig) -> str | None:
        """Why this node will not release the popularity counts `cfg` asks for; None if it will."""
        if self.max_popularity_epsilon == 0:
            return "this node releases no popularity counts (its policy: max-popularity-epsilon 0)"
        if cfg.popularity_epsilon > self.max_popularity_epsilon:
            return f"{cfg.popularity_epsilon:g} > the node's {self.max_popularity_epsilon:g}"
        return None

    def eval_floor(self, cfg: PrivacyConfig) -> int:
        """The fewest users whose mean this node sends: the run config's or its own, the larger."""
        return max(int(cfg.min_eval_users), int(self.min_eval_users))

    def noise_floor(self, sigma: float) -> float:
        """A calibrated sigma, raised to the policy's minimum."""
        return max(sigma, self.min_noise_multiplier)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def simulated_policy(cfg: PrivacyConfig) -> NodePolicy:
    """A simulated node's policy: exactly what the run config asks, so it never refuses."""
    return NodePolicy(dp_required=cfg.dp, max_epsilon=cfg.target_epsilon, max_delta=cfg.target_delta,
                      min_noise_multiplier=0.0, max_grad_norm=cfg.max_grad_norm, accountant=cfg.accountant,
                      min_eval_users=cfg.min_eval_users, ghost_clipping=True,
                      max_popularity_epsilon=cfg.popularity_epsilon)  # fmt: skip


def read_policy(path: Path) -> NodePolicy:
    try:
        raw = json.loads(path.read_text())
        known = {f.name for f in fields(NodePolicy)}
        unknown = sorted(set(raw) - known)
        if unknown:
            raise ValueError(f"unknown key '{unknown[0]}'")
        return NodePolicy(**raw)
    except (OSError, ValueError, TypeError) as err:
        raise FedrecError(f"privacy policy {path} is unreadable ({err}); refusing to train") from None


def write_policy(state_dir: Path, policy: NodePolicy) -> Path:
    path = state_dir / POLICY_FILE
    write_json(path, policy.to_json())
    return path


def set_policy(state_dir: Path, given: Mapping[str, Any]) -> NodePolicy:
    """The node's policy file, with the options the operator `given` (None: not given) applied
    over the saved one (or the defaults), written back."""
    path = state_dir / POLICY_FILE
    current = read_policy(path) if path.exists() else NodePolicy()
    policy = replace(current, **{k: v for k, v in given.items() if v is not None})
    check_writable(state_dir, "state-dir")  # one line naming it, not an OSError's traceback
    write_policy(state_dir, policy)
    return policy


def node_policy(node_config: Mapping[str, Any], run_privacy: PrivacyConfig) -> NodePolicy:
    """The policy of a deployed node (its state directory's file; the strict default if it has
    none), or a simulated node's (the run config's)."""
    if not node_config.get("state-dir"):
        return simulated_policy(run_privacy)
    path = Path(str(node_config["state-dir"])).expanduser() / POLICY_FILE
    return read_policy(path) if path.exists() else NodePolicy()
