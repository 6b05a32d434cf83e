"""Recommendations for one user, known to the dataset or described by a history alone.

    from shared.models.recommend import Recommender, recommend_for_history
    model = Recommender.from_pretrained("outputs/central")
    recommend_for_history(model, ["Toy Story (1995)", "Heat (1995)"], k=10)
    parse_history("Star Wars, toy story", model.config["catalog"], model.config["titles"])
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from shared.data.dataset import Dataset
from shared.errors import FedrecError
from shared.models.batches import feature_matrix
from shared.models.item_names import ItemNames
from shared.models.recommender import Recommender
from shared.models.scoring import ModelScorer


@dataclass(frozen=True)
class Recommendation:
    item_id: str
    title: str
    score: float


def parse_history(text: str, catalog: list[str], titles: list[str] | None = None) -> list[str]:
    """Split 'a,b,c' into catalog item ids. Each name is a catalog id or a title, exact or
    close (shared.models.item_names); ids and titles may themselves contain commas (ML-1M's
    ids are titles like 'American President, The (1995)')."""
    names = ItemNames(catalog, titles)
    return [catalog[i - 1] for i in names.resolve(text)]


def to_recommendations(model: Recommender, ranked: list[tuple[int, float]]) -> list[Recommendation]:
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
    ranked = ModelScorer(model, device=device).recommend([index[h] for h in history], cold_features(model), k)
    return to_recommendations(model, ranked)


def recommend_for_user(
    model: Recommender, dataset: Dataset, user_id: str, k: int = 10, device: str = "cpu"
) -> list[Recommendation]:
    """A known user: their whole history (test item included) and side features."""
    history, features = user_inputs(dataset, user_id)
    ranked = ModelScorer(model, device=device).recommend(history, features, k)
    return to_recommendations(model, ranked)


def cold_features(model: Recommender) -> np.ndarray:
    """Side-feature codes of a user known only by a history: every feature unknown (code 0)."""
    return np.zeros(len(model.config["feature_sizes"]), dtype=np.int64)


def find_user(dataset: Dataset, user_id: str) -> int:
    """The dataset's row of `user_id`, or one line saying it is unknown."""
    matches = np.flatnonzero(dataset.user_ids == str(user_id))
    if not matches.size:
        raise FedrecError(f"--user: unknown user id '{user_id}' in dataset '{dataset.name}'")
    return int(matches[0])


def user_inputs(dataset: Dataset, user_id: str) -> tuple[np.ndarray, np.ndarray]:
    """A known user's whole history (item indices, oldest first) and side-feature codes."""
    user = find_user(dataset, user_id)
    return dataset.sequence(user), feature_matrix(dataset, np.array([user]))[0]


def feature_values(dataset: Dataset | None, user_id: str | None, model: Recommender) -> list[str]:
    """The user's side-feature values as text, in the model's feature order ('unknown' for a
    user known only by a history)."""
    names = list(model.config["feature_sizes"])
    if dataset is None or user_id is None:
        return ["unknown"] * len(names)
    codes = user_inputs(dataset, user_id)[1]
    return [dataset.user_feature_vocab[n][int(c)] if int(c) else "unknown" for n, c in zip(names, codes)]
