"""SharedTrunkNet: standardise -> projection (PCA) -> shared MLP trunk -> K sigmoid heads.

Trained with multi-label BCE (masked for missing labels, soft labels allowed),
AdamW and early stopping on a validation split; a seed ensemble keeps the best M
of N seeds by validation loss and averages their probabilities.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrunkConfig:
    proj_dim: int = 128
    hidden: int = 256
    depth: int = 2
    dropout: float = 0.2
    lr: float = 1e-3
    weight_decay: float = 1e-2
    batch_size: int = 256
    max_epochs: int = 200
    patience: int = 15
    seeds: int = 5
    keep: int = 3


class SharedTrunkNet(nn.Module):
    """(batch, proj_dim) projected features -> (batch, K) logits."""

    def __init__(self, in_dim: int, n_targets: int, hidden: int = 256, depth: int = 2, dropout: float = 0.2) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        d = in_dim
        for _ in range(depth):
            layers += [nn.Linear(d, hidden), nn.GELU(), nn.Dropout(dropout)]
            d = hidden
        self.trunk = nn.Sequential(*layers)
        self.heads = nn.Linear(d, n_targets)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.heads(self.trunk(z))


class TrunkEnsemble(nn.Module):
    """The exported scorer: raw pooled features -> averaged P(correct) (batch, K)."""

    mean: torch.Tensor
    inv_scale: torch.Tensor
    components: torch.Tensor

    def __init__(self, mean: np.ndarray, scale: np.ndarray, components: np.ndarray, members: list[SharedTrunkNet]):
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32))
        self.register_buffer("inv_scale", torch.tensor(1.0 / scale, dtype=torch.float32))
        self.register_buffer("components", torch.tensor(components.T, dtype=torch.float32))  # (F, P)
        self.members = nn.ModuleList(members)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        z = ((features - self.mean) * self.inv_scale) @ self.components
        probs = torch.stack([torch.sigmoid(m(z)) for m in self.members], dim=0)
        return probs.mean(0)


@dataclass
class FittedTrunk:
    mean_: np.ndarray
    scale_: np.ndarray
    components_: np.ndarray  # (P, F)
    members_: list[SharedTrunkNet]
    val_losses_: list[float] = field(default_factory=list)
    kept_seeds_: list[int] = field(default_factory=list)

    def module(self) -> TrunkEnsemble:
        return TrunkEnsemble(self.mean_, self.scale_, self.components_, self.members_).eval()

    def predict(self, x: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            return self.module()(torch.tensor(x, dtype=torch.float32)).numpy()


def _masked_bce(logits: torch.Tensor, y: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    loss = nn.functional.binary_cross_entropy_with_logits(logits, y, reduction="none")
    return (loss * mask).sum() / mask.sum().clamp(min=1.0)


def _fit_one(z_tr: np.ndarray, y_tr: np.ndarray, z_va: np.ndarray, y_va: np.ndarray, cfg: TrunkConfig,
             seed: int) -> tuple[SharedTrunkNet, float]:
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    k = y_tr.shape[1]
    net = SharedTrunkNet(z_tr.shape[1], k, cfg.hidden, cfg.depth, cfg.dropout)
    opt = torch.optim.AdamW(net.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    zt, zv = torch.tensor(z_tr, dtype=torch.float32), torch.tensor(z_va, dtype=torch.float32)
    mt, mv = torch.tensor(~np.isnan(y_tr), dtype=torch.float32), torch.tensor(~np.isnan(y_va), dtype=torch.float32)
    yt, yv = torch.tensor(np.nan_to_num(y_tr), dtype=torch.float32), torch.tensor(np.nan_to_num(y_va),
                                                                                   dtype=torch.float32)
    best, best_state, bad = float("inf"), None, 0
    for _epoch in range(cfg.max_epochs):
        net.train()
        perm = rng.permutation(len(zt))
        for s in range(0, len(perm), cfg.batch_size):
            b = torch.tensor(perm[s : s + cfg.batch_size])
            opt.zero_grad()
            _masked_bce(net(zt[b]), yt[b], mt[b]).backward()
            opt.step()
        net.eval()
        with torch.inference_mode():
            v = float(_masked_bce(net(zv), yv, mv))
        if v < best - 1e-5:
            best, bad = v, 0
            best_state = {n: p.detach().clone() for n, p in net.state_dict().items()}
        else:
            bad += 1
            if bad >= cfg.patience:
                break
    assert best_state is not None
    net.load_state_dict(best_state)
    net.eval()
    return net, best


def fit_projection(x: np.ndarray, dim: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(mean, scale, components (P, F)): standardise ``x`` column-wise (near-constant columns keep scale 1) and
    take its top ``dim`` principal directions - the trunk's input projection, fitted on training rows only."""
    mean = x.mean(0)
    scale = x.std(0)
    scale = np.where(scale < 1e-6, 1.0, scale)
    xs = (x - mean) / scale
    _, _, vt = np.linalg.svd(xs - xs.mean(0), full_matrices=False)
    return mean, scale, vt[: min(dim, vt.shape[0])]


def fit_trunk(x_tr: np.ndarray, y_tr: np.ndarray, x_va: np.ndarray, y_va: np.ndarray,
              cfg: TrunkConfig | None = None) -> FittedTrunk:
    """Fit scaler + PCA on the training rows, then the seed ensemble with early stopping on validation."""
    cfg = cfg or TrunkConfig()
    if cfg.keep > cfg.seeds or cfg.keep < 1:
        raise ValueError(f"keep must be in [1, seeds]; got keep={cfg.keep}, seeds={cfg.seeds}")
    torch.set_num_threads(max(torch.get_num_threads(), 1))
    mean, scale, comps = fit_projection(x_tr, cfg.proj_dim)
    z_tr = ((x_tr - mean) / scale) @ comps.T
    z_va = ((x_va - mean) / scale) @ comps.T
    fits = [_fit_one(z_tr, y_tr, z_va, y_va, cfg, seed) for seed in range(cfg.seeds)]
    order = np.argsort([f[1] for f in fits])[: cfg.keep]
    logger.info("trunk: val losses %s, keeping seeds %s", [round(f[1], 4) for f in fits], order.tolist())
    return FittedTrunk(mean.astype(np.float32), scale.astype(np.float32), comps.astype(np.float32),
                       [fits[i][0] for i in order], [f[1] for f in fits], order.tolist())
