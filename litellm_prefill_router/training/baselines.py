"""Learned baselines, fitted on the same rows as the prefill router and scored by the same harness.

All of them predict P(correct | prompt, target) from a fixed prompt representation:

* ``knn``: the semantic-router signal - the similarity-weighted mean score of the k most similar training
  prompts in MiniLM sentence-embedding space (k chosen on the inner validation rows).
* ``logreg``: one L2 logistic regression per target on the same features (C chosen on validation).
* ``mlp``: the SharedTrunkNet itself on MiniLM embeddings (isolates the prefill features from the head).
* ``mf``: RouteLLM-style matrix factorisation - a learned target embedding v_m and a projection W of the prompt
  embedding, P = sigmoid(v_m . (W e) + b_m), trained with masked BCE and early stopping.
* ``benchmark``: per-benchmark static routing - P(correct) is the target's mean score on the prompt's benchmark in
  the training rows (the overall mean for a benchmark not seen there). It reads the benchmark tag of each evaluated
  row, so it is what a deployment that tags every request with its task could do without any model; a prompt-only
  router has to beat it to be worth its latency.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from .data import RoutingDataset
from .encoders import cache_root, load_encoder
from .features import extract_features
from .trunk import TrunkConfig, fit_trunk

LEARNED = ("knn", "logreg", "mlp", "mf", "benchmark")


def sentence_embeddings(ds: RoutingDataset, cache_dir: Path | None = None, progress: bool = True) -> np.ndarray:
    """all-MiniLM-L6-v2 sentence embeddings (mean pooling of the last layer, L2-normalised), cached."""
    mini = load_encoder("minilm-l6")
    cache = extract_features(mini, ds.prompts(), dataset_hash=ds.content_hash(),
                             cache_dir=Path(cache_dir or cache_root() / "features"), max_tokens=256,
                             progress=progress)
    emb = np.asarray(cache.layer(mini.num_hidden_layers, ["mean"]), dtype=np.float32)
    return emb / (np.linalg.norm(emb, axis=1, keepdims=True) + 1e-12)


def benchmark_prior_predict(bench_tr: Sequence[str], y_tr: np.ndarray, bench_q: Sequence[str]) -> np.ndarray:
    """(len(bench_q), K): each target's mean training score on the query's benchmark; NaN-aware."""

    def mean(rows: np.ndarray, fallback: np.ndarray) -> np.ndarray:
        seen = (~np.isnan(rows)).sum(0)
        return np.where(seen > 0, np.nansum(rows, 0) / np.maximum(seen, 1), fallback)

    prior = mean(y_tr, np.full(y_tr.shape[1], 0.5))
    b_tr = np.asarray(bench_tr)
    table = {b: mean(y_tr[b_tr == b], prior) for b in np.unique(b_tr)}
    return np.stack([table.get(b, prior) for b in bench_q]) if len(bench_q) else np.zeros((0, y_tr.shape[1]))


def _mean_auc(p: np.ndarray, y: np.ndarray) -> float:
    from .evaluation import binarize, roc_auc

    hard = binarize(y)
    ok = ~np.isnan(hard)
    return float(np.nanmean([roc_auc(hard[ok[:, j], j], p[ok[:, j], j]) for j in range(y.shape[1])]))


def knn_predict(e_tr: np.ndarray, y_tr: np.ndarray, e_q: np.ndarray, k: int) -> np.ndarray:
    k = max(1, min(k, len(e_tr) - 1))
    sim = e_q @ e_tr.T
    idx = np.argpartition(-sim, k, axis=1)[:, :k]
    w = np.clip(np.take_along_axis(sim, idx, 1), 1e-6, None)
    y = y_tr[idx]  # (n, k, K)
    m = ~np.isnan(y)
    return (np.nan_to_num(y) * (w[..., None] * m)).sum(1) / np.clip((w[..., None] * m).sum(1), 1e-9, None)


def fit_knn(e_fit: np.ndarray, y_fit: np.ndarray, e_val: np.ndarray, y_val: np.ndarray,
            ks: Sequence[int] = (5, 10, 25, 50, 100, 200)) -> int:
    return max(ks, key=lambda k: _mean_auc(knn_predict(e_fit, y_fit, e_val, k), y_val))


def logreg_predict(x_fit: np.ndarray, y_fit: np.ndarray, x_val: np.ndarray, y_val: np.ndarray, x_q: np.ndarray,
                   cs: Sequence[float] = (0.01, 0.1, 1.0)) -> tuple[np.ndarray, float]:
    """Per-target logistic regression on standardised features; C picked by validation mean AUC."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    sc = StandardScaler().fit(x_fit)
    a, v, q = sc.transform(x_fit), sc.transform(x_val), sc.transform(x_q)

    def fit(c: float, xq: np.ndarray) -> np.ndarray:
        out = np.zeros((len(xq), y_fit.shape[1]))
        for j in range(y_fit.shape[1]):
            ok = ~np.isnan(y_fit[:, j])
            yy = (y_fit[ok, j] >= 0.5).astype(int)
            if yy.min() == yy.max():
                out[:, j] = yy[0]
                continue
            out[:, j] = LogisticRegression(C=c, max_iter=300).fit(a[ok], yy).predict_proba(xq)[:, 1]
        return out

    best_c = max(cs, key=lambda c: _mean_auc(fit(c, v), y_val))
    return fit(best_c, q), best_c


def mlp_predict(x_fit: np.ndarray, y_fit: np.ndarray, x_val: np.ndarray, y_val: np.ndarray, x_q: np.ndarray,
                cfg: TrunkConfig | None = None) -> np.ndarray:
    return fit_trunk(x_fit, y_fit, x_val, y_val, cfg).predict(x_q)


def mf_predict(x_fit: np.ndarray, y_fit: np.ndarray, x_val: np.ndarray, y_val: np.ndarray, x_q: np.ndarray,
               dim: int = 64, epochs: int = 300, patience: int = 20, seed: int = 0) -> np.ndarray:
    """RouteLLM matrix factorisation, one logit per (prompt, target): v_m . (W e) + b_m."""
    import torch

    torch.manual_seed(seed)
    k = y_fit.shape[1]
    proj = torch.nn.Linear(x_fit.shape[1], dim, bias=False)
    targets = torch.nn.Embedding(k, dim)
    bias = torch.nn.Parameter(torch.zeros(k))
    params = [*proj.parameters(), *targets.parameters(), bias]
    opt = torch.optim.AdamW(params, lr=3e-3, weight_decay=1e-2)
    mu, sd = x_fit.mean(0), x_fit.std(0) + 1e-6

    def t(a: np.ndarray) -> torch.Tensor:
        return torch.tensor((a - mu) / sd, dtype=torch.float32)

    def logits(x: torch.Tensor) -> torch.Tensor:
        return proj(x) @ targets.weight.T + bias

    def loss(x: torch.Tensor, y: np.ndarray) -> torch.Tensor:
        m = torch.tensor(~np.isnan(y), dtype=torch.float32)
        yy = torch.tensor(np.nan_to_num(y), dtype=torch.float32)
        el = torch.nn.functional.binary_cross_entropy_with_logits(logits(x), yy, reduction="none")
        return (el * m).sum() / m.sum().clamp(min=1.0)

    xf, xv = t(x_fit), t(x_val)
    best, state, bad = float("inf"), None, 0
    for _ in range(epochs):
        opt.zero_grad()
        loss(xf, y_fit).backward()
        opt.step()
        with torch.no_grad():
            v = float(loss(xv, y_val))
        if v < best - 1e-5:
            best, bad = v, 0
            state = [p.detach().clone() for p in params]
        else:
            bad += 1
            if bad >= patience:
                break
    assert state is not None
    with torch.no_grad():
        for p, s in zip(params, state):
            p.copy_(s)
        return torch.sigmoid(logits(t(x_q))).numpy().astype(np.float64)
