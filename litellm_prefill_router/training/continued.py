"""``prefill-router train --continue-from BUNDLE``: refit a bundle's scorer on more rows, keeping its encoder.

The encoder (``encoder.onnx``, the exact graph that serves) is reused as is; features come from it and are
cached per prompt (``$PREFILL_ROUTER_CACHE/onnx-features/<encoder sha256>``), so a second round of feedback
only encodes the new prompts. The SharedTrunkNet is refitted on all rows (the original data plus collected
or feedback rows; rows may label only some targets - feedback labels only the target that answered), then
presets are re-calibrated on validation rows and the new bundle is written with the parent's provenance.
A target that only the added rows label (a model added to the fleet, labelled by ``prefill-router collect``)
becomes a new trunk column, priced from ``--models-json`` or the ``<rows>.models.json`` beside the rows.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
import tempfile
import time
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import numpy as np

from ..bundle import Bundle, check_bundle_destination, load_bundle, write_bundle
from ..costs import cost_matrix
from ..errors import PrefillRouterError
from .data import RoutingDataset, require_labels
from .encoders import cache_root
from .evaluation import binarize

logger = logging.getLogger(__name__)


def _prompt_key(prompt: object) -> str:
    return hashlib.sha256(json.dumps(prompt, sort_keys=True, ensure_ascii=False).encode()).hexdigest()


class OnnxFeatureCache:
    """Pooled features and prompt token counts of a bundle's encoder.onnx, keyed by prompt (append-only,
    atomic rewrite)."""

    def __init__(self, bundle: Bundle, cache_dir: Path | None = None) -> None:
        from .export import external_data_files

        # the graph and, for a large encoder, the weights beside it (the graph alone names them only by file name)
        weights = external_data_files(bundle.path("encoder.onnx"))
        sha = bundle.manifest.files["encoder.onnx"].sha256[:16] if not weights else hashlib.sha256(" ".join(
            bundle.manifest.files[n].sha256 if n in bundle.manifest.files else n  # unlisted: its session says so
            for n in ["encoder.onnx", *weights]).encode()).hexdigest()[:16]
        # v2: features as the runtime computes them (an int8 encoder sees each prompt alone); v1 batched 16
        self.dir = Path(cache_dir or cache_root() / "onnx-features") / f"v2-{sha}"
        self.dir.mkdir(parents=True, exist_ok=True)
        self.keys: list[str] = []
        # plain ndarray: numpy's stubs type the shapes differently from release to release (2.2 vs 2.3)
        self.feats: np.ndarray = np.zeros((0, bundle.manifest.encoder.feature_dim), dtype=np.float32)
        self.n_tokens: np.ndarray = np.zeros(0, dtype=np.int64)
        files = [self.dir / n for n in ("keys.json", "features.npy", "n_tokens.npy")]
        if all(f.exists() for f in files):
            keys = json.loads(files[0].read_text())
            feats, n_tokens = np.load(files[1]), np.load(files[2])
            if len(keys) == len(feats) == len(n_tokens):
                self.keys, self.feats, self.n_tokens = keys, feats, n_tokens
            else:
                logger.warning("onnx feature cache %s is inconsistent; rebuilding it", self.dir)
        self.index = {k: i for i, k in enumerate(self.keys)}

    def get(self, prompts: list[object], predictor: Any, progress: bool = True) -> tuple[np.ndarray, np.ndarray]:
        """(features (n, F), prompt token counts (n,)); only prompts not cached yet go through the encoder."""
        from tqdm.auto import tqdm

        keys = [_prompt_key(p) for p in prompts]
        todo = sorted({k: i for i, k in enumerate(keys) if k not in self.index}.values())
        if todo:
            enc = predictor.encode([prompts[i] for i in todo])
            order = np.argsort([len(e.ids) for e in enc])  # length-sorted chunks: little padding when batched
            new = np.zeros((len(todo), self.feats.shape[1]), dtype=np.float32)
            for s in tqdm(range(0, len(order), 64), desc="encoder features (onnx)", disable=not progress):
                b = order[s : s + 64]
                new[b] = predictor.features_for_ids([enc[j].ids for j in b])
            for i in todo:
                self.index[keys[i]] = len(self.keys)
                self.keys.append(keys[i])
            self.feats = np.concatenate([self.feats, new])
            self.n_tokens = np.concatenate([self.n_tokens, [e.n_tokens for e in enc]]).astype(np.int64)
            for name, arr in (("features", self.feats), ("n_tokens", self.n_tokens)):
                tmp = self.dir / f"{name}.tmp.npy"
                np.save(tmp, arr)
                tmp.replace(self.dir / f"{name}.npy")
            (self.dir / "keys.json").write_text(json.dumps(self.keys))
        rows = [self.index[k] for k in keys]
        return self.feats[rows], self.n_tokens[rows]


def continue_training(bundle_dir: str | Path, ds: RoutingDataset, out: str | Path, *, seeds: int = 5, keep: int = 3,
                      val_fraction: float = 0.15, cache_dir: Path | None = None,
                      progress: bool = True) -> tuple[Bundle, dict[str, Any]]:
    import torch

    from ..predictor import PrefillPredictor
    from .export import export_trunk
    from .pipeline import TrainOptions, _evaluate, _json_default, split_validation
    from .trunk import TrunkConfig, fit_trunk

    t0 = time.perf_counter()
    check_bundle_destination(out)  # before the work, not after
    parent = load_bundle(bundle_dir)
    m = parent.manifest
    names = [t.name for t in m.targets]
    new = [t for t in ds.targets if t not in names]  # a model added to the fleet: a new trunk column
    unpriced = [t for t in new if t not in ds.prices]
    if unpriced:
        raise PrefillRouterError(f"new targets {unpriced} have no price; give --models-json with their "
                                 "input_cost_per_token and output_cost_per_token (or a <rows>.models.json beside "
                                 "the --add file, as `prefill-router collect` writes)")
    names += new
    ds = replace(ds, targets=names)
    scores = ds.scores(names)
    labelled = np.flatnonzero(~np.isnan(scores).all(1))
    train_idx = np.intersect1d(ds.indices("train"), labelled)
    test_idx = np.intersect1d(ds.indices("test"), labelled)
    if len(train_idx) < 20:
        raise PrefillRouterError(f"only {len(train_idx)} labelled training rows; continuing needs at least 20")
    fit_idx, val_idx = (train_idx, np.intersect1d(ds.indices("val"), labelled)) if len(ds.indices("val")) else \
        split_validation(ds, train_idx, val_fraction)
    hard = binarize(scores)
    # every head is refitted: each needs right and wrong answers to learn from
    require_labels(hard, fit_idx, names, lambda t: (
        f"For new target {t!r}: collect labels on more (and more varied) prompts" if t in new else
        f"For bundle target {t!r}: --continue-from refits every target's head, so pass the data the bundle was "
        "trained on with --data"))
    pred = PrefillPredictor(parent)
    cache = OnnxFeatureCache(parent, cache_dir)
    need = np.r_[fit_idx, val_idx, test_idx]
    x = np.zeros((len(ds), m.encoder.feature_dim), dtype=np.float32)
    n_tok = np.zeros(len(ds))
    x[need], n_tok[need] = cache.get([ds.rows[i].prompt for i in need], pred, progress)
    cfg = TrunkConfig(seeds=seeds, keep=min(keep, seeds))
    fitted = fit_trunk(x[fit_idx], scores[fit_idx], x[val_idx], scores[val_idx], cfg)
    prices = [(t.input_cost_per_token or 0.0, t.output_cost_per_token or 0.0) for t in m.targets] + \
        [ds.prices[t] for t in new]
    expected = [t.expected_output_tokens for t in m.targets] + \
        [ds.mean_output_tokens(t) or TrainOptions().expected_output_tokens for t in new]
    costs = cost_matrix(prices, n_tok, expected)
    report = _evaluate(fitted, x, hard, costs, names, val_idx, test_idx, n_tok, m.encoder.max_prefill_tokens)
    work = Path(tempfile.mkdtemp(prefix="prefill-continue-"))
    try:
        trunk = fitted.module()
        export_trunk(trunk, work / "trunk.onnx", m.encoder.feature_dim)
        import onnxruntime as ort

        sess = ort.InferenceSession(str(work / "trunk.onnx"), providers=["CPUExecutionProvider"])
        probe = x[val_idx[:64]]
        with torch.inference_mode():
            p_torch = trunk(torch.tensor(probe)).numpy()
        diff = float(np.abs(sess.run(["p_correct"], {"features": probe})[0] - p_torch).max())
        if diff > 2e-3:
            raise PrefillRouterError(f"exported trunk differs from torch by {diff:.2e}; report a bug")
        report["continued_from"] = parent.source
        report["rows"] = {"fit": len(fit_idx), "validation": len(val_idx), "test": len(test_idx),
                          "labels": int((~np.isnan(scores[fit_idx])).sum())}
        report["seconds"] = round(time.perf_counter() - t0, 1)
        (work / "report.json").write_text(json.dumps(report, indent=1, default=_json_default))
        files = {name: parent.path(name) for name in m.files if name not in ("trunk.onnx", "report.json")
                 and not name.endswith(".png")}
        files.update({"trunk.onnx": work / "trunk.onnx", "report.json": work / "report.json"})
        with np.errstate(all="ignore"):
            prior = np.nanmean(scores[fit_idx], axis=0)  # NaN for a target no fit row labels: keep the parent's
        test_auc = (report.get("test") or {}).get("auc", {})
        fields = json.loads(m.model_dump_json())
        fields.pop("files"), fields.pop("schema_version")
        fields["targets"] = [{**fields["targets"][j],
                              "prior_accuracy": float(prior[j]) if np.isfinite(prior[j]) else t.prior_accuracy,
                              "test_auc": None if np.isnan(test_auc.get(t.name, np.nan)) else test_auc[t.name]}
                             for j, t in enumerate(m.targets)]
        fields["targets"] += [{"name": t, "expected_output_tokens": float(expected[j]),
                               "prior_accuracy": float(prior[j]), "input_cost_per_token": prices[j][0],
                               "output_cost_per_token": prices[j][1],
                               "test_auc": None if np.isnan(test_auc.get(t, np.nan)) else test_auc[t]}
                              for j, t in enumerate(names) if t in new]
        fields["presets"] = {k: {kk: v[kk] for kk in ("kind", "value", "description", "validation_accuracy",
                                                      "validation_cost")} for k, v in report["presets"].items()}
        fields["creator"] = {**fields.get("creator", {}), "continued_from": parent.source,
                             "parent_trunk_sha256": m.files["trunk.onnx"].sha256,
                             "continue_options": json.dumps(asdict(cfg))}
        if fields.get("parity"):
            fields["parity"]["trunk_max_abs_diff"] = diff
        bundle = write_bundle(out, files, fields)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return bundle, report
