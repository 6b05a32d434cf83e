"""What the HTTP service answers, without HTTP: one loaded model, its catalog vectors computed
once, and the optional dataset that known users' histories come from.

A known user's state (the transformer's reading of their whole history and side features) is
computed once and kept: it depends on nothing a request can change, and it is most of a
request's work (the ranker's 100 candidates and the catalog product are the rest, done per
request). A background thread computes every user's at start, in batches (minutes on ML-1M on
two busy cores), while the service already answers: a user not reached yet is computed on the
spot and kept. /health says how many are ready. A history sent with a request is read per
request.

Every answer is a plain dict, ready to be sent as JSON. Bad input raises `FedrecError` (the
service's 400) or `UnknownUser` (its 404), with the one-line message the CLI would print.
"""

from __future__ import annotations

import threading

import numpy as np
import torch

from shared.data.dataset import Dataset
from shared.errors import FedrecError
from shared.models.batches import feature_matrix, left_pad
from shared.models.checkpoint import check_catalog
from shared.models.item_names import ItemNames
from shared.models.recommend import cold_features
from shared.models.recommender import Recommender
from shared.models.scoring import ModelScorer

MAX_K = 1000  # results per answer: a bound on the work one request may ask for
STATE_BATCH = 256  # users encoded at a time when the service starts


class UnknownUser(FedrecError):
    """A user id the service's dataset does not hold (HTTP 404)."""


class Service:
    def __init__(self, model: Recommender, dataset: Dataset | None = None, search: bool = True) -> None:
        """`search`: load MiniLM now, so the first query does not pay for it (needs the
        checkpoint's item text embeddings; without them /search answers 400)."""
        self.model = model.cpu().eval()
        self.catalog, self.titles = model.config["catalog"], model.config["titles"]
        self.scorer = ModelScorer(self.model)  # the catalog's item vectors, once
        self.names = ItemNames(self.catalog, self.titles)
        self.dataset = dataset
        self.users: dict[str, int] = {}
        self.states: torch.Tensor | None = None  # (U, d): the known users' states, once computed
        self.ready = np.zeros(0, dtype=bool)  # (U,): which rows of `states` are computed
        if dataset is not None:
            check_catalog(model, dataset)
            self.users = {str(u): row for row, u in enumerate(dataset.user_ids)}
            self.states = torch.zeros(dataset.num_users, model.dim)
            self.ready = np.zeros(dataset.num_users, dtype=bool)
            threading.Thread(target=self._warm, name="user-states", daemon=True).start()
        self._searcher = None
        self._search_error: str | None = None
        if search:
            self._load_searcher()
        self._explainer = None

    def _encode_users(self, users: np.ndarray) -> None:
        """The state each user's whole history leads to, as ModelScorer.recommend computes it.
        Two threads may compute one user at once: both write the same values."""
        assert self.dataset is not None and self.states is not None
        padded = left_pad([self.dataset.sequence(int(u)) for u in users], self.scorer.max_len)
        self.states[users] = self.scorer.encode(padded, feature_matrix(self.dataset, users))
        self.ready[users] = True

    def _warm(self) -> None:
        for start in range(0, len(self.ready), STATE_BATCH):
            users = np.arange(start, min(start + STATE_BATCH, len(self.ready)))
            users = users[~self.ready[users]]
            if len(users):
                self._encode_users(users)

    def _state(self, row: int) -> torch.Tensor:
        if not self.ready[row]:
            self._encode_users(np.array([row]))
        assert self.states is not None
        return self.states[row : row + 1]

    def _load_searcher(self) -> None:
        from shared.models.search import Searcher

        try:
            self._searcher = Searcher(self.model, self.scorer)
            self._searcher.encoder  # noqa: B018 -- loads MiniLM now
        except FedrecError as err:
            self._search_error = str(err)

    # ------------------------------------------------------------------ inputs

    def inputs(self, user: str | None, history: str | None) -> tuple[np.ndarray, np.ndarray]:
        """(history item indices, side-feature codes) for a user id or a typed history."""
        items, features, _ = self._inputs(user, history)
        return items, features

    def _inputs(self, user: str | None, history: str | None) -> tuple[np.ndarray, np.ndarray, torch.Tensor | None]:
        """`inputs`, and the user's precomputed state (None for a typed history)."""
        if (user is None) == (history is None):
            raise FedrecError("give either user or history (not both)")
        if history is not None:
            return np.array(self.names.resolve(history), dtype=np.int64), cold_features(self.model), None
        if self.dataset is None or self.states is None:
            raise FedrecError("user: this service was started without --dataset, so it knows no users; "
                              "give history instead")  # fmt: skip
        row = self.users.get(str(user))
        if row is None:
            raise UnknownUser(f"user: unknown user id '{user}' in dataset '{self.dataset.name}'")
        features = feature_matrix(self.dataset, np.array([row]))[0]
        return self.dataset.sequence(row), features, self._state(row)

    def feature_values(self, user: str | None) -> list[str]:
        names = list(self.model.config["feature_sizes"])
        if user is None or self.dataset is None:
            return ["unknown"] * len(names)
        codes = self.inputs(user, None)[1]
        return [self.dataset.user_feature_vocab[n][int(c)] if int(c) else "unknown" for n, c in zip(names, codes)]

    @staticmethod
    def check_k(k: int) -> None:
        if not 1 <= k <= MAX_K:
            raise FedrecError(f"k must be between 1 and {MAX_K}, got {k}")

    def _item(self, index: int, score: float) -> dict:
        return {"item_id": self.catalog[index - 1], "title": self.titles[index - 1], "score": score}

    # ------------------------------------------------------------------ answers

    def health(self) -> dict:
        return {"status": "ok", "items": len(self.catalog), "dataset": self.model.config.get("dataset"),
                "users": len(self.users), "users_ready": int(self.ready.sum()),
                "search": self._searcher is not None}  # fmt: skip

    def recommend(self, user: str | None = None, history: str | None = None, k: int = 10) -> dict:
        (answer,) = self.recommend_many([(user, history, k)])
        if isinstance(answer, FedrecError):
            raise answer
        return answer

    def recommend_many(self, queries: list[tuple[str | None, str | None, int]]) -> list[dict | FedrecError]:
        """The answers to several (user, history, k) queries, each the one `recommend` gives it
        alone, computed together: one transformer pass for the typed histories, one catalog
        product and one ranker pass for all. The HTTP service sends the /recommend requests that
        arrive together; much of a request's work is fixed cost that a batch shares. A
        query's bad input is its own answer (the error, not raised) and leaves the others be."""
        answers: list[dict | FedrecError] = [FedrecError("not answered")] * len(queries)
        valid, histories, features, ks, states = [], [], [], [], []
        for n, (user, history, k) in enumerate(queries):
            try:
                self.check_k(k)
                items, feats, state = self._inputs(user, history)
            except FedrecError as err:
                answers[n] = err
                continue
            valid.append(n)
            histories.append(items)
            features.append(feats)
            ks.append(k)
            states.append(state)
        if not valid:
            return answers
        with torch.inference_mode():
            cold = [row for row, state in enumerate(states) if state is None]
            if cold:  # typed histories: their states are read now, in one pass
                padded = left_pad([histories[row] for row in cold], self.scorer.max_len)
                read = self.scorer.encode(padded, np.stack([features[row] for row in cold]))
                for row, state in zip(cold, read):
                    states[row] = state[None]
            ranked = self.scorer.recommend_many(histories, np.stack(features), ks, torch.cat(states))
        for n, rows in zip(valid, ranked):
            answers[n] = {"items": [self._item(i, s) for i, s in rows]}
        return answers

    def search(self, query: str, user: str | None = None, history: str | None = None, k: int = 10) -> dict:
        self.check_k(k)
        if not query.strip():
            raise FedrecError("search: the query is empty")
        if self._searcher is None:
            raise FedrecError(self._search_error or "search is off in this service")
        items, features = (None, None) if user is None and history is None else self.inputs(user, history)
        hits = self._searcher.search(query, k, items, features)
        return {"items": [{"item_id": h.item_id, "title": h.title, "score": h.score, "text_score": h.text_score,
                           "personal_score": h.personal_score} for h in hits]}  # fmt: skip

    def explain(self, user: str | None = None, history: str | None = None, k: int = 5, top: int = 3) -> dict:
        """The top-k recommendations, each with the history items and side features that drove it."""
        from shared.models.explain import Explainer, as_dict

        self.check_k(k)
        if top < 1:
            raise FedrecError(f"top must be at least 1, got {top}")
        items, features, state = self._inputs(user, history)
        with torch.inference_mode():
            ranked = self.scorer.recommend(items, features, k, state=state)
        if self._explainer is None:
            self._explainer = Explainer(self.model, self.scorer)
        values = self.feature_values(user)
        explanations = self._explainer.explain(items, features, [i for i, _ in ranked])
        return {"items": [as_dict(e, self.catalog, self.titles, values, top) for e in explanations]}


def load_service(checkpoint: str, dataset: str = "", path: str = "", cache_dir: str = "", threads: int = 1,
                 search: bool = True) -> Service:  # fmt: skip
    """A Service from `fedrec serve`'s options: the checkpoint, and the dataset when one is named
    (`path` alone means the checkpoint's own dataset, read from there)."""
    from shared.config import DataConfig
    from shared.data.dataset import load_dataset
    from shared.models.checkpoint import load_checkpoint

    torch.set_num_threads(threads)
    model = load_checkpoint(checkpoint)
    data = None
    if dataset or path:
        data = load_dataset(DataConfig(dataset=dataset or model.config["dataset"], data_path=path, cache_dir=cache_dir))
    return Service(model, data, search=search)
