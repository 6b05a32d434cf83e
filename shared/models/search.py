"""Search: a text query against the catalog's item texts, personalised when a user is known.

    from shared.models.search import Searcher
    searcher = Searcher(Recommender.from_pretrained("outputs/central"))
    searcher.search("Toy Story", k=5)                              # text alone
    searcher.search("space adventure", k=10, history=[...], features=...)   # personalised

Retrieval: all-MiniLM-L6-v2 encodes the query the way the item texts were encoded (mean-pooled,
L2-normalised), and every item is scored by the cosine of the query with its text embedding,
the checkpoint's `text` buffer. The model's weights play no part: the query and the item texts
meet in MiniLM's space, so search works on any checkpoint trained with item text.

Personalisation, when a user (a history, with side features when known) is given: the
CANDIDATES items closest to the query are re-scored by the user's two-stage model, the ranker's
logit for the item (what `fedrec recommend` ranks by, through ModelScorer). Both scores are
standardised over those candidates (z-scores: mean 0, standard deviation 1) and added,

    score = z(text) + weight * z(personal),    weight = PERSONAL_WEIGHT = 0.3 by default,

so a candidate gains at most about `weight` standard deviations of text similarity from the
user's taste: the query dominates (an item the query names exactly stays first), and among
near-equal matches ('Star Trek', 'a film about dragons') the user's taste decides. Items the
user has seen are not left out: a person may search for a film they know.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from shared.errors import FedrecError
from shared.models.batches import left_pad
from shared.models.recommender import Recommender
from shared.models.scoring import ModelScorer
from shared.models.search_defaults import CANDIDATES, PERSONAL_WEIGHT
from shared.models.text_encoder import MAX_TEXT_TOKENS, load_text_model, mean_pool


@dataclass(frozen=True)
class SearchHit:
    item_id: str
    title: str
    score: float  # what the results are ordered by: the text cosine, or the blend above
    text_score: float  # cosine of the query with the item's text, in [-1, 1]
    personal_score: float | None  # the ranker's logit for this user; None without a user


class QueryEncoder:
    """MiniLM, loaded once, for short query texts; the same pooling as the item texts."""

    def __init__(self) -> None:
        self.model, self.tokenizer = load_text_model()
        self.model.eval()

    @torch.inference_mode()
    def encode(self, queries: list[str]) -> torch.Tensor:
        """(Q, 384) L2-normalised query vectors."""
        tokens = self.tokenizer(queries, padding=True, truncation=True, max_length=MAX_TEXT_TOKENS,
                                return_tensors="pt")  # type: ignore[operator]  # fmt: skip
        hidden = self.model(**tokens).last_hidden_state
        return torch.nn.functional.normalize(mean_pool(hidden, tokens["attention_mask"]), dim=-1)


def zscore(x: np.ndarray) -> np.ndarray:
    """(x - mean) / std, all zeros when x does not vary (one candidate, equal scores)."""
    std = float(x.std())
    return (x - x.mean()) / std if std > 1e-12 else np.zeros_like(x)


class Searcher:
    """A checkpoint's catalog, searchable by text. `scorer`: a ModelScorer to share (a service
    holds one); built here when not given."""

    def __init__(
        self, model: Recommender, scorer: ModelScorer | None = None, weight: float = PERSONAL_WEIGHT,
        candidates: int = CANDIDATES, encoder: QueryEncoder | None = None,
    ) -> None:  # fmt: skip
        if weight < 0:
            raise FedrecError(f"--weight must be at least 0, got {weight}")
        self.model = model
        self.text = model.text.detach().cpu()  # (I+1, 384); row 0 (padding) is zeros
        if not bool(self.text[1:].abs().sum() > 0):
            raise FedrecError("this checkpoint holds no item text embeddings (trained without item text): "
                              "search needs them")  # fmt: skip
        self.scorer = scorer
        self.weight = weight
        self.candidates = candidates
        self._encoder = encoder
        self.catalog, self.titles = model.config["catalog"], model.config["titles"]

    @property
    def encoder(self) -> QueryEncoder:
        if self._encoder is None:
            self._encoder = QueryEncoder()
        return self._encoder

    @torch.inference_mode()
    def text_scores(self, queries: list[str]) -> np.ndarray:
        """(Q, I+1) cosine of each query with every item text; column 0 (padding) is -inf."""
        cleaned = [q.strip() for q in queries]
        if not all(cleaned):
            raise FedrecError("search: the query is empty")
        scores = (self.encoder.encode(cleaned) @ self.text.T).double().numpy()
        scores[:, 0] = -np.inf
        return scores

    @torch.inference_mode()
    def personal_scores(self, history: np.ndarray, features: np.ndarray, items: np.ndarray) -> np.ndarray:
        """The ranker's logits for `items` given one user's history (item indices, oldest first)
        and side-feature codes: the score `fedrec recommend` ranks the user's items by."""
        if self.scorer is None:
            self.scorer = ModelScorer(self.model)
        padded = left_pad([np.asarray(history)], self.scorer.max_len)
        feats = np.asarray(features, dtype=np.int64)[None]
        states = self.scorer.encode(padded, feats)
        return self.scorer.rank(states, padded, feats, np.asarray(items)[None])[0]

    def search(
        self, query: str, k: int = 10, history: np.ndarray | None = None, features: np.ndarray | None = None
    ) -> list[SearchHit]:
        """The k best items for `query`; personalised when `history` is given (see the module)."""
        if k < 1:
            raise FedrecError(f"-k must be at least 1, got {k}")
        text = self.text_scores([query])[0]
        if history is None or not len(history):
            top = _top(text, k)
            return [SearchHit(self.catalog[i - 1], self.titles[i - 1], float(text[i]), float(text[i]), None)
                    for i in top]  # fmt: skip
        pool = _top(text, max(k, self.candidates))
        if features is None:
            features = np.zeros(len(self.model.config["feature_sizes"]), dtype=np.int64)
        personal = self.personal_scores(history, features, pool)
        blend = zscore(text[pool]) + self.weight * zscore(personal)
        order = np.lexsort((pool, -blend))[:k]  # by blended score, ties by item index
        return [SearchHit(self.catalog[pool[j] - 1], self.titles[pool[j] - 1], float(blend[j]),
                          float(text[pool[j]]), float(personal[j])) for j in order]  # fmt: skip


def _top(scores: np.ndarray, k: int) -> np.ndarray:
    """Indices of the k highest finite scores, best first, ties by index; no full sort."""
    k = min(k, int(np.isfinite(scores).sum()))
    top = np.argpartition(-scores, k - 1)[:k]
    return top[np.lexsort((top, -scores[top]))]
