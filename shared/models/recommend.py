"""Recommendations for one user, known to the dataset or described by a history alone.

    from shared.models.recommend import Recommender, recommend_for_history
    model = Recommender.from_pretrained("outputs/central")
    recommend_for_history(model, ["Toy Story (1995)", "Heat (1995)"], k=10)
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from shared.data.dataset import Dataset
from shared.errors import FedrecError
from shared.models.batches import feature_matrix
from shared.models.recommender import Recommender
from shared.models.scoring import ModelScorer


@dataclass(frozen=True)
class Recommendation:
    item_id: str
    title: str
    score: float


def parse_history(text: str, catalog: list[str]) -> list[str]:
    """Split 'a,b,c' into catalog item ids. Ids may themselves contain commas (ML-1M's ids are
    titles like 'American President, The (1995)'), so adjacent pieces are joined whenever the
    longer id is in the catalog."""
    known = set(catalog)
    pieces = [p.strip() for p in text.split(",")]
    items, i = [], 0
    while i < len(pieces):
        for j in range(len(pieces), i, -1):
            candidate = ", ".join(pieces[i:j])
            if candidate in known:
                items.append(candidate)
                i = j
                break
        else:
            if pieces[i]:
                raise FedrecError(f"--history: unknown item '{pieces[i]}' (not in the checkpoint's catalog)")
            i += 1
    if not items:
        raise FedrecError("--history: no items given")
    return items


def _to_recommendations(model: Recommender, ranked: list[tuple[int, float]]) -> list[Recommendation]:
    catalog, titles = model.config["catalog"], model.config["titles"]
    return [Recommendation(catalog[i - 1], titles[i - 1], s) for i, s in ranked]


def recommend_for_history(
    model: Recommender, history: list[str], k: int = 10, device: str = "cpu"
) -> list[Recommendation]:
    """A cold user: no side features, only the items (catalog ids, oldest first)."""
    index = {item: n + 1 for n, item in enumerate(model.config["catalog"])}
    unknown = [h for h in history if h not in index]
    if unknown:
        raise FedrecError(f"--history: unknown item '{unknown[0]}' (not in the checkpoint's catalog)")
    features = np.zeros(len(model.config["feature_sizes"]), dtype=np.int64)
    ranked = ModelScorer(model, device=device).recommend([index[h] for h in history], features, k)
    return _to_recommendations(model, ranked)


def recommend_for_user(
    model: Recommender, dataset: Dataset, user_id: str, k: int = 10, device: str = "cpu"
) -> list[Recommendation]:
    """A known user: their whole history (test item included) and side features."""
    matches = np.flatnonzero(dataset.user_ids == str(user_id))
    if not matches.size:
        raise FedrecError(f"--user: unknown user id '{user_id}' in dataset '{dataset.name}'")
    user = int(matches[0])
    features = feature_matrix(dataset, np.array([user]))[0]
    ranked = ModelScorer(model, device=device).recommend(dataset.sequence(user), features, k)
    return _to_recommendations(model, ranked)
