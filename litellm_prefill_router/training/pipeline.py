"""``prefill-router train``: dataset -> features -> probes -> SharedTrunkNet -> calibrated, verified bundle."""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..bundle import Bundle, check_bundle_destination, write_bundle
from ..costs import cost_matrix
from ..drift import reference_distribution
from ..errors import PrefillRouterError
from . import calibrate as cal
from .data import RoutingDataset, load_dataset, require_labels
from .encoders import DEFAULT_ENCODER, EncoderHandle, cache_root, load_encoder
from .evaluation import binarize
from .export import time_depths
from .features import FeatureCache, extract_features, prompt_encoder, resolve_device
from .packaging import bundle_manifest, export_bundle_files
from .probes import ProbeResult, plot_probes, run_probes, select_layer
from .trunk import FittedTrunk, TrunkConfig, fit_trunk

logger = logging.getLogger(__name__)


@dataclass
class TrainOptions:
    encoder: str = DEFAULT_ENCODER
    targets: Sequence[str] | None = None
    layers: Sequence[int] | None = None  # None = auto (probes)
    max_auc_loss: float = 0.012  # ~ fold-to-fold noise of the probe AUC; shallower = faster (see README)
    max_tokens: int = 512
    seeds: int = 5
    keep: int = 3
    quantize: bool = True
    # the encoder's weights in encoder.onnx.data beside the graph: None = only past 1.5 GB (an ONNX file cannot
    # pass 2 GB), True = always
    external_data: bool | None = None
    quantize_check_rows: int = 100_000  # all validation rows: a 400-row subsample was too noisy at 0.005
    val_fraction: float = 0.15
    expected_output_tokens: float = 256.0
    parity_tolerance: float = 2e-3
    probe_folds: int = 3
    probe_max_rows: int = 3000
    trunk: TrunkConfig = field(default_factory=TrunkConfig)
    cache_dir: Path | None = None
    progress: bool = True
    # where features are extracted: auto (a CUDA GPU if torch has one, else the CPU), cpu, cuda, cuda:N
    device: str = "auto"


class Stopwatch:
    def __init__(self) -> None:
        self.stages: dict[str, float] = {}

    def stage(self, name: str) -> _Stage:
        return _Stage(self, name)


class _Stage:
    def __init__(self, sw: Stopwatch, name: str) -> None:
        self.sw, self.name = sw, name

    def __enter__(self) -> None:
        self.t0 = time.perf_counter()
        logger.info("stage %s ...", self.name)

    def __exit__(self, *exc: object) -> None:
        self.sw.stages[self.name] = round(time.perf_counter() - self.t0, 2)
        logger.info("stage %s: %.1fs", self.name, self.sw.stages[self.name])


def split_validation(ds: RoutingDataset, train_idx: np.ndarray, fraction: float) -> tuple[np.ndarray, np.ndarray]:
    """Deterministic validation rows from the training split, stratified by benchmark."""
    by_b: dict[str, list[int]] = {}
    for i in train_idx:
        by_b.setdefault(ds.rows[i].benchmark, []).append(int(i))
    val: list[int] = []
    for idx in by_b.values():
        idx.sort(key=lambda i: hashlib.sha256(("val:" + ds.rows[i].id).encode()).hexdigest())
        val += idx[: max(1, int(round(len(idx) * fraction)))]
    vs = set(val)
    return np.array([i for i in train_idx if i not in vs]), np.array(sorted(vs))


def compute_features(ds: RoutingDataset, opts: TrainOptions, *,
                     check_export: bool = False) -> tuple[EncoderHandle, FeatureCache]:
    """The encoder and the dataset's cached features; ``check_export``: first make sure the encoder can be served
    (:func:`check_export_once`), before the long extraction."""
    device = resolve_device(opts.device)  # a device torch cannot use fails before anything is loaded
    handle = load_encoder(opts.encoder)
    if check_export:
        check_export_once(handle, opts.max_tokens)
    cache = extract_features(handle, ds.prompts(), dataset_hash=ds.content_hash(),
                             cache_dir=Path(opts.cache_dir or cache_root() / "features"),
                             max_tokens=opts.max_tokens, progress=opts.progress, device=device)
    return handle, cache


def check_export_once(handle: EncoderHandle, max_tokens: int) -> None:
    """:func:`~.export.check_encoder_exports` on two real prompts, once per encoder revision and library versions (a
    marker in the cache remembers a pass): an encoder that cannot be exported fails in seconds, not after its
    features."""
    import onnxruntime
    import torch
    import transformers

    from .. import __version__
    from .export import check_encoder_exports

    key = hashlib.sha256(json.dumps([handle.id, handle.revision, torch.__version__, transformers.__version__,
                                     onnxruntime.__version__, __version__, "v1"]).encode()).hexdigest()[:16]
    marker = cache_root() / "export-checks" / f"{key}.json"
    if marker.exists():
        return
    ids = [e.ids for e in prompt_encoder(handle, max_tokens).encode_batch(
        ["What is the capital of France?", "Prove that the square root of two is irrational, step by step."])]
    t0 = time.perf_counter()
    diffs = check_encoder_exports(handle.model, handle.num_hidden_layers, ids, handle.pad_token_id, handle.id)
    try:
        marker.parent.mkdir(parents=True, exist_ok=True)
        marker.write_text(json.dumps({"encoder": handle.id, "revision": handle.revision, "differences": diffs,
                                      "seconds": round(time.perf_counter() - t0, 2)}))
    except OSError as err:  # a read-only cache costs the check again next time, nothing more
        logger.info("export check passed; could not remember it in %s (%s)", marker, err)


def _probe_key(scores: np.ndarray, targets: Sequence[str], rows: np.ndarray, opts: TrainOptions) -> str:
    n_probed = min(len(rows), opts.probe_max_rows)
    h = hashlib.sha256(json.dumps([list(targets), opts.probe_folds, n_probed, "v1"]).encode())
    h.update(np.ascontiguousarray(rows).tobytes())
    h.update(np.nan_to_num(np.ascontiguousarray(scores[rows]), nan=-1.0).tobytes())
    return h.hexdigest()[:16]


def cached_probes(cache: FeatureCache, scores: np.ndarray, targets: Sequence[str], rows: np.ndarray,
                  opts: TrainOptions) -> ProbeResult:
    """Probe results are cached beside the features (keyed by targets, rows, labels), so a retrain skips them."""
    path = cache.directory / f"probes-{_probe_key(scores, targets, rows, opts)}.json"
    if path.exists():
        raw = json.loads(path.read_text())
        logger.info("probes: cache hit %s", path)
        return ProbeResult(rows=raw["rows"], summary=raw["summary"],
                           forward_ms_by_depth={int(k): v for k, v in raw["forward_ms_by_depth"].items()})
    return run_probes(cache, scores, targets, rows, folds=opts.probe_folds, max_rows=opts.probe_max_rows,
                      progress=opts.progress)


def _save_probes(cache: FeatureCache, scores: np.ndarray, targets: Sequence[str], rows: np.ndarray,
                 opts: TrainOptions, probes: ProbeResult) -> None:
    path = cache.directory / f"probes-{_probe_key(scores, targets, rows, opts)}.json"
    path.write_text(json.dumps({"rows": probes.rows, "summary": probes.summary,
                                "forward_ms_by_depth": probes.forward_ms_by_depth}, default=_json_default))


def train(data: str | Path | RoutingDataset, out: str | Path, opts: TrainOptions | None = None,
          models_json: str | Path | None = None) -> tuple[Bundle, dict[str, Any]]:
    opts = opts or TrainOptions()
    check_bundle_destination(out)  # before minutes of work, not after
    sw = Stopwatch()
    t_start = time.perf_counter()
    with sw.stage("load data"):
        ds = data if isinstance(data, RoutingDataset) else load_dataset(data, models_json=models_json,
                                                                         targets=opts.targets)
        targets = ds.targets
        missing_price = [t for t in targets if t not in ds.prices]
        if missing_price:
            raise PrefillRouterError(f"no prices for targets {missing_price}; give --models-json with "
                                     "input_cost_per_token/output_cost_per_token per target")
        scores = ds.scores(targets)
        train_idx, test_idx = ds.indices("train"), ds.indices("test")
        if len(ds.indices("val")):
            fit_idx, val_idx = train_idx, ds.indices("val")
        else:
            fit_idx, val_idx = split_validation(ds, train_idx, opts.val_fraction)
        # accuracies use the dataset's convention: a float score counts as correct at >= 0.5
        hard = binarize(scores).astype(np.float32)
        # a target that is always right (or wrong) still teaches its prior; one without labels teaches nothing
        require_labels(hard, fit_idx, targets, lambda t: (
            "Collect labels on more prompts, or leave it out with --targets"), both_outcomes=False)
    with sw.stage("encoder + features"):
        handle, cache = compute_features(ds, opts, check_export=True)
    import torch

    probe_ids = prompt_encoder(handle, opts.max_tokens).encode_batch([ds.rows[i].prompt for i in fit_idx[:1]])
    with sw.stage("probes"):
        probes = cached_probes(cache, scores, targets, fit_idx, opts)
        selected = select_layer(probes, opts.max_auc_loss)
        if not probes.forward_ms_by_depth:
            ids = torch.tensor([(probe_ids[0].ids * 256)[:256]])
            probes.forward_ms_by_depth = time_depths(handle.model, handle.num_hidden_layers, ids,
                                                     torch.ones_like(ids))
            _save_probes(cache, scores, targets, fit_idx, opts, probes)
    layers = list(opts.layers) if opts.layers else [int(selected["layer"])]
    pooling = ["mean", "last"] if opts.layers else list(selected["pooling"])
    bad = [l for l in layers if not 1 <= l <= handle.num_hidden_layers]
    if bad:
        raise PrefillRouterError(f"--layers {bad} out of range 1..{handle.num_hidden_layers} for {handle.id}")
    with sw.stage("trunk"):
        x = cache.select(layers, pooling)
        tcfg = TrunkConfig(**{**asdict(opts.trunk), "seeds": opts.seeds, "keep": opts.keep})
        fitted = fit_trunk(x[fit_idx], scores[fit_idx], x[val_idx], scores[val_idx], tcfg)
    with sw.stage("calibration + evaluation"):
        prices = [ds.prices[t] for t in targets]
        expected = [ds.mean_output_tokens(t) or opts.expected_output_tokens for t in targets]
        costs = cost_matrix(prices, cache.n_tokens.astype(np.float64), expected)
        report = _evaluate(fitted, x, hard, costs, targets, val_idx, test_idx, cache.n_tokens, opts.max_tokens)
    with sw.stage("export + parity"):
        t_export = time.perf_counter()
        work = Path(tempfile.mkdtemp(prefix="prefill-export-"))
        try:
            files, parity, quantized = export_bundle_files(handle, layers, pooling, fitted, ds, fit_idx, val_idx,
                                                           scores, cache, work, opts, report)
            report["probes"] = probes.to_dict()
            report["stage_seconds"] = {**sw.stages, "export + parity": round(time.perf_counter() - t_export, 2)}
            report["options"] = {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(opts).items()}
            (work / "report.json").write_text(json.dumps(report, indent=1, default=_json_default))
            plot_probes(probes, str(work / "probes.png"))
            cal.plot_curve(report["validation"]["curve"], report["validation"]["singles"],
                           report["validation"]["oracle_accuracy"], str(work / "curve_validation.png"),
                           report["presets"], "validation split")
            if report.get("test"):
                cal.plot_curve(report["test"]["curve"], report["test"]["singles"], report["test"]["oracle_accuracy"],
                               str(work / "curve_test.png"), report["presets"], "test split")
            for name in ("report.json", "probes.png", "curve_validation.png", "curve_test.png"):
                if (work / name).exists():
                    files[name] = work / name
            manifest = bundle_manifest(handle, layers, pooling, fitted, targets, prices, expected, scores, fit_idx,
                                       report, parity, quantized, opts)
            bundle = write_bundle(out, files, manifest)
        finally:
            shutil.rmtree(work, ignore_errors=True)
    report["stage_seconds"] = sw.stages
    report["total_seconds"] = round(time.perf_counter() - t_start, 1)
    return bundle, report


def _json_default(o: Any) -> Any:
    if isinstance(o, (np.floating, np.integer)):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    return str(o)


def _evaluate(fitted: FittedTrunk, x: np.ndarray, scores: np.ndarray, costs: np.ndarray, targets: list[str],
              val_idx: np.ndarray, test_idx: np.ndarray, n_tokens: np.ndarray, max_tokens: int) -> dict[str, Any]:
    """Presets calibrated on the validation rows, the test metrics, and the reference distribution of the
    predictions and prompt lengths on the validation rows (``prefill-router drift`` compares traffic with it).
    Accuracies and the oracle count a cell without a label at the model's predicted P(correct)
    (:func:`calibrate.fill_unlabelled`); AUCs use the labelled cells only. ``unlabelled_cells`` says how many cells
    were filled."""
    report: dict[str, Any] = {"targets": targets}
    p_val = fitted.predict(x[val_idx])
    s_val = cal.fill_unlabelled(scores[val_idx], p_val)
    curve = cal.sweep(p_val, costs[val_idx], s_val)
    single = cal.singles(costs[val_idx], s_val, targets)
    presets = cal.presets_from_sweep(curve, single)
    report["presets"] = presets
    report["validation"] = {"n": len(val_idx), "curve": curve, "singles": single,
                            "oracle_accuracy": float(np.max(s_val, 1).mean()),
                            "auc": cal.auc_per_target(p_val, scores[val_idx], targets),
                            "unlabelled_cells": int(np.isnan(scores[val_idx]).sum())}
    report["reference"] = reference_distribution(p_val, targets, n_tokens[val_idx], max_tokens)
    if len(test_idx):
        p_te = fitted.predict(x[test_idx])
        s_te, c_te = cal.fill_unlabelled(scores[test_idx], p_te), costs[test_idx]
        t_curve = cal.sweep(p_te, c_te, s_te)
        at_presets = {}
        for name, pr in presets.items():
            r = cal.routed(p_te, c_te, s_te, pr["kind"], pr["value"])
            at_presets[name] = {**r, **cal.gap_metrics(r["accuracy"], r["cost"], s_te, c_te)}
        auc = cal.auc_per_target(p_te, scores[test_idx], targets)
        report["test"] = {"n": len(test_idx), "curve": t_curve, "singles": cal.singles(c_te, s_te, targets),
                          "oracle_accuracy": float(np.max(s_te, 1).mean()),
                          "auc": auc, "mean_auc": float(np.nanmean(list(auc.values()))), "presets": at_presets,
                          "unlabelled_cells": int(np.isnan(scores[test_idx]).sum())}
    return report
