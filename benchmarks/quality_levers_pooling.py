"""Pooling levers under the same 5-fold CV as benchmarks/quality.py: fixed poolings of SmolLM2's per-token states
(mean, last, max, std, mean of the last 16 tokens) and a learned attention pooling trained end to end with the
SharedTrunkNet heads.

    python benchmarks/quality_levers_pooling.py [--layers 5,17] [--bootstrap 200]
    python benchmarks/quality_levers_pooling.py --plot-only   # redraw pooling_levers.png from pooling_levers.json

The per-token states of the chosen layers (float16, ragged, ~0.7 GB per layer on the shared dataset) are
extracted once by the truncated torch encoder and cached under ~/.cache/litellm-prefill-router/token-states.
Prints mean AUC [95% CI], AIQ, gap captured at max-quality and at the paper's savings (cross-fitted) for each
variant and writes benchmarks/results/pooling_levers.json and pooling_levers.png.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from litellm_prefill_router.costs import cost_matrix
from litellm_prefill_router.training import evaluation as ev
from litellm_prefill_router.training import harness
from litellm_prefill_router.training.data import RoutingDataset, load_dataset
from litellm_prefill_router.training.encoders import cache_root, load_encoder
from litellm_prefill_router.training.export import _truncate
from litellm_prefill_router.training.features import forward_hidden_states, length_batches, prompt_encoder
from litellm_prefill_router.training.pipeline import TrainOptions, compute_features, split_validation
from litellm_prefill_router.training.trunk import SharedTrunkNet, TrunkConfig, _masked_bce, fit_trunk

RESULTS = Path(__file__).parent / "results"


# ---------------------------------------------------------------- per-token states


def token_states(ds: RoutingDataset, layers: list[int], max_tokens: int = 512) -> tuple[dict[int, np.ndarray],
                                                                                        np.ndarray]:
    """{layer: (total_tokens, H) float16}, offsets (n + 1,): the states of every prompt token, cached."""
    handle = load_encoder("smollm2")
    key = hashlib.sha256(json.dumps([handle.id, handle.revision, max_tokens, ds.content_hash(), layers,
                                     "v1"]).encode()).hexdigest()[:16]
    d = cache_root() / "token-states" / key
    if (d / "offsets.npy").exists():
        return {l: np.load(d / f"layer{l}.npy", mmap_mode="r") for l in layers}, np.load(d / "offsets.npy")
    d.mkdir(parents=True, exist_ok=True)
    enc = prompt_encoder(handle, max_tokens).encode_batch(ds.prompts())
    lengths = np.array([len(e.ids) for e in enc])
    offsets = np.concatenate([[0], np.cumsum(lengths)])
    out = {l: np.zeros((offsets[-1], handle.hidden_size), dtype=np.float16) for l in layers}
    model = _truncate(handle.model, max(layers), handle.num_hidden_layers).eval()
    batches = length_batches(lengths)
    with torch.inference_mode(), tqdm(total=len(lengths), desc="token states", unit="prompt") as bar:
        for batch in batches:
            w = int(lengths[batch].max())
            ids = torch.full((len(batch), w), handle.pad_token_id, dtype=torch.long)
            mask = torch.zeros((len(batch), w), dtype=torch.long)
            for r, j in enumerate(batch):
                ids[r, : lengths[j]] = torch.tensor(enc[j].ids)
                mask[r, : lengths[j]] = 1
            hs = forward_hidden_states(model, ids, mask)
            for l in layers:
                h = hs[l].float().numpy()
                for r, j in enumerate(batch):
                    out[l][offsets[j] : offsets[j + 1]] = h[r, : lengths[j]]
            bar.update(len(batch))
    for l in layers:
        np.save(d / f"layer{l}.npy", out[l])
    np.save(d / "offsets.npy", offsets)
    return out, offsets


def fixed_pool(states: np.ndarray, offsets: np.ndarray, kinds: list[str]) -> np.ndarray:
    rows = []
    for i in range(len(offsets) - 1):
        h = np.asarray(states[offsets[i] : offsets[i + 1]], dtype=np.float32)
        f = {"mean": lambda: h.mean(0), "last": lambda: h[-1], "max": lambda: h.max(0), "std": lambda: h.std(0),
             "last16": lambda: h[-16:].mean(0)}
        rows.append(np.concatenate([f[k]() for k in kinds]))
    return np.stack(rows)


# ---------------------------------------------------------------- learned attention pooling


class AttnPoolTrunk(nn.Module):
    """Per-token states -> K attention-pooled vectors (+ mean and last) -> projection -> SharedTrunkNet heads."""

    def __init__(self, hidden: int, n_targets: int, heads: int = 4, proj: int = 128, cfg: TrunkConfig = TrunkConfig()):
        super().__init__()
        self.score = nn.Linear(hidden, heads)
        self.proj = nn.Sequential(nn.Dropout(cfg.dropout), nn.Linear((heads + 2) * hidden, proj))
        self.trunk = SharedTrunkNet(proj, n_targets, cfg.hidden, cfg.depth, cfg.dropout)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        s = self.score(x).masked_fill(~mask.unsqueeze(-1), -1e4)  # (b, s, K)
        a = torch.softmax(s, dim=1)
        pooled = torch.einsum("bsk,bsh->bkh", a, x).flatten(1)
        m = mask.unsqueeze(-1).float()
        mean = (x * m).sum(1) / m.sum(1).clamp(min=1)
        last = x[torch.arange(len(x)), mask.sum(1) - 1]
        return self.trunk(self.proj(torch.cat([pooled, mean, last], 1)))


def _batch(states: np.ndarray, offsets: np.ndarray, idx: np.ndarray, mu: np.ndarray,
           sd: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    lens = offsets[idx + 1] - offsets[idx]
    x = np.zeros((len(idx), int(lens.max()), states.shape[1]), dtype=np.float32)
    mask = np.zeros(x.shape[:2], dtype=bool)
    for r, i in enumerate(idx):
        x[r, : lens[r]] = (np.asarray(states[offsets[i] : offsets[i + 1]], dtype=np.float32) - mu) / sd
        mask[r, : lens[r]] = True
    return torch.from_numpy(x), torch.from_numpy(mask)


def fit_attn(states: np.ndarray, offsets: np.ndarray, scores: np.ndarray, fit: np.ndarray, val: np.ndarray,
             test: np.ndarray, seeds: int = 3, batch: int = 64, max_epochs: int = 60, patience: int = 8) -> np.ndarray:
    sample = np.concatenate([np.arange(offsets[i], offsets[i + 1]) for i in fit[:1000]])
    tok = np.asarray(states[sample], dtype=np.float32)
    mu, sd = tok.mean(0), np.maximum(tok.std(0), 1e-3)

    def run(net: nn.Module, idx: np.ndarray) -> tuple[torch.Tensor, ...]:
        outs = []
        for s in range(0, len(idx), 256):
            x, m = _batch(states, offsets, idx[s : s + 256], mu, sd)
            outs.append(net(x, m))
        return torch.cat(outs)

    y = torch.tensor(np.nan_to_num(scores), dtype=torch.float32)
    ymask = torch.tensor(~np.isnan(scores), dtype=torch.float32)
    preds = []
    for seed in range(seeds):
        torch.manual_seed(seed)
        rng = np.random.default_rng(seed)
        net = AttnPoolTrunk(states.shape[1], scores.shape[1])
        opt = torch.optim.AdamW(net.parameters(), lr=1e-3, weight_decay=1e-2)
        best, best_state, bad = float("inf"), None, 0
        for _ in range(max_epochs):
            net.train()
            perm = rng.permutation(fit)
            for s in range(0, len(perm), batch):
                b = perm[s : s + batch]
                x, m = _batch(states, offsets, b, mu, sd)
                opt.zero_grad()
                _masked_bce(net(x, m), y[b], ymask[b]).backward()
                opt.step()
            net.eval()
            with torch.inference_mode():
                v = float(_masked_bce(run(net, val), y[val], ymask[val]))
            if v < best - 1e-5:
                best, bad, best_state = v, 0, {k: t.clone() for k, t in net.state_dict().items()}
            else:
                bad += 1
                if bad >= patience:
                    break
        net.load_state_dict(best_state)
        net.eval()
        with torch.inference_mode():
            preds.append(torch.sigmoid(run(net, test)).numpy())
    return np.mean(preds, 0)


# ---------------------------------------------------------------- CV


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--layers", default="5,17")
    ap.add_argument("--bootstrap", type=int, default=200)
    ap.add_argument("--no-attention", action="store_true")
    ap.add_argument("--plot-only", action="store_true")
    args = ap.parse_args()
    if args.plot_only:
        _plot(json.loads((RESULTS / "pooling_levers.json").read_text()), RESULTS / "pooling_levers.png")
        return
    layers = [int(x) for x in args.layers.split(",")]
    torch.set_num_threads(os.cpu_count() or 1)
    ds = load_dataset(os.environ.get("PREFILL_ROUTER_DATA", "../shared/datasets/llmrouter"))
    _, cache = compute_features(ds, TrainOptions(progress=False))
    t0 = time.perf_counter()
    states, offsets = token_states(ds, layers)
    print(f"token states: {time.perf_counter() - t0:.0f} s, {offsets[-1]} tokens")
    scores = ds.scores()
    hard = ev.binarize(scores)
    cost = cost_matrix([ds.prices[t] for t in ds.targets], cache.n_tokens.astype(float),
                           [256.0] * len(ds.targets))
    es = harness._eval_set(ds, hard, cost)
    fold = harness.stratified_folds(ds, 5)
    variants: dict[str, tuple[int, list[str] | None]] = {}
    for l in layers:
        for kinds in (["mean", "last"], ["max"], ["mean", "max", "last"], ["mean", "std", "last"],
                      ["mean", "last16", "last"]):
            variants[f"L{l} {'+'.join(kinds)}"] = (l, kinds)
        if not args.no_attention:
            variants[f"L{l} attention(4)+mean+last, end to end"] = (l, None)
    preds, timing = {}, {}
    for name, (l, kinds) in variants.items():
        t0 = time.perf_counter()
        p = np.zeros(hard.shape)
        x = fixed_pool(states[l], offsets, kinds) if kinds else None
        if kinds == ["mean", "last"]:
            ref = cache.select([l], ["mean", "last"])
            print(f"{name}: max |token-state pooling - feature cache| = {np.abs(x - ref).max():.3g} (float16 states)")
        for f in tqdm(range(5), desc=name, unit="fold"):
            q, tr = np.flatnonzero(fold == f), np.flatnonzero(fold != f)
            fit, val = split_validation(ds, tr, 0.15)
            if x is not None:
                p[q] = fit_trunk(x[fit], scores[fit], x[val], scores[val], TrunkConfig()).predict(x[q])
            else:
                p[q] = fit_attn(states[l], offsets, scores, fit, val, q)
        preds[name] = p
        timing[name] = time.perf_counter() - t0
    sc = harness._scorers_from_predictions(preds, es, fold, {})
    r = ev.evaluate(sc, es, bootstrap=args.bootstrap)
    table = {}
    print("| variant | mean AUC [95% CI] | AIQ | gap @ max-quality | gap @ paper-savings | CV fit s |")
    print("|---|---|---|---|---|---|")
    for n, s in r["scorers"].items():
        o = s["operating_points"]
        row = {"mean_auc": s["mean_auc"], "ci95_auc": s["ci95"]["mean_auc"], "aiq": s["aiq"],
               "gap_max_quality": o["max-quality"]["gap_captured"],
               "gap_paper_savings": o["paper-savings"]["gap_captured"], "fit_s": timing.get(n)}
        table[n] = row
        ci = row["ci95_auc"]
        print(f"| {n} | {row['mean_auc']:.4f} [{ci[0]:.3f}, {ci[1]:.3f}] | {row['aiq']:.4f} | "
              f"{row['gap_max_quality']:.3f} | {row['gap_paper_savings']:.3f} | {timing.get(n, 0):.0f} |")
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "pooling_levers.json").write_text(json.dumps(table, indent=2, default=float))
    _plot(table, RESULTS / "pooling_levers.png")


def _plot(table: dict[str, dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(table)
    fig, axes = plt.subplots(1, 2, figsize=(11, 0.35 * len(names) + 1.5), sharey=True)
    y = np.arange(len(names))
    auc = np.array([table[n]["mean_auc"] for n in names])
    ci = np.array([table[n]["ci95_auc"] for n in names])
    axes[0].errorbar(auc, y, xerr=[auc - ci[:, 0], ci[:, 1] - auc], fmt="o", capsize=3)
    axes[0].set_xlabel("mean per-target AUC (5-fold CV, 95% CI)")
    axes[1].barh(y - 0.2, [table[n]["gap_max_quality"] for n in names], 0.4, label="gap @ max-quality")
    axes[1].barh(y + 0.2, [table[n]["gap_paper_savings"] for n in names], 0.4, label="gap @ paper savings")
    axes[1].axvline(0.4558, color="red", ls="--", lw=1, label="paper: 0.4558 @ 74.31% savings")
    axes[1].set_xlabel("gap captured")
    axes[1].legend(fontsize=7, loc="lower right")
    axes[0].set_yticks(y, names, fontsize=8)
    axes[0].invert_yaxis()
    fig.suptitle("Pooling levers, SmolLM2 (same folds)")
    fig.tight_layout()
    fig.savefig(path, dpi=120)


if __name__ == "__main__":
    main()
