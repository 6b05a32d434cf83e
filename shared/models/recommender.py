"""The two-stage recommender: retrieval towers and a ranker, in one module, trained jointly.

    item tower   t_i (frozen MiniLM text embedding, 384)  -> W t_i  (+ E_id[i])     -> v_i  (d)
    user tower   [user-feature token, v_x1 .. v_xL]  -> causal BertModel(inputs_embeds) -> h_t (d)
    retrieval    s(t, i) = <h_t, v_i> / sqrt(d)        full-catalog top-N is one matmul
    ranking      s(t, c) + MLP([h_t, v_c, h_t*v_c, attend(v_c; v_x<=t), side_c, user, h_t - attend])
                 side_c = W_g genres_c + E_year[year_c]; a part the catalog has no data for (no
                 genres, no known year) is left out of the model, and side_c with both
    loss         retrieval: next item vs the sequence's uniform negatives, as a sampled softmax
                 (cross-entropy; SASRec+'s lever) or BCE; + BCE(ranking: next item vs hard and
                 random negatives)

Every computation is per sample (batch-first, no tensor shared across examples), which is what
Opacus needs to compute per-sample gradients: the negatives each sequence scores come in with that
sequence rather than from one shared catalog matrix.

The checkpoint is `save_pretrained(dir)` / `from_pretrained(dir)` through huggingface_hub's
`PyTorchModelHubMixin`: config.json plus model.safetensors, the item text embeddings included.
"""

from __future__ import annotations

import contextlib
import io
from typing import Any

import torch
import torch.nn.functional as F
from huggingface_hub import PyTorchModelHubMixin
from safetensors import SafetensorError
from torch import nn
from transformers import BertConfig, BertModel

from shared.errors import FedrecError
from shared.models.score_terms import ScoreTerms
from shared.models.text_encoder import EMBEDDING_DIM as TEXT_DIM  # MiniLM's width, defined there once
from shared.models.text_neighbours import TextNeighbours
from shared.models.transitions import Transitions

FORMAT_VERSION = 1  # bump when a saved checkpoint can no longer be read by this code
USER_FEATURES = ("age", "gender", "occupation", "region")
HARD_NEGATIVE_POOL = 100  # the ranker's hard negatives are drawn from the retrieval top-100
# What trains on top of a pretrained model under `finetune` (the rest is frozen), besides every
# LayerNorm and bias. DP noise grows with the number of trained parameters: the user tower's
# attention and feed-forward weights are most of them ("head" leaves them), then the ranker's
# ("items" leaves those too: on ML-1M, 65k of the head's 99k). "bias" trains the biases, the
# LayerNorms and the per-item bias alone (BitFit; under DP, Bu et al. 2022's DP-BiTFiT): 6k.
ITEM_TOWER_MODULES = ("text_proj", "item_id", "item_norm", "item_bias", "genre_proj", "year_emb")
FINETUNE_MODULES = {"head": (*ITEM_TOWER_MODULES, "rank_mlp"), "items": ITEM_TOWER_MODULES,
                    "bias": ("item_bias", "item_norm")}


def hard_negative_pool(num_items: int) -> int:
    """How many retrieval top items the ranker's hard negatives are drawn from: the batch draws
    its picks (shared.models.batches) and the model searches (ranking_candidates) with this one
    number, so the picks always index into the pool."""
    return min(HARD_NEGATIVE_POOL, num_items - 1)


# The year grid a config without `year_first`/`year_buckets` meant: 5-year buckets from 1915.
LEGACY_YEAR_GRID = (1915, 25)
YEAR_STEP = 5
MAX_YEAR_BUCKETS = 400  # 2,000 years of 5-year buckets; later years share the last one


def year_grid(years: torch.Tensor) -> tuple[int, int] | None:
    """(first year, bucket count) of 5-year buckets covering the catalog's known years (> 0);
    None when no year is known. The grid keeps the legacy 1915..2039 buckets and extends them
    only where the catalog's years fall outside (books from 1600, say): MovieLens models keep
    exactly the buckets, and so the results, they always had, and any catalog is covered."""
    known = years[years > 0]
    if not len(known):
        return None
    legacy_first, legacy_count = LEGACY_YEAR_GRID
    # On the legacy grid's 5-year boundaries, and never later than its start.
    first = min(legacy_first, legacy_first + YEAR_STEP * ((int(known.min()) - legacy_first) // YEAR_STEP))
    count = max(legacy_count, (int(known.max()) - first) // YEAR_STEP + 1)
    return first, min(count, MAX_YEAR_BUCKETS)


def year_buckets(years: torch.Tensor, first: int = LEGACY_YEAR_GRID[0],
                 count: int = LEGACY_YEAR_GRID[1]) -> torch.Tensor:  # fmt: skip
    """Buckets 1..count of YEAR_STEP years from `first` (earlier and later years clamp to the
    ends); 0 for unknown years."""
    bucket = ((years - first).clamp(min=0) // YEAR_STEP + 1).clamp(max=count)
    return torch.where(years > 0, bucket, torch.zeros_like(bucket))


def first_used_column(history: torch.Tensor) -> int:
    """The first column of a left-padded (B, L) batch that some row uses (L - 1 if none does)."""
    used = (history > 0).any(0).nonzero()
    length = history.shape[1]
    return min(int(used[0]) if len(used) else length, length - 1)


class Recommender(nn.Module, PyTorchModelHubMixin):
    def __init__(self, config: dict[str, Any]) -> None:
        super().__init__()
        self.config = config
        # The consented users' transition counts, added to every score when the server counted
        # them (shared/models/transitions.py); not weights: no gradient reaches them.
        self.transitions: Transitions | None = None
        m = config["model"]
        d, n_items = int(m["dim"]), int(config["num_items"])
        self.dim = d
        # A config saved before the loss was a choice was trained with BCE.
        self.retrieval_loss = m.get("retrieval_loss", "bce")

        # Item side data, frozen and saved with the weights so a checkpoint serves on its own.
        # A catalog without genres or without known years has no such buffer (None, not saved)
        # and no ranker part for it. A config without `use_year` predates the flag: it had years.
        num_genres = int(config.get("num_genres") or 0)
        self.use_year = bool(config.get("use_year", True))
        self.year_first = int(config.get("year_first", LEGACY_YEAR_GRID[0]))
        self.year_count = int(config.get("year_buckets", LEGACY_YEAR_GRID[1]))
        self.register_buffer("text", torch.zeros(n_items + 1, TEXT_DIM))
        self.register_buffer("genres", torch.zeros(n_items + 1, num_genres) if num_genres else None)
        self.register_buffer("year", torch.zeros(n_items + 1, dtype=torch.long) if self.use_year else None)

        self.text_proj = nn.Linear(TEXT_DIM, d) if m["use_text"] else None
        # Optional fine-tuning of MiniLM's top layers: items are then encoded from the frozen
        # token states below those layers (a buffer rebuilt from the item texts, not saved).
        finetune = int(m.get("text_finetune_layers", 0))
        self.text_top = None
        if finetune:
            from shared.models.text_encoder import MAX_TOKENS, load_text_model

            minilm, _ = load_text_model(trainable_top_layers=finetune)
            self.text_top = nn.ModuleList(minilm.encoder.layer[-finetune:])
            shape = (n_items + 1, MAX_TOKENS)
            self.register_buffer("text_tokens", torch.zeros(*shape, TEXT_DIM), persistent=False)
            self.register_buffer("text_mask", torch.zeros(*shape, dtype=torch.bool), persistent=False)
        self.item_id = nn.Embedding(n_items + 1, d, padding_idx=0) if m["use_id_embedding"] else None
        # A per-item bias: the popularity prior a text-only item tower cannot express (two films
        # with alike texts can differ 100-fold in how often they are watched). One scalar per
        # item, zero at the start, added to every score of the item.
        self.item_bias = nn.Embedding(n_items + 1, 1) if m.get("use_item_bias", False) else None
        if self.item_bias is not None:
            nn.init.zeros_(self.item_bias.weight)
        self.item_norm = nn.LayerNorm(d)
        # (item tower weights, their catalog vectors): a plain attribute, never saved or moved.
        self._search_cache: tuple[list[torch.Tensor], torch.Tensor] | None = None
        # Listed once, on first use (see trainable_parameters and train): plain attributes too.
        self._trainable: list[nn.Parameter] | None = None
        self._all_modules: tuple[nn.Module, ...] | None = None
        self.dropout = nn.Dropout(float(m["dropout"]))

        # User tower: a prefix token from side features, then the history.
        self.bos = nn.Embedding(1, d)
        sizes = config["feature_sizes"]
        self.user_features = nn.ModuleDict(
            {k: nn.Embedding(int(sizes[k]), d) for k in USER_FEATURES if k in sizes}
        )
        self.encoder = BertModel(
            BertConfig(
                vocab_size=1,  # inputs_embeds only: the word embeddings are never used
                hidden_size=d,
                num_hidden_layers=int(m["num_layers"]),
                num_attention_heads=int(m["num_heads"]),
                intermediate_size=4 * d,
                max_position_embeddings=int(m["max_len"]) + 1,
                hidden_dropout_prob=float(m["dropout"]),
                attention_probs_dropout_prob=float(m["dropout"]),
                is_decoder=True,  # causal: position t sees the history up to t only
                use_cache=False,  # a decoder would otherwise fill a key/value cache nobody reads
            ),
            add_pooling_layer=False,
        )
        self.encoder.embeddings.word_embeddings.requires_grad_(False)

        # Ranker: candidate side features (those the catalog has) and an MLP over the
        # user-candidate interaction; without any side feature its input is one d narrower.
        self.genre_proj = nn.Linear(num_genres, d) if num_genres else None
        self.year_emb = nn.Embedding(self.year_count + 1, d) if self.use_year else None
        inputs = 7 if num_genres or self.use_year else 6
        self.rank_mlp = nn.Sequential(
            nn.Linear(inputs * d, 2 * d), nn.GELU(), nn.Dropout(float(m["dropout"])),
            nn.Linear(2 * d, d), nn.GELU(), nn.Linear(d, 1),
        )  # fmt: skip
        # Zero-initialised output: the ranker starts as the retrieval score and moves away from
        # it only where its extra features help (see rank_logits).
        nn.init.zeros_(self.rank_mlp[-1].weight)
        nn.init.zeros_(self.rank_mlp[-1].bias)
        if (modules := FINETUNE_MODULES.get(m.get("finetune", "all"))) is not None:
            for name, p in self.named_parameters():
                if not (name.startswith(modules) or "LayerNorm" in name or name.endswith(".bias")):
                    p.requires_grad_(False)

    # ------------------------------------------------------------------ bookkeeping

    def trainable_parameters(self) -> list[nn.Parameter]:
        """The parameters that train and travel, in the model's order. Listed once: a one-user
        client needs them several times a message, and each walk of the modules costs ~0.1 ms."""
        if self._trainable is None:
            self._trainable = [p for p in self.parameters() if p.requires_grad]
        return self._trainable

    def train(self, mode: bool = True) -> Recommender:
        """nn.Module.train over a module list taken once. A process that simulates one-user
        clients sets the mode for each one (train, then evaluate), and nn.Module's recursive walk
        costs 0.18 ms each time, a few % of such a client's step. No submodule's train() does
        more than set the flag (BertModel's swaps kernels, which fedrec does not use; then the
        walk runs)."""
        if getattr(self.encoder, "use_kernels", False):
            return super().train(mode)
        if self._all_modules is None:
            self._all_modules = tuple(self.modules())
        for module in self._all_modules:
            object.__setattr__(module, "training", mode)  # nn.Module.__setattr__'s lookups skipped
        return self

    # ------------------------------------------------------------------ towers

    def set_item_side(self, text: torch.Tensor, genres: torch.Tensor, years: torch.Tensor) -> None:
        """text (I+1, 384), genres (I+1, G) multi-hot, years (I+1,) calendar years (0: unknown);
        the parts this model has no buffer for (no genres, no years) are ignored."""
        self.text.copy_(text)
        self._set_text_tokens()
        if self.genres is not None:
            self.genres.copy_(genres)
        if self.year is not None:
            self.year.copy_(year_buckets(years, self.year_first, self.year_count))

    def _set_text_tokens(self) -> None:
        if self.text_top is None:
            return
        from shared.models.text_encoder import token_states

        below = len(self.text_top)
        states, mask = token_states(["", *self.config["item_texts"]], below)
        self.text_tokens.copy_(torch.from_numpy(states))
        self.text_mask.copy_(torch.from_numpy(mask))

    def item_text(self, items: torch.Tensor) -> torch.Tensor:
        """items (...) -> (..., 384): the frozen cached embedding, or the fine-tuned top layers."""
        if self.text_top is None:
            return F.embedding(items, self.text)
        from shared.models.text_encoder import bert_layer, mean_pool

        x, mask = self.text_tokens[items], self.text_mask[items]
        for layer in self.text_top:
            x = bert_layer(layer, x, mask)
        pooled = F.normalize(mean_pool(x, mask), dim=-1)
        return pooled * (items > 0)[..., None]

    def item_vectors(self, items: torch.Tensor) -> torch.Tensor:
        """items (...) int -> (..., d), for any leading shape (one per-sample batch, say)."""
        text = self.item_text(items) if self.text_proj is not None else None
        return self._item_vectors(text, self.item_id(items) if self.item_id is not None else None)

    def catalog_vectors(self) -> torch.Tensor:
        """(I+1, d): every item's vector, row 0 the padding item; item_vectors(arange(I+1))
        without gathering the whole text table first."""
        text = None
        if self.text_proj is not None:
            all_items = torch.arange(self.text.shape[0], device=self.text.device)
            text = self.text if self.text_top is None else self.item_text(all_items)
        return self._item_vectors(text, self.item_id.weight if self.item_id is not None else None)

    @torch.no_grad()
    def search_catalog(self) -> torch.Tensor:
        """catalog_vectors() as eval mode gives them, for a no-grad search (training's hard
        negatives), reused while the item tower's weights are what they were: every client of a
        round starts from the same global weights, so a process that simulates many one-step
        clients projects the catalog once a round instead of once a client. Only fine-tuned
        MiniLM layers have dropout in the item tower; with them, the search runs in eval mode."""
        if self.training and self.text_top is not None:
            self.eval()
            try:
                return self.search_catalog()
            finally:
                self.train()
        tower = [p for m in (self.text_proj, self.item_id, self.item_norm, self.text_top) if m is not None
                 for p in m.parameters()]  # fmt: skip
        cached = self._search_cache
        if cached is not None and cached[1].device == self.text.device and all(map(torch.equal, cached[0], tower)):
            return cached[1]
        vectors = self.catalog_vectors()
        self._search_cache = ([p.detach().clone() for p in tower], vectors)
        return vectors

    def _item_vectors(self, text: torch.Tensor | None, ids: torch.Tensor | None) -> torch.Tensor:
        """LayerNorm(W t + E_id) from the rows' text embeddings and ID embeddings (either absent)."""
        if text is None:
            assert ids is not None  # ModelConfig refuses an item tower with neither
            return self.item_norm(ids)
        vec = self.text_proj(text)
        return self.item_norm(vec if ids is None else vec + ids)

    def user_token(self, features: torch.Tensor) -> torch.Tensor:
        """features (B, F) int codes in USER_FEATURES order (absent ones dropped) -> (B, d)."""
        token = self.bos(features.new_zeros(features.shape[0]))
        for k, name in enumerate(self.user_features):
            token = token + self.user_features[name](features[:, k])
        return token

    def encode_history(
        self, history: torch.Tensor, features: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """history (B, L) left-padded item ids -> states (B, L, d), history vectors (B, L, d).

        states[:, t] has read history[:, :t+1] and predicts the item that follows it.
        """
        b, length = history.shape
        # Left padding is masked out, so the item tower and the encoder only need the columns
        # some row uses, at the positions they have at full length: the same states, for a
        # fraction of the work when histories are short (one user's client, light users). The
        # padding columns' vectors are zeros; every reader masks them (see rank_logits).
        start = first_used_column(history)
        seq = self.item_vectors(history[:, start:])
        tokens = torch.cat([self.user_token(features)[:, None], seq], dim=1)
        mask = torch.cat([torch.ones_like(history[:, :1]), (history[:, start:] > 0).long()], dim=1)
        # Explicit (B, L) ids: Hugging Face's [1, L] buffers break Opacus (issue 841).
        positions = torch.cat([torch.zeros(1, dtype=torch.long, device=history.device),
                               torch.arange(start + 1, length + 1, device=history.device)]).expand(b, -1)  # fmt: skip
        out = self.encoder(
            inputs_embeds=self.dropout(tokens),
            attention_mask=mask,
            position_ids=positions,
            token_type_ids=torch.zeros_like(positions),
        ).last_hidden_state
        return F.pad(out[:, 1:], (0, 0, start, 0)), F.pad(seq, (0, 0, start, 0))

    @property
    def scale(self) -> float:
        # Both sides are layer-normalised (norm ~ sqrt(d)); without this the logits start at
        # +-d and BCE saturates before anything is learned.
        return self.dim**-0.5

    def retrieval_logits(self, states: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        """<h, v> / sqrt(d) over the last axis: states (..., d), items (..., d) -> (...)."""
        return (states * items).sum(-1) * self.scale

    def score_terms(self, with_transitions: bool = True) -> ScoreTerms | None:
        """The terms beside the towers this model scores with (shared/models/score_terms.py):
        the consented users' co-occurrences when the server counted them (and
        `with_transitions`: a study or tuning that tries its own table leaves them out), the
        public text's neighbours when `text_neighbours` weighs them; None when neither."""
        weight = float(self.config["model"].get("text_neighbours", 0.0))
        text = TextNeighbours(self.text.detach().cpu().numpy(), weight) if weight > 0 else None
        return ScoreTerms.of(self.transitions if with_transitions else None, text)

    def bias(self, items: torch.Tensor) -> torch.Tensor | float:
        """items (...) int -> (...): the items' popularity prior, or 0 without one. Outside
        training it weighs `item_bias_weight`: a model whose towers learnt under DP noise scores
        better leaning on the prior than on them (simulations/results/text_neighbours.md), and
        the weight is chosen after training, on validation items, like `text_neighbours`."""
        if self.item_bias is None:
            return 0.0
        weight = 1.0 if self.training else float(self.config["model"].get("item_bias_weight", 1.0))
        return self.item_bias(items).squeeze(-1) * weight

    # ------------------------------------------------------------------ ranker

    def side_vectors(self, candidates: torch.Tensor) -> torch.Tensor | None:
        """candidates (...) -> (..., d): the genre and year terms the catalog has; None if none."""
        side = None
        if self.genre_proj is not None:
            side = self.genre_proj(F.embedding(candidates, self.genres))
        if self.year_emb is not None:
            year = self.year_emb(self.year[candidates])
            side = year if side is None else side + year
        return side

    def rank_logits(
        self,
        states: torch.Tensor,
        history_vecs: torch.Tensor,
        visible: torch.Tensor,
        user: torch.Tensor,
        candidates: torch.Tensor,
    ) -> torch.Tensor:
        """Score candidates for R query positions per sample.

        states (B, R, d)   the user state at each query position
        history_vecs (B, L, d), visible (B, R, L) bool: which history items each query may attend
        user (B, d)        the side-feature token
        candidates (B, R, C) item ids -> logits (B, R, C)
        """
        cand = self.item_vectors(candidates)  # (B, R, C, d)
        attn = torch.einsum("brcd,bld->brcl", cand, history_vecs) / self.dim**0.5
        attn = attn.masked_fill(~visible[:, :, None, :], float("-inf"))
        weights = torch.nan_to_num(torch.softmax(attn, dim=-1))  # a query with no history: zeros
        attended = torch.einsum("brcl,bld->brcd", weights, history_vecs)
        h = states[:, :, None].expand_as(cand)
        side = self.side_vectors(candidates)
        u = user[:, None, None].expand_as(cand)
        parts = [h, cand, h * cand, attended, *([] if side is None else [side]), u, h - attended]
        x = torch.cat(parts, dim=-1)
        # Residual on the retrieval logit: the ranker starts exactly as good as retrieval and
        # learns what the richer features add, instead of re-learning the dot product.
        return self.retrieval_logits(h, cand) + self.bias(candidates) + self.rank_mlp(x).squeeze(-1)

    # ------------------------------------------------------------------ training

    def forward(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """The joint loss for one per-sample batch (see `shared.models.batches`).

        history (B, L), targets (B, L), negatives (B, N), features (B, F),
        rank_pos (B, R), rank_valid (B, R), and the ranker's candidates: either rank_items
        (B, R, C) with the positive in column 0, or the draws that pick them from this pass's own
        states (see ranking_candidates): rank_pick (B, R, H), rank_random (B, R, U).
        Returns per-sample losses (B,) so DP-SGD can clip and average them per example.
        """
        states, seq = self.encode_history(batch["history"], batch["features"])
        targets, negatives = batch["targets"], batch["negatives"]
        valid = (targets > 0).float()  # (B, L)

        # Targets are padded like the history they follow: masked by `valid` before `start`.
        start = first_used_column(batch["history"])
        pos = self.retrieval_logits(states[:, start:], self.item_vectors(targets[:, start:]))
        pos = F.pad(pos + self.bias(targets[:, start:]), (start, 0))
        neg = torch.einsum("bld,bnd->bln", states, self.item_vectors(negatives)) * self.scale
        if self.item_bias is not None:
            neg = neg + self.bias(negatives)[:, None, :]
        collide = negatives[:, None, :] == targets[:, :, None]  # a draw that is the target itself
        if self.retrieval_loss == "softmax":
            # Sampled softmax: the target against all of the sequence's uniform draws at once.
            # Uniform draws need no logQ correction (log Q is one constant for every item).
            neg = neg.masked_fill(collide, -torch.inf)
            per_position = torch.logsumexp(torch.cat([pos[..., None], neg], -1), -1) - pos
        else:
            keep = (~collide).float()
            per_position = F.softplus(-pos) + (F.softplus(neg) * keep).sum(-1) / keep.sum(-1).clamp(min=1)
        retrieval = (per_position * valid).sum(1) / valid.sum(1).clamp(min=1)

        rank_pos = batch["rank_pos"]
        idx = rank_pos[:, :, None].expand(-1, -1, self.dim)
        q_states = torch.gather(states, 1, idx)  # (B, R, d)
        length = seq.shape[1]
        visible = (torch.arange(length, device=seq.device)[None, None, :] <= rank_pos[:, :, None]) & (
            batch["history"][:, None, :] > 0
        )
        candidates = batch.get("rank_items")
        if candidates is None:
            candidates = self.ranking_candidates(q_states.detach(), batch)
        logits = self.rank_logits(q_states, seq, visible, self.user_token(batch["features"]), candidates)
        labels = torch.zeros_like(logits)
        labels[:, :, 0] = 1.0
        per_query = F.binary_cross_entropy_with_logits(logits, labels, reduction="none").mean(-1)
        rv = batch["rank_valid"].float()
        ranking = (per_query * rv).sum(1) / rv.sum(1).clamp(min=1)
        return {"loss": retrieval + ranking, "retrieval": retrieval, "ranking": ranking}

    @torch.no_grad()
    def ranking_candidates(self, queries: torch.Tensor, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """(B, R, 1 + H + U): the positive, H hard negatives drawn (batch["rank_pick"]) from the
        retrieval top-100 of `queries` (B, R, d), every item of the sequence excluded, and U
        uniform ones (batch["rank_random"]). The queries are the training pass's own states,
        dropout included: a second, eval-mode encoding of the history for the search cost 9% of
        a centralized ML-1M epoch and ~12% of a one-user client's step, and gave no better
        model (simulations/results/hard-negatives.md). Per sample, as DP-SGD needs."""
        scores = queries @ self.search_catalog().T * self.scale  # (B, R, I+1): retrieval's logits
        if self.item_bias is not None:
            scores = scores + self.item_bias.weight[:, 0].detach()
        scores[..., 0] = -torch.inf
        positives = torch.gather(batch["targets"], 1, batch["rank_pos"])  # (B, R)
        scores.scatter_(2, positives[..., None], -torch.inf)
        # Every item of the sequence is excluded, later ones too: an item the user goes on to
        # watch is not a negative, and labelling it one teaches the ranker to bury true positives.
        for seen in (batch["history"], batch["targets"]):
            scores.scatter_(2, seen[:, None, :].expand(-1, scores.shape[1], -1), -torch.inf)
        top = scores.topk(hard_negative_pool(scores.shape[-1] - 1), dim=-1).indices  # row 0: padding
        hard = torch.gather(top, 2, batch["rank_pick"])
        return torch.cat([positives[..., None], hard, batch["rank_random"]], dim=-1)

    # ------------------------------------------------------------------ checkpoints

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path: Any, **kwargs: Any) -> Recommender:  # type: ignore[override]
        """Load a checkpoint directory, refusing one written by an incompatible version."""
        import json
        from pathlib import Path

        directory = Path(pretrained_model_name_or_path)
        config_file = directory / "config.json"
        if not config_file.is_file():
            raise FedrecError(f"{directory}: not a fedrec checkpoint (no config.json)")
        try:
            config = json.loads(config_file.read_text())
            version = config.get("format_version")
        except (ValueError, AttributeError):
            raise FedrecError(f"{config_file}: corrupt checkpoint config") from None
        if version != FORMAT_VERSION:
            raise FedrecError(
                f"{directory}: checkpoint format {version} cannot be read by this fedrec "
                f"(format {FORMAT_VERSION}); retrain or use a matching fedrec version"
            )
        if not (directory / "model.safetensors").is_file():
            raise FedrecError(f"{directory}: checkpoint has no model.safetensors")
        try:
            # huggingface_hub print()s "Loading weights from local directory"; keep stdout clean
            # for the tables and JSON that commands write there.
            with contextlib.redirect_stdout(io.StringIO()):
                model = super().from_pretrained(directory, local_files_only=True, **kwargs)
        except (RuntimeError, OSError, ValueError, SafetensorError) as err:
            raise FedrecError(f"{directory}: corrupt checkpoint ({str(err).splitlines()[0]})") from None
        model._set_text_tokens()
        model.transitions = Transitions.load(directory)
        return model
