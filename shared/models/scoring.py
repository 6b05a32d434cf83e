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
            self.ranker = CatalogRanker(model, self.items)
        # The terms beside the towers (shared/models/score_terms.py), when the model has any: the
        # consented users' co-occurrences, the public text's neighbours; in every score,
        # retrieval and ranking, read from each user's last items.
        self.terms = model.score_terms()
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

    def recent_items(self, users: np.ndarray, stage: str, count: int) -> np.ndarray:
        """(B, count) each user's last `count` items before `stage`, left-padded with 0, without
        padding whole histories."""
        return left_pad([self.dataset.history(int(u), stage)[-count:] for u in users], count)

    @torch.no_grad()
    def retrieval_scores(self, states: torch.Tensor, history: np.ndarray | None = None) -> np.ndarray:
        """(B, I+1); `history` (B, L) left-padded: each row's last items, for the score terms."""
        scores = (states @ self.items.T * self.model.scale + self.item_bias).double().cpu().numpy()
        if self.terms is not None and history is not None:
            scores += self.terms.rows(history)
        scores[:, 0] = -np.inf
        return scores

    @torch.no_grad()
    def rank(
        self, states: torch.Tensor, history: np.ndarray, features: np.ndarray, items: np.ndarray
    ) -> np.ndarray:
        """Ranker logits (B, C) for candidate items (B, C)."""
        h = self._tensor(history)
        user = self.model.user_token(self._tensor(features))
        logits = self.ranker(states, h, user, self._tensor(items)).double().cpu().numpy()
        if self.terms is not None:  # the ranker is residual on retrieval's score: keep the terms
            logits += self.terms.pairs(history, items)
        return logits

    def recommend_scores(
        self, states: torch.Tensor, history: np.ndarray, features: np.ndarray, seen: np.ndarray
    ) -> np.ndarray:
        """(B, I+1): re-ranked top-N first, then the rest in retrieval order; seen items -inf."""
        scores = self.retrieval_scores(states, history)
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
        return self.recommend_many([history], np.asarray(features)[None], [k], state)[0]

    @torch.no_grad()
    def recommend_many(
        self, histories: list[np.ndarray], features: np.ndarray, ks: list[int], states: torch.Tensor | None = None
    ) -> list[list[tuple[int, float]]]:
        """`recommend` for B histories at once: one transformer pass (skipped when `states` (B, d)
        are given), one catalog product and one ranker pass for all of them. Each row's answer is
        the one it gets alone: padding is masked out everywhere. features (B, F), ks (B,).

        The order `recommend_scores` gives, without its (B, I+1) matrix: the catalog's scores
        stay a float32 tensor and only each row's best max(N, k) leave it (partitioning a
        million-item row of float64 was most of a request's work at that size)."""
        histories = [np.asarray(h, dtype=np.int64) for h in histories]
        padded = left_pad(histories, self.max_len)
        feats = np.asarray(features, dtype=np.int64).reshape(len(histories), -1)
        states = self.encode(padded, feats) if states is None else states
        scores = states @ self.items.T * self.model.scale + self.item_bias  # (B, I+1)
        if self.terms is not None:
            scores = scores + torch.from_numpy(self.terms.rows(padded)).to(scores.device)
        scores[:, 0] = -torch.inf
        rows = np.repeat(np.arange(len(histories)), [len(h) for h in histories])
        scores[self._tensor(rows), self._tensor(np.concatenate(histories))] = -torch.inf  # seen
        n = min(self.top_n, scores.shape[1] - 1)
        best, order = torch.topk(scores, min(max(n, *ks), scores.shape[1]), dim=1)
        # The ranker masks padding out, so it reads only the columns the longest history fills:
        # the same logits, without attending over up to max_len empty positions.
        used = padded[:, self.max_len - min(max(max(len(h) for h in histories), 1), self.max_len) :]
        logits = self.rank(states, used, feats, order[:, :n].numpy())
        best, order = best.double().numpy(), order.numpy()
        return [_ordered(order[row], best[row], logits[row], k) for row, k in enumerate(ks)]


def _ordered(items: np.ndarray, retrieval: np.ndarray, logits: np.ndarray, k: int) -> list[tuple[int, float]]:
    """One row's top-k (item index, score): its N re-ranked items by ranker logit, then the
    rest by retrieval score, each by score and ties by item index; seen items (-inf) left out.
    items, retrieval (>= N,): the row's best by retrieval; logits (N,): the first N's."""
    n = len(logits)
    ranked, rest = (items[:n], logits), (items[n:], retrieval[n:])
    keep = np.isfinite(retrieval[:n])  # a seen item among the N re-ranked stays out
    ranked = (ranked[0][keep], ranked[1][keep])
    out: list[tuple[int, float]] = []
    for ids, values in (ranked, rest):
        finite = np.isfinite(values)
        ids, values = ids[finite], values[finite]
        by = np.lexsort((ids, -values))[: k - len(out)]  # Python objects for the k kept only
        out += [(int(i), float(v)) for i, v in zip(ids[by], values[by])]
        if len(out) >= k:
            break
    return out


class CatalogRanker:
    """`Recommender.rank_logits` over a fixed catalog, in eval mode, for one query per user: the
    same logits, with what depends on the item alone or on the user alone computed once.

    In eval mode the item tower is a lookup in the catalog's vectors. And the ranker MLP's first
    layer is linear in its input's parts [h, c, h*c, a, side_c, u, h-a] (rank_logits' order), so
        W x + b = (W_h + W_{h-a}) h + W_u u + b      once per user,
                + W_c c + W_side side_c              once per catalog item (a table),
                + W_{h*c} (h*c) + (W_a - W_{h-a}) a  per candidate:
    two d x 2d products per candidate instead of one 7d x 2d, and no concatenation. That product
    was most of a /recommend request's work. Past TABLE_MAX_ITEMS the per-item part is computed
    for the candidates instead (a million items' table would be 512 MiB). The layers after the
    first are the model's own. tests/test_serving_batch.py holds it to rank_logits."""

    TABLE_MAX_ITEMS = 1 << 18  # the per-item part as a table up to here (128 MiB at d=64)

    @torch.no_grad()
    def __init__(self, model: Recommender, items: torch.Tensor) -> None:
        """`items` (I+1, d): the catalog's item vectors, model.catalog_vectors()."""
        self.model, self.items = model, items
        d, first = model.dim, model.rank_mlp[0]
        all_items = torch.arange(items.shape[0], device=items.device)
        side = model.side_vectors(all_items) if items.shape[0] <= self.TABLE_MAX_ITEMS else None
        has_side = model.genre_proj is not None or model.year_emb is not None
        blocks = first.weight.split(d, dim=1)
        if len(blocks) != 6 + has_side:
            raise ValueError(f"the ranker's first layer reads {len(blocks)} parts, CatalogRanker knows {6 + has_side}")
        w_h, w_c, w_hc, w_a, *rest = blocks
        w_side, w_u, w_d = rest if has_side else (None, *rest)
        self.w_state, self.w_user, self.b = (w_h + w_d).T.contiguous(), w_u.T.contiguous(), first.bias
        self.w_hc, self.w_att = w_hc.T.contiguous(), (w_a - w_d).T.contiguous()
        self.w_item, self.w_side = w_c.T.contiguous(), None if w_side is None else w_side.T.contiguous()
        self.table = None  # (I+1, 2d): W_c c + W_side side_c for every item, when small enough
        if items.shape[0] <= self.TABLE_MAX_ITEMS:
            self.table = self._item_part(items, side)
        self.rest = model.rank_mlp[1:]  # GELU, dropout (off in eval), and the layers after

    def _item_part(self, vectors: torch.Tensor, side: torch.Tensor | None) -> torch.Tensor:
        part = vectors @ self.w_item
        return part if side is None or self.w_side is None else part + side @ self.w_side

    @torch.no_grad()
    def __call__(
        self, states: torch.Tensor, history: torch.Tensor, user: torch.Tensor, candidates: torch.Tensor
    ) -> torch.Tensor:
        """states (B, d), history (B, L) item ids (0: padding), user (B, d) the side-feature
        token, candidates (B, C) item ids -> logits (B, C)."""
        cand, seq = self.items[candidates], self.items[history]  # (B, C, d), (B, L, d)
        attn = torch.bmm(cand, seq.transpose(1, 2)) / self.model.dim**0.5  # (B, C, L)
        attn = attn.masked_fill(~(history > 0)[:, None, :], float("-inf"))
        weights = torch.nan_to_num(torch.softmax(attn, dim=-1))  # no history: zeros
        attended = torch.bmm(weights, seq)  # (B, C, d)
        hc = states[:, None] * cand
        if self.table is not None:
            item = self.table[candidates]
        else:
            item = self._item_part(cand, self.model.side_vectors(candidates))
        per_user = torch.addmm(self.b, states, self.w_state).addmm_(user, self.w_user)  # (B, 2d)
        x = item.add_(per_user[:, None]).add_(hc @ self.w_hc).add_(attended @ self.w_att)  # (B, C, 2d)
        # Residual on the retrieval logit, as in rank_logits.
        retrieval = self.model.retrieval_logits(states[:, None], cand)
        return retrieval + self.model.bias(candidates) + self.rest(x).squeeze(-1)


class _Retrieval:
    def __init__(self, scorer: ModelScorer) -> None:
        self.s = scorer

    def score_all(self, users: np.ndarray, stage: str) -> np.ndarray:
        t = self.s.terms
        # No more than the model reads: the ranker's term sees the last max_len items too.
        recent = None if t is None else self.s.recent_items(users, stage, min(t.recent, self.s.max_len))
        return self.s.retrieval_scores(self.s.states(users, stage), recent)

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
