"""A trained Recommender as a `Scorer` for the evaluation harness, and as a recommender.

`ModelScorer` encodes each user's history once per stage (the transformer pass is the expensive
part) and serves two views of the model from that cache:
- `.retrieval`: the dot product of the user state and every item vector;
- `.two_stage`: retrieval picks the top-N unseen items and the ranker re-orders them. Items outside
  the top-N keep their retrieval order below every re-ranked one, so ranks stay exact.
"""

from __future__ import annotations

import numpy as np
import torch

from shared.data.dataset import Dataset
from shared.eval.protocols import seen_mask
from shared.models.batches import eval_histories, feature_matrix, left_pad
from shared.models.recommender import Recommender

RERANKED_OFFSET = 1e6  # above any retrieval logit: re-ranked items come first


class ModelScorer:
    """`dataset` is needed only to score its users by index; `recommend` works without one."""

    def __init__(
        self, model: Recommender, dataset: Dataset | None = None, device: str = "cpu",
        batch_size: int = 512, users: np.ndarray | None = None,
    ) -> None:  # fmt: skip
        """`users`: the only users this scorer will be asked about (a client's own); their
        states are computed once per stage. Default: every user of `dataset`."""
        self.model = model.to(device).eval()
        self._users = users
        self._dataset = dataset
        self.device = device
        self.batch_size = batch_size
        self.max_len = int(model.config["model"]["max_len"])
        self.top_n = int(model.config["model"]["retrieve_top_n"])
        with torch.no_grad():
            self.items = model.catalog_vectors()
            # (I+1,) the items' popularity prior, 0 without one: part of every retrieval score.
            all_items = torch.arange(self.items.shape[0], device=self.items.device)
            self.item_bias = torch.as_tensor(model.bias(all_items), device=self.items.device)
        self._states: dict[str, torch.Tensor] = {}
        self.retrieval = _Retrieval(self)
        self.two_stage = _TwoStage(self)

    @property
    def dataset(self) -> Dataset:
        if self._dataset is None:
            raise ValueError("this ModelScorer was built without a dataset")
        return self._dataset

    def _tensor(self, array: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(np.asarray(array)).to(self.device)

    @torch.no_grad()
    def encode(self, history: np.ndarray, features: np.ndarray) -> torch.Tensor:
        """Last user state (B, d) for left-padded histories (B, L)."""
        states, _ = self.model.encode_history(self._tensor(history), self._tensor(features))
        return states[:, -1]

    def states(self, users: np.ndarray, stage: str) -> torch.Tensor:
        if stage not in self._states:
            known = np.arange(self.dataset.num_users) if self._users is None else self._users
            chunks = [
                self.encode(*self.inputs(known[i : i + self.batch_size], stage))
                for i in range(0, len(known), self.batch_size)
            ]
            self._row = np.full(self.dataset.num_users, -1)
            self._row[known] = np.arange(len(known))
            self._states[stage] = torch.cat(chunks)
        rows = self._row[np.asarray(users)]
        if (rows < 0).any():
            raise ValueError("user outside the scorer's users")
        return self._states[stage][self._tensor(rows)]

    def inputs(self, users: np.ndarray, stage: str) -> tuple[np.ndarray, np.ndarray]:
        return (
            eval_histories(self.dataset, users, stage, self.max_len),
            feature_matrix(self.dataset, users),
        )

    @torch.no_grad()
    def retrieval_scores(self, states: torch.Tensor) -> np.ndarray:
        scores = (states @ self.items.T * self.model.scale + self.item_bias).double().cpu().numpy()
        scores[:, 0] = -np.inf
        return scores

    @torch.no_grad()
    def rank(
        self, states: torch.Tensor, history: np.ndarray, features: np.ndarray, items: np.ndarray
    ) -> np.ndarray:
        """Ranker logits (B, C) for candidate items (B, C)."""
        h = self._tensor(history)
        seq = self.items[h]  # in eval mode the item tower is a pure lookup
        user = self.model.user_token(self._tensor(features))
        logits = self.model.rank_logits(
            states[:, None], seq, (h > 0)[:, None, :], user, self._tensor(items)[:, None, :]
        )
        return logits[:, 0].double().cpu().numpy()

    def recommend_scores(
        self, states: torch.Tensor, history: np.ndarray, features: np.ndarray, seen: np.ndarray
    ) -> np.ndarray:
        """(B, I+1): re-ranked top-N first, then the rest in retrieval order; seen items -inf."""
        scores = self.retrieval_scores(states)
        scores[seen] = -np.inf
        n = min(self.top_n, scores.shape[1] - 1)
        top = np.argpartition(-scores, n - 1, axis=1)[:, :n]
        logits = self.rank(states, history, features, top)
        finite = np.isfinite(np.take_along_axis(scores, top, axis=1))
        np.put_along_axis(scores, top, np.where(finite, RERANKED_OFFSET + logits, -np.inf), axis=1)
        return scores


    def recommend(
        self, history: np.ndarray, features: np.ndarray, k: int = 10, state: torch.Tensor | None = None
    ) -> list[tuple[int, float]]:
        """Top-k (item index, score) for one history of item indices, seen items left out.

        Scores are the ranker's logits for the re-ranked top-N, retrieval logits beyond it.
        `state`: the history's user state (1, d) when already known (a service keeps its known
        users'), which skips the transformer pass."""
        padded = left_pad([np.asarray(history)], self.max_len)
        feats = np.asarray(features, dtype=np.int64)[None]
        seen = np.zeros((1, self.items.shape[0]), dtype=bool)
        seen[0, np.asarray(history, dtype=np.int64)] = True
        states = self.encode(padded, feats) if state is None else state
        # The ranker masks padding out, so it reads only the columns the history fills: the same
        # logits, without attending over up to max_len empty positions.
        used = padded[:, self.max_len - min(max(len(history), 1), self.max_len) :]
        scores = self.recommend_scores(states, used, feats, seen)[0]
        # The k best without sorting the catalog: a full argsort costs ~100 ms at 1M items.
        k = min(k, len(scores))
        top = np.argpartition(-scores, k - 1)[:k]
        top = top[np.lexsort((top, -scores[top]))]  # by score, ties by item index (stable order)
        top = top[np.isfinite(scores[top])]
        return [(int(i), float(s - RERANKED_OFFSET if s > RERANKED_OFFSET / 2 else s))
                for i, s in zip(top, scores[top])]  # fmt: skip


class _Retrieval:
    def __init__(self, scorer: ModelScorer) -> None:
        self.s = scorer

    def score_all(self, users: np.ndarray, stage: str) -> np.ndarray:
        return self.s.retrieval_scores(self.s.states(users, stage))

    def score_candidates(self, users: np.ndarray, items: np.ndarray, stage: str) -> np.ndarray:
        return np.take_along_axis(self.score_all(users, stage), items, axis=1)


class _TwoStage:
    def __init__(self, scorer: ModelScorer) -> None:
        self.s = scorer

    def score_all(self, users: np.ndarray, stage: str) -> np.ndarray:
        history, features = self.s.inputs(users, stage)
        seen = seen_mask(self.s.dataset, users, stage)
        return self.s.recommend_scores(self.s.states(users, stage), history, features, seen)

    def score_candidates(self, users: np.ndarray, items: np.ndarray, stage: str) -> np.ndarray:
        return self.s.rank(self.s.states(users, stage), *self.s.inputs(users, stage), items)
