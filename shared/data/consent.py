"""Which users authorised central use of their data (the seed's "user authorization").

A consented user's interactions may be used by the server directly: `fedrec train
--consented-only` pretrains the global model on them before the federation starts (run config
`pretrained`). Everyone else's data stays on its node and reaches the model only through DP
fine-tuning. The flag comes from the data (a `consent` column in `users.csv`: 1/0, true/false,
yes/no) or, in simulation, from `consent-fraction`: each user drawn with the seed.
"""

from __future__ import annotations

import numpy as np

from shared.data.dataset import Dataset
from shared.errors import FedrecError

YES, NO = {"1", "true", "yes", "y"}, {"0", "false", "no", "n", ""}
NON_CONSENTED = "non-consented"  # an evaluation message's `users`: only those who did not consent


def parse_consent(values: list[str], where: str) -> np.ndarray:
    """(U,) bool from a `consent` column's strings; anything else is refused."""
    out = np.zeros(len(values), dtype=bool)
    for row, raw in enumerate(values):
        value = str(raw).strip().lower()
        if value not in YES | NO:
            raise FedrecError(f"{where}: consent '{raw}' for user row {row + 1} is not one of 1/0, true/false, yes/no")
        out[row] = value in YES
    return out


def consented_users(dataset: Dataset, fraction: float, seed: int) -> np.ndarray:
    """Indices of the users who consented: the data's own flags when it has them, otherwise a
    `fraction` of users drawn with `seed` (the same users for every party holding the run config)."""
    if dataset.consent is not None:
        return np.flatnonzero(dataset.consent)
    if not 0 <= fraction <= 1:
        raise FedrecError(f"consent-fraction must be in [0, 1], got {fraction}")
    draws = np.random.default_rng([int(seed), 0xC0])  # a stream of its own: no other draw moves it
    return np.flatnonzero(draws.random(dataset.num_users) < fraction)


def non_consented_users(dataset: Dataset, fraction: float, seed: int) -> np.ndarray:
    return np.setdiff1d(np.arange(dataset.num_users), consented_users(dataset, fraction, seed))
