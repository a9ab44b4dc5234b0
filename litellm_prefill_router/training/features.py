"""Prefill features of every layer, mean- and last-token-pooled, cached on disk and resumable.

Prompts are turned into token ids by the runtime's own :class:`PromptEncoder`
(same chat template rendering, same truncation), so training sees exactly the
ids the router will see. The cache lives in one directory per key
(encoder, revision, max tokens, template, dataset content) holding
``features.npy`` (float32 memmap, shape (n, layers + 1, 2, hidden)) and
``done.npy``; an interrupted run continues with the rows not yet done.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import PrefillRouterError
from ..prompt import PromptEncoder
from .encoders import EncoderHandle

logger = logging.getLogger(__name__)

POOLINGS = ("mean", "last")


def prompt_encoder(handle: EncoderHandle, max_tokens: int, head_fraction: float = 0.25) -> PromptEncoder:
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(handle.tokenizer_json))
    tok.no_padding()
    tok.no_truncation()
    return PromptEncoder(tok, chat_template=handle.chat_template, max_tokens=max_tokens, head_fraction=head_fraction,
                         add_generation_prompt=handle.chat_template is not None,
                         add_special_tokens=handle.add_special_tokens, special_tokens=handle.template_vars,
                         pad_token_id=handle.pad_token_id)


def pool_hidden_states(hidden_states: Sequence[Any], attention_mask: Any) -> Any:
    """torch: tuple of (b, s, H) -> (b, layers, 2, H) with mean and last-token pooling (right padding)."""
    import torch

    m = attention_mask.unsqueeze(-1).to(hidden_states[0].dtype)
    denom = m.sum(1).clamp(min=1.0)
    last_idx = (attention_mask.sum(1) - 1).clamp(min=0)
    rows = torch.arange(attention_mask.shape[0])
    out = []
    for h in hidden_states:
        out.append(torch.stack([(h * m).sum(1) / denom, h[rows, last_idx]], dim=1))
    return torch.stack(out, dim=1)


def forward_hidden_states(model: Any, input_ids: Any, attention_mask: Any) -> tuple[Any, ...]:
    out = model(input_ids=input_ids, attention_mask=attention_mask, output_hidden_states=True, use_cache=False) \
        if _accepts_use_cache(model) else \
        model(input_ids=input_ids, attention_mask=attention_mask, output_hidden_states=True)
    return tuple(out.hidden_states)


def _accepts_use_cache(model: Any) -> bool:
    return bool(getattr(model.config, "is_decoder", False) or getattr(model.config, "use_cache", None) is not None)


@dataclass
class FeatureCache:
    directory: Path
    features: np.ndarray  # memmap (n, L+1, 2, H)
    n_tokens: np.ndarray  # (n,) tokens before truncation

    @property
    def num_layers(self) -> int:
        return self.features.shape[1] - 1

    def layer(self, layer: int, pooling: Sequence[str] = POOLINGS, rows: np.ndarray | None = None) -> np.ndarray:
        """(n, len(pooling) * H) float32 features of one layer."""
        idx = [POOLINGS.index(p) for p in pooling]
        block = self.features[:, layer][:, idx] if rows is None else self.features[rows, layer][:, idx]
        return np.asarray(block, dtype=np.float32).reshape(block.shape[0], -1)

    def select(self, layers: Sequence[int], pooling: Sequence[str], rows: np.ndarray | None = None) -> np.ndarray:
        """Features in the encoder graph's output order: for each layer, for each pooling."""
        return np.concatenate([self.layer(l, pooling, rows) for l in layers], axis=1)


def length_batches(lengths: np.ndarray, batch_tokens: int = 8192, max_batch: int = 32) -> list[list[int]]:
    """Row indices grouped longest first, each batch at most ``batch_tokens`` padded tokens and ``max_batch`` rows."""
    batches: list[list[int]] = []
    cur: list[int] = []
    for j in np.argsort(-np.asarray(lengths), kind="stable"):
        width = lengths[cur[0]] if cur else lengths[j]
        if cur and ((len(cur) + 1) * width > batch_tokens or len(cur) >= max_batch):
            batches.append(cur)
            cur = []
        cur.append(int(j))
    if cur:
        batches.append(cur)
    return batches


def padded_batch(rows: Sequence[Sequence[int]], pad_token_id: int) -> tuple[Any, Any]:
    """torch (ids, attention mask) of token-id rows, right-padded to the longest."""
    import torch

    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad_token_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, r in enumerate(rows):
        ids[i, : len(r)] = torch.tensor(list(r), dtype=torch.long)
        mask[i, : len(r)] = 1
    return ids, mask


def cache_key(handle: EncoderHandle, max_tokens: int, head_fraction: float, dataset_hash: str) -> str:
    raw = json.dumps([handle.id, handle.revision, max_tokens, head_fraction, handle.chat_template, dataset_hash,
                      "v1"])
    return hashlib.sha256(raw.encode()).hexdigest()[:16]


def resolve_device(device: str) -> str:
    """``auto``: the first CUDA GPU when torch has one, else the CPU; ``cpu``, ``cuda``, ``cuda:N`` as given, once
    torch can use them. Only feature extraction runs there: export and its checks run on the CPU, as the router
    serves."""
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cpu":
        return device
    if not device.startswith("cuda") or (device != "cuda" and not device[5:].lstrip(":").isdigit()):
        raise PrefillRouterError(f"--device {device!r}: use auto, cpu, cuda or cuda:N")
    if not torch.cuda.is_available():
        raise PrefillRouterError(
            f"--device {device}: torch {torch.__version__} sees no CUDA GPU (the train extra pins a CPU build of "
            "torch; install a CUDA build on a GPU machine), or use --device cpu")
    index = int(device[5:]) if device.startswith("cuda:") else 0
    if index >= torch.cuda.device_count():
        raise PrefillRouterError(f"--device {device}: torch sees {torch.cuda.device_count()} CUDA GPU(s)")
    return device


def extract_features(
    handle: EncoderHandle,
    prompts: Sequence[object],
    *,
    dataset_hash: str,
    cache_dir: Path,
    max_tokens: int = 512,
    head_fraction: float = 0.25,
    batch_tokens: int = 8192,
    max_batch: int = 32,
    progress: bool = True,
    device: str = "cpu",
) -> FeatureCache:
    """Pooled hidden states of every layer for every prompt, cached (see :class:`FeatureCache`); computed on
    ``device`` (:func:`resolve_device`), the model moved back to the CPU afterwards."""
    import torch
    from tqdm.auto import tqdm

    key = cache_key(handle, max_tokens, head_fraction, dataset_hash)
    d = Path(cache_dir) / key
    d.mkdir(parents=True, exist_ok=True)
    n, L, H = len(prompts), handle.num_hidden_layers, handle.hidden_size
    shape = (n, L + 1, 2, H)
    meta = {"encoder": handle.id, "revision": handle.revision, "max_tokens": max_tokens, "shape": list(shape),
            "dataset_hash": dataset_hash, "head_fraction": head_fraction}
    fpath, dpath, tpath = d / "features.npy", d / "done.npy", d / "n_tokens.npy"
    if fpath.exists() and (d / "meta.json").exists() and json.loads((d / "meta.json").read_text()) == meta:
        feats = np.lib.format.open_memmap(fpath, mode="r+")
        done = np.load(dpath) if dpath.exists() else np.zeros(n, dtype=bool)
        ntok = np.load(tpath) if tpath.exists() else np.zeros(n, dtype=np.int64)
    else:
        (d / "meta.json").write_text(json.dumps(meta))
        feats = np.lib.format.open_memmap(fpath, mode="w+", dtype=np.float32, shape=shape)
        done = np.zeros(n, dtype=bool)
        ntok = np.zeros(n, dtype=np.int64)
    todo = np.flatnonzero(~done)
    if len(todo) == 0:
        logger.info("features: cache hit %s (%d prompts)", d, n)
        return FeatureCache(d, np.lib.format.open_memmap(fpath, mode="r"), ntok)
    logger.info("features: %d of %d prompts to encode (cache %s)", len(todo), n, d)
    penc = prompt_encoder(handle, max_tokens, head_fraction)
    encoded = penc.encode_batch([prompts[int(i)] for i in todo])
    lengths = np.array([len(e.ids) for e in encoded])
    batches = length_batches(lengths, batch_tokens, max_batch)
    device = resolve_device(device)
    model = handle.model.to(device)
    t0 = time.perf_counter()
    bar = tqdm(total=len(todo), desc=f"prefill features ({device})", unit="prompt", disable=not progress)
    try:
        with torch.inference_mode():
            for k, batch in enumerate(batches):
                ids, mask = padded_batch([encoded[j].ids for j in batch], handle.pad_token_id)
                ids, mask = ids.to(device), mask.to(device)
                pooled = pool_hidden_states(forward_hidden_states(model, ids, mask), mask)
                rows = todo[batch]
                feats[rows] = pooled.float().cpu().numpy()
                done[rows] = True
                ntok[rows] = [encoded[j].n_tokens for j in batch]
                if k % 10 == 0 or k == len(batches) - 1:
                    feats.flush()
                    np.save(dpath, done)
                    np.save(tpath, ntok)
                bar.update(len(batch))
    finally:
        handle.model.to("cpu")  # export, its parity checks and the depth timings run on the CPU, as served
    bar.close()
    feats.flush()
    np.save(dpath, done)
    np.save(tpath, ntok)
    logger.info("features: %d prompts in %.1fs", len(todo), time.perf_counter() - t0)
    return FeatureCache(d, np.lib.format.open_memmap(fpath, mode="r"), ntok)
