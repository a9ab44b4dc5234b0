"""The last untried lever: fine-tuning the encoder. SmolLM2 blocks 6..5+k, initialised from the pretrained weights,
trained end to end with a SharedTrunkNet head on top of the cached layer-5 token states, vs the same blocks frozen.

    python benchmarks/quality_levers_finetune.py [--blocks 1] [--fold 0] [--epochs 6] [--bootstrap 1000]

One fold of the 5-fold CV of benchmarks/quality.py (stratified by benchmark; 15% of the training rows are the
validation rows for early stopping), because one epoch over 4,000 prompts through a transformer block takes minutes
on 2 CPU cores. Variants, all scored on the same held-out fold:

* frozen L5 / frozen L(5+k), mean+last, `fit_trunk` (the shipped head, a 5-seed ensemble);
* frozen L(5+k), mean+last, "LP head": the fine-tuning model's head trained to convergence with the blocks frozen
  (the control);
* fine-tuned: from there, blocks and head trained together (LP-FT), keeping the epoch with the best validation
  loss.

Prints mean AUC with bootstrap 95% intervals and the paired difference vs frozen, writes
benchmarks/results/finetune_levers_b<k>.json and .png. Needs the token states cached by
benchmarks/quality_levers_pooling.py (computed on first use).
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import time
from pathlib import Path

import numpy as np
import torch
from quality_levers_pooling import token_states
from torch import nn
from tqdm.auto import tqdm

from litellm_prefill_router.training import harness
from litellm_prefill_router.training.calibrate import auc_per_target
from litellm_prefill_router.training.data import load_dataset
from litellm_prefill_router.training.encoders import load_encoder
from litellm_prefill_router.training.pipeline import TrainOptions, compute_features, split_validation
from litellm_prefill_router.training.trunk import SharedTrunkNet, TrunkConfig, _masked_bce, fit_trunk

RESULTS = Path(__file__).parent / "results"
BASE_LAYER = 5


class BlocksTrunk(nn.Module):
    """Layer-5 token states -> SmolLM2 blocks 6..5+k -> mean+last pooling -> standardise -> SharedTrunkNet."""

    def __init__(self, base: nn.Module, k: int, n_targets: int, cfg: TrunkConfig, proj: int = 128) -> None:
        super().__init__()
        m = copy.deepcopy(base)
        m.layers = m.layers[BASE_LAYER : BASE_LAYER + k]
        m.norm = nn.Identity()
        m.embed_tokens = None  # fed inputs_embeds (the cached layer-5 states)
        m.config.num_hidden_layers = k
        m.set_attn_implementation("eager")
        self.blocks = m
        hidden = m.config.hidden_size
        self.register_buffer("mu", torch.zeros(2 * hidden))
        self.register_buffer("sd", torch.ones(2 * hidden))
        self.proj = nn.Sequential(nn.Dropout(cfg.dropout), nn.Linear(2 * hidden, proj))
        self.trunk = SharedTrunkNet(proj, n_targets, cfg.hidden, cfg.depth, cfg.dropout)

    def pooled(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        h = self.blocks(inputs_embeds=x, attention_mask=mask.long(), use_cache=False).last_hidden_state
        m = mask.unsqueeze(-1).float()
        mean = (h * m).sum(1) / m.sum(1).clamp(min=1)
        last = h[torch.arange(len(h)), mask.sum(1) - 1]
        return torch.cat([mean, last], 1)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return self.trunk(self.proj((self.pooled(x, mask) - self.mu) / self.sd))


def _batch(states: np.ndarray, offsets: np.ndarray, idx: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    lens = offsets[idx + 1] - offsets[idx]
    x = np.zeros((len(idx), int(lens.max()), states.shape[1]), dtype=np.float32)
    mask = np.zeros(x.shape[:2], dtype=bool)
    for r, i in enumerate(idx):
        x[r, : lens[r]] = states[offsets[i] : offsets[i + 1]]
        mask[r, : lens[r]] = True
    return torch.from_numpy(x), torch.from_numpy(mask)


def _length_batches(idx: np.ndarray, lens: np.ndarray, tokens: int, rng: np.random.Generator | None) -> list:
    """Batches of similar length (<= `tokens` padded tokens each), shuffled when rng is given."""
    order = idx[np.argsort(lens[idx] + (rng.random(len(idx)) * 8 if rng is not None else 0))]
    out, cur = [], []
    for i in order:
        if cur and (len(cur) + 1) * lens[i] > tokens:
            out.append(np.array(cur))
            cur = []
        cur.append(i)
    out.append(np.array(cur))
    if rng is not None:
        rng.shuffle(out)
    return out


def fit_blocks(base: nn.Module, k: int, states: np.ndarray, offsets: np.ndarray, scores: np.ndarray,
               fit: np.ndarray, val: np.ndarray, test: np.ndarray, *, epochs: int, seed: int = 0,
               lr_blocks: float = 2e-5, lr_head: float = 1e-4, tokens: int = 8192,
               patience: int = 2) -> tuple[dict[str, np.ndarray], dict]:
    """Linear-probe-then-fine-tune: (1) the head trained to convergence on the frozen blocks' pooled features,
    (2) blocks and head trained together from there, keeping the epoch with the best validation loss (epoch 0 is
    the frozen solution). Returns test probabilities of both stages."""
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    lens = offsets[1:] - offsets[:-1]
    cfg = TrunkConfig()
    net = BlocksTrunk(base, k, scores.shape[1], cfg)
    y = torch.tensor(np.nan_to_num(scores), dtype=torch.float32)
    ymask = torch.tensor(~np.isnan(scores), dtype=torch.float32)

    def run(idx: np.ndarray, pooled_only: bool = False) -> torch.Tensor:
        net.eval()
        outs, rows = [], []
        with torch.inference_mode():
            for b in _length_batches(idx, lens, tokens, None):
                x, m = _batch(states, offsets, b)
                outs.append(net.pooled(x, m) if pooled_only else net(x, m))
                rows.append(b)
        res = torch.cat(outs)
        pos = {r: j for j, r in enumerate(np.concatenate(rows))}
        return res[[pos[i] for i in idx]]

    # stage 1: frozen blocks, head to convergence on cached pooled features (the shipped head's recipe)
    t0 = time.perf_counter()
    pooled = {name: run(idx, pooled_only=True) for name, idx in (("fit", fit), ("val", val), ("test", test))}
    net.mu.copy_(pooled["fit"].mean(0))
    net.sd.copy_(pooled["fit"].std(0).clamp(min=1e-3))
    head = nn.Sequential(net.proj, net.trunk)
    opt = torch.optim.AdamW(head.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    z = {n: ((v - net.mu) / net.sd).clone() for n, v in pooled.items()}
    best, best_state, bad = float("inf"), None, 0
    for _ in range(cfg.max_epochs):
        head.train()
        perm = rng.permutation(len(fit))
        for s in range(0, len(perm), cfg.batch_size):
            b = perm[s : s + cfg.batch_size]
            opt.zero_grad()
            _masked_bce(head(z["fit"][b]), y[fit][b], ymask[fit][b]).backward()
            opt.step()
        head.eval()
        with torch.inference_mode():
            v = float(_masked_bce(head(z["val"]), y[val], ymask[val]))
        if v < best - 1e-5:
            best, bad, best_state = v, 0, {n: t.clone() for n, t in net.state_dict().items()}
        else:
            bad += 1
            if bad >= cfg.patience:
                break
    net.load_state_dict(best_state)
    with torch.inference_mode():
        p_frozen = torch.sigmoid(head.eval()(z["test"])).numpy()
    log = [{"epoch": 0, "val_loss": best, "s": time.perf_counter() - t0, "stage": "frozen head"}]
    print(f"  frozen head: val loss {best:.4f} ({log[-1]['s']:.0f} s)", flush=True)
    # stage 2: blocks and head together
    opt = torch.optim.AdamW([{"params": list(head.parameters()), "lr": lr_head, "weight_decay": cfg.weight_decay},
                             {"params": list(net.blocks.parameters()), "lr": lr_blocks, "weight_decay": 0.0}])
    bad = 0
    for epoch in range(1, epochs + 1):
        net.train()
        t0 = time.perf_counter()
        for b in tqdm(_length_batches(fit, lens, tokens, rng), desc=f"fine-tune epoch {epoch}", leave=False):
            x, m = _batch(states, offsets, b)
            opt.zero_grad()
            _masked_bce(net(x, m), y[b], ymask[b]).backward()
            opt.step()
        v = float(_masked_bce(run(val), y[val], ymask[val]))
        log.append({"epoch": epoch, "val_loss": v, "s": time.perf_counter() - t0, "stage": "fine-tune"})
        print(f"  fine-tune epoch {epoch}: val loss {v:.4f} ({log[-1]['s']:.0f} s)", flush=True)
        if v < best - 1e-4:
            best, bad, best_state = v, 0, {n: t.clone() for n, t in net.state_dict().items()}
        else:
            bad += 1
            if bad >= patience:
                break
    net.load_state_dict(best_state)
    p_tuned = torch.sigmoid(run(test)).numpy()
    chosen = min(log, key=lambda r: r["val_loss"])["epoch"]
    return {"frozen": p_frozen, "tuned": p_tuned}, {"epochs": log, "best_val_loss": best, "chosen_epoch": chosen,
                                                      "pooled_test": pooled["test"].numpy()}


def mean_auc(p: np.ndarray, s: np.ndarray, targets: list[str]) -> float:
    return float(np.nanmean(list(auc_per_target(p, s, targets).values())))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--blocks", type=int, default=1, help="blocks after layer 5 to fine-tune")
    ap.add_argument("--fold", type=int, default=0)
    ap.add_argument("--epochs", type=int, default=6)
    ap.add_argument("--lr-blocks", type=float, default=2e-5)
    ap.add_argument("--bootstrap", type=int, default=1000)
    ap.add_argument("--limit", type=int, default=None, help="use only this many training rows (a smoke run)")
    args = ap.parse_args()
    torch.set_num_threads(os.cpu_count() or 1)
    ds = load_dataset(os.environ.get("PREFILL_ROUTER_DATA", "../shared/datasets/llmrouter"))
    _, cache = compute_features(ds, TrainOptions(progress=False))
    states, offsets = token_states(ds, [BASE_LAYER, 17])
    states = states[BASE_LAYER]
    scores, targets = ds.scores(), ds.targets
    fold = harness.stratified_folds(ds, 5)
    q, tr = np.flatnonzero(fold == args.fold), np.flatnonzero(fold != args.fold)
    fit, val = split_validation(ds, tr, 0.15)
    if args.limit:
        fit = np.sort(np.random.default_rng(0).permutation(fit)[: args.limit])
    top = BASE_LAYER + args.blocks
    base = load_encoder("smollm2").model
    preds, meta = {}, {}
    for layer in (BASE_LAYER, top):
        x = cache.select([layer], ["mean", "last"])
        t0 = time.perf_counter()
        preds[f"frozen L{layer}, fit_trunk"] = fit_trunk(x[fit], scores[fit], x[val], scores[val],
                                                          TrunkConfig()).predict(x[q])
        meta[f"frozen L{layer}, fit_trunk"] = {"s": time.perf_counter() - t0}
    t0 = time.perf_counter()
    p, info = fit_blocks(base, args.blocks, states, offsets, scores, fit, val, q, epochs=args.epochs,
                         lr_blocks=args.lr_blocks)
    ref_feats = cache.select([top], ["mean", "last"], q)
    print(f"frozen blocks on float16 layer-5 states vs the feature cache's L{top}: max |diff| "
          f"{np.abs(info.pop('pooled_test') - ref_feats).max():.3g}")
    preds[f"frozen L{top}, LP head"], meta[f"frozen L{top}, LP head"] = p["frozen"], {"s": info["epochs"][0]["s"]}
    name = f"fine-tuned blocks {BASE_LAYER + 1}-{top} (LP-FT)"
    preds[name], meta[name] = p["tuned"], {**info, "s": time.perf_counter() - t0}
    ref = f"frozen L{top}, LP head"
    rng = np.random.default_rng(0)
    boots = [rng.integers(0, len(q), len(q)) for _ in range(args.bootstrap)]
    table = {}
    print(f"fold {args.fold}: {len(q)} held-out prompts, {len(fit)} fit, {len(val)} validation")
    print("| variant | mean AUC [95% CI] | vs frozen, same head: paired diff [95% CI] | fit s |")
    print("|---|---|---|---|")
    for name, p in preds.items():
        a = mean_auc(p, scores[q], targets)
        bs = [mean_auc(p[b], scores[q][b], targets) for b in boots]
        diff = [mean_auc(p[b], scores[q][b], targets) - mean_auc(preds[ref][b], scores[q][b], targets) for b in boots]
        table[name] = {"mean_auc": a, "ci95": [float(np.percentile(bs, 2.5)), float(np.percentile(bs, 97.5))],
                       "paired_diff_vs_frozen": a - mean_auc(preds[ref], scores[q], targets),
                       "paired_ci95": [float(np.percentile(diff, 2.5)), float(np.percentile(diff, 97.5))], **meta[name]}
        r = table[name]
        print(f"| {name} | {a:.4f} [{r['ci95'][0]:.3f}, {r['ci95'][1]:.3f}] | {r['paired_diff_vs_frozen']:+.4f} "
              f"[{r['paired_ci95'][0]:+.3f}, {r['paired_ci95'][1]:+.3f}] | {r['s']:.0f} |")
    RESULTS.mkdir(exist_ok=True)
    out = {"fold": args.fold, "blocks": args.blocks, "lr_blocks": args.lr_blocks, "held_out": len(q),
           "fit": len(fit), "val": len(val), "variants": table}
    (RESULTS / f"finetune_levers_b{args.blocks}.json").write_text(json.dumps(out, indent=1, default=float))
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(table)
    fig, ax = plt.subplots(figsize=(8, 0.5 * len(names) + 1.5))
    y = np.arange(len(names))
    auc = np.array([table[n]["mean_auc"] for n in names])
    ci = np.array([table[n]["ci95"] for n in names])
    ax.errorbar(auc, y, xerr=[auc - ci[:, 0], ci[:, 1] - auc], fmt="o", capsize=3)
    ax.axvline(0.856, color="red", ls="--", lw=1, label="paper's mean AUC 0.856")
    ax.set_yticks(y, names, fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel(f"mean per-target AUC, fold {args.fold} of 5 ({len(q)} prompts, bootstrap 95% CI)")
    ax.legend(fontsize=8)
    fig.suptitle("Fine-tuning SmolLM2 blocks above layer 5 vs frozen")
    fig.tight_layout()
    fig.savefig(RESULTS / f"finetune_levers_b{args.blocks}.png", dpi=120)


if __name__ == "__main__":
    main()
