"""Why an item was recommended: which history items and which user side features drove its score.

    from shared.models.explain import Explainer
    Explainer(model).explain(history, features, items=[12, 40])

The method is Integrated Gradients (Sundararajan et al. 2017, through Captum): the score is
integrated along a straight path from a baseline to the user's actual inputs, and each input
receives its share of `score(input) - score(baseline)`; the shares add up to that difference
(completeness), which a `gap` reports the numerical error of. The inputs are:

- the history item vectors (the item tower's output for each item the user read, L x d), one
  attribution per history item (its d components summed);
- the user side-feature embeddings (age, gender, occupation, region: one d-vector each, summed
  into the token that starts the history), one attribution per feature.

The baseline is zero for both: no item vector, no side-feature term (the learned start token
`bos` stays). The score explained is the ranker's logit for the item, the score `fedrec
recommend` orders its top items by. The candidate item's own vector and side features (genres,
year) are held fixed: the explanation is about this user, not about the item. A model with terms
beside the towers (shared/models/score_terms.py: the consented users' co-occurrences, the public
text's neighbours) adds them to the score; they are read from the last history items, and each
item's part of them is attributed to it whole.

`score_from_vectors` re-traces `Recommender.encode_history` then `rank_logits` from the vectors
instead of the item ids, with the model's own modules; it does not change the model's math, and
tests/test_explain.py checks it reproduces ModelScorer's scores. Faithfulness is checked by a
deletion test (simulations/explain_deletion.py): taking out a user's top-attributed history
items must lower the item's score more than taking out as many random ones.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from captum.attr import IntegratedGradients

from shared.models.batches import left_pad
from shared.models.recommender import Recommender
from shared.models.scoring import ModelScorer

STEPS = 32  # integration steps: the completeness gap is a few % of the score at this count


@dataclass(frozen=True)
class Explanation:
    item: int  # item index (1-based)
    score: float  # the ranker's logit for the item
    history: list[tuple[int, float]]  # (history item index, attribution), in history order
    features: list[tuple[str, float]]  # (feature name, attribution), in the model's order
    gap: float  # score - baseline score - sum of attributions: IG's numerical error

    def top_history(self, n: int) -> list[tuple[int, float]]:
        """The n history items that pushed the score up most, largest first."""
        ranked = sorted(self.history, key=lambda pair: -pair[1])
        return [pair for pair in ranked[:n] if pair[1] > 0]


class Explainer:
    def __init__(self, model: Recommender, scorer: ModelScorer | None = None, steps: int = STEPS) -> None:
        self.model = model.eval()
        self.scorer = scorer if scorer is not None else ModelScorer(model)
        self.max_len = self.scorer.max_len
        self.steps = steps
        self.feature_names = list(model.user_features)

    def score_from_vectors(self, seq: torch.Tensor, feats: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        """Ranker logits (B, C) from history vectors seq (B, L, d) with no padding, side-feature
        embeddings feats (B, F, d) and candidate items (B, C): what `encode_history` and
        `rank_logits` compute from ids, in eval mode (dropout off)."""
        m = self.model
        b, length, _ = seq.shape
        device = seq.device
        user = m.bos(torch.zeros(b, dtype=torch.long, device=device)) + feats.sum(1)
        tokens = torch.cat([user[:, None], seq], dim=1)
        # The user token at 0; the items where a left-padded history of max_len puts them, as
        # encode_history numbers them (the last item at max_len).
        positions = torch.cat([torch.zeros(1, dtype=torch.long, device=device),
                               torch.arange(self.max_len - length + 1, self.max_len + 1, device=device)]).expand(b, -1)  # fmt: skip
        states = m.encoder(inputs_embeds=tokens, attention_mask=torch.ones_like(positions),
                           position_ids=positions, token_type_ids=torch.zeros_like(positions)).last_hidden_state  # fmt: skip
        visible = torch.ones(b, 1, length, dtype=torch.bool, device=device)
        return m.rank_logits(states[:, -1:], seq, visible, user, items[:, None, :])[:, 0]

    def inputs(self, history: np.ndarray, features: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        """(1, L, d) history vectors of the last max_len items, (1, F, d) feature embeddings."""
        device = self.scorer.items.device
        h = torch.as_tensor(np.asarray(history, dtype=np.int64)[-self.max_len :], device=device)[None]
        f = torch.as_tensor(np.asarray(features, dtype=np.int64), device=device)[None]
        with torch.no_grad():
            seq = self.scorer.items[h]  # the item tower's vectors, as ModelScorer.rank reads them
            embs = [self.model.user_features[name](f[:, k]) for k, name in enumerate(self.feature_names)]
            feats = torch.stack(embs, dim=1) if embs else torch.zeros(1, 0, self.model.dim, device=device)
        return seq, feats

    def explain(self, history: np.ndarray, features: np.ndarray, items: list[int]) -> list[Explanation]:
        """One Explanation per item, for a user with this history (item indices, oldest first;
        only the last max_len are read, as the model does) and side-feature codes."""
        history = np.asarray(history, dtype=np.int64)[-self.max_len :]
        seq, feats = self.inputs(history, features)
        out = []
        for item in items:
            target = torch.tensor([[int(item)]], device=seq.device)

            def forward(s: torch.Tensor, f: torch.Tensor, target: torch.Tensor = target) -> torch.Tensor:
                return self.score_from_vectors(s, f, target.expand(s.shape[0], -1))[:, 0]

            ig = IntegratedGradients(forward)
            with torch.enable_grad():
                (a_seq, a_feat), delta = ig.attribute(
                    (seq, feats), baselines=(torch.zeros_like(seq), torch.zeros_like(feats)),
                    n_steps=self.steps, return_convergence_delta=True,
                )  # fmt: skip
            with torch.no_grad():
                score = float(forward(seq, feats))
            per_item = a_seq[0].sum(-1).tolist()
            per_feature = a_feat[0].sum(-1).tolist()
            if self.scorer.terms is not None and len(history):
                # The terms beside the towers are read from the last history items: each item
                # gets its part of them (score_terms.py), and completeness holds as before.
                shares = self.scorer.terms.shares(history, int(item))
                score = score + float(shares.sum())
                per_item = [a + float(t) for a, t in zip(per_item, shares)]
            out.append(Explanation(int(item), score, list(zip(history.tolist(), per_item)),
                                   list(zip(self.feature_names, per_feature)), float(delta[0])))  # fmt: skip
        return out


def as_dict(e: Explanation, catalog: list[str], titles: list[str], feature_values: list[str], top: int) -> dict:
    """An Explanation as JSON: the `top` history items that raised the score most, every side
    feature with its value, and the completeness gap."""
    return {
        "item_id": catalog[e.item - 1], "title": titles[e.item - 1], "score": e.score,
        "history": [{"item_id": catalog[i - 1], "title": titles[i - 1], "attribution": a} for i, a in e.top_history(top)],
        "features": [{"name": n, "value": v, "attribution": a} for (n, a), v in zip(e.features, feature_values)],
        "gap": e.gap,
    }  # fmt: skip


def scores_without(
    scorer: ModelScorer, history: np.ndarray, features: np.ndarray, item: int, removals: list[np.ndarray]
) -> np.ndarray:
    """The item's ranker logit, through ModelScorer (the model's own scoring path), for the
    history with each of `removals` (positions into `history`) taken out: (len(removals),)."""
    rows = [np.delete(history, r) for r in removals]
    padded = left_pad(rows, scorer.max_len)
    feats = np.repeat(np.asarray(features, dtype=np.int64)[None], len(rows), axis=0)
    states = scorer.encode(padded, feats)
    return scorer.rank(states, padded, feats, np.full((len(rows), 1), item))[:, 0]
