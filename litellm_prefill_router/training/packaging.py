"""From a fitted trunk to a bundle's files: the encoder cut at its layers and the trunk exported to ONNX and checked
against torch (:class:`ParityError` past the tolerance), the dynamic-int8 encoder kept only where the validation AUC
holds, and the manifest that pins them."""

from __future__ import annotations

import logging
import platform
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..drift import reference_distribution
from ..errors import PrefillRouterError
from . import calibrate as cal
from .data import RoutingDataset
from .encoders import EncoderHandle
from .features import FeatureCache, prompt_encoder
from .trunk import FittedTrunk

if TYPE_CHECKING:
    from .pipeline import TrainOptions

logger = logging.getLogger("litellm_prefill_router.training.pipeline")  # the lines `train` has always logged


class ParityError(PrefillRouterError):
    """The exported ONNX graphs do not reproduce torch within tolerance."""


def export_bundle_files(handle: EncoderHandle, layers: list[int], pooling: list[str], fitted: FittedTrunk,
                        ds: RoutingDataset, fit_idx: np.ndarray, val_idx: np.ndarray, scores: np.ndarray,
                        cache: FeatureCache, work: Path, opts: TrainOptions, report: dict[str, Any]
                        ) -> tuple[dict[str, Path], dict[str, Any], bool]:
    """The bundle's files exported in ``work`` (name -> path), the parity check's numbers, and whether the encoder
    shipped is the int8 one; ParityError where the graphs do not reproduce torch."""
    import torch

    from ..sessions import pad_batch
    from .export import PooledEncoder, export_encoder, export_trunk, external_data_files, parity

    penc = prompt_encoder(handle, opts.max_tokens)
    enc = PooledEncoder(handle.model, layers, pooling, handle.num_hidden_layers).eval()
    trunk = fitted.module()
    sample = [ds.rows[i].prompt for i in val_idx[:: max(1, len(val_idx) // 8)][:8]]
    ids = [e.ids for e in penc.encode_batch(sample)]
    a, m = pad_batch(ids, handle.pad_token_id)
    export_encoder(enc, work / "encoder.onnx", torch.tensor(a), torch.tensor(m), external_data=opts.external_data)
    export_trunk(trunk, work / "trunk.onnx", fitted.mean_.shape[0])
    par = parity(enc, trunk, work / "encoder.onnx", work / "trunk.onnx", ids, handle.pad_token_id)
    # the trained-on features (computed by the full model) must agree with the cut encoder, too
    rows = val_idx[:: max(1, len(val_idx) // 8)][:8]
    with torch.inference_mode():
        p_cache = trunk(torch.tensor(cache.select(layers, pooling, rows))).numpy()
        p_cut = trunk(enc(torch.tensor(a), torch.tensor(m))).numpy()
    par["cache_vs_export_probability_max_abs_diff"] = float(np.abs(p_cache - p_cut).max())
    par["tolerance"] = opts.parity_tolerance
    logger.info("parity: %s", par)
    worst = max(par["probability_max_abs_diff"], par["trunk_max_abs_diff"],
                par["cache_vs_export_probability_max_abs_diff"])
    if worst > opts.parity_tolerance:
        raise ParityError(f"exported graphs differ from torch by {worst:.2e} in probability (tolerance "
                          f"{opts.parity_tolerance:.0e}): {par}. Try another --layers or report a bug.")
    encoder = work / "encoder.onnx"
    if opts.quantize:
        inter = getattr(handle.model.config, "intermediate_size", None)
        encoder = _try_quantize(work, penc, ds, val_idx, scores, handle.pad_token_id, int(fitted.mean_.shape[0]),
                                report, inter, opts.quantize_check_rows, opts.external_data, opts.max_tokens)
    quantized = encoder != work / "encoder.onnx"
    # a large encoder's weights sit beside its graph (encoder.onnx.data): they travel in the bundle with it
    weights = {name: encoder.parent / name for name in external_data_files(encoder)}
    report["encoder_files"] = {"graph": "encoder.onnx", "external_data": sorted(weights)}
    files = {"encoder.onnx": encoder, **weights, "trunk.onnx": work / "trunk.onnx",
             "tokenizer.json": handle.tokenizer_json}
    if handle.chat_template:
        (work / "chat_template.jinja").write_text(handle.chat_template, encoding="utf-8")
        files["chat_template.jinja"] = work / "chat_template.jinja"
    return files, par, quantized


def _try_quantize(work: Path, penc: Any, ds: RoutingDataset, val_idx: np.ndarray, scores: np.ndarray, pad_id: int,
                  feature_dim: int, report: dict[str, Any], intermediate_size: int | None,
                  quantize_check_rows: int, external_data: bool | None, max_tokens: int) -> Path:
    """Dynamic int8 encoder (int8 MatMuls, int8 embedding table with per-row scales), kept only if the validation
    AUC drops by less than 0.005. Both encoders run through the runtime's sessions and grouping, the int8 one a
    prompt per call as PrefillPredictor serves it. Returns the encoder graph to ship: ``work/int8/encoder.onnx``
    (its own directory, so that its weights file, if any, already has the name the bundle gives it) or the fp32 one.
    An int8 encoder shifts the predictions a little (enough for ``prefill-router drift`` to see on the validation
    prompts themselves): when it is kept, the report's reference distribution becomes its predictions on the rows
    checked - what serving will give on data like the training data.
    """
    from ..sessions import EncoderSession, TrunkSession, encode_grouped
    from .export import quantize_embeddings, quantize_encoder

    fp32, int8 = work / "encoder.onnx", work / "int8" / "encoder.onnx"
    int8.parent.mkdir(exist_ok=True)
    kept = quantize_encoder(fp32, int8, intermediate_size, external_data=external_data)
    tables = quantize_embeddings(int8, int8, external_data=external_data)
    trunk = TrunkSession(work / "trunk.onnx", scores.shape[1], feature_dim)
    aucs = {}
    pick = np.linspace(0, len(val_idx) - 1, min(quantize_check_rows, len(val_idx))).astype(int)
    rows = val_idx[np.unique(pick)]
    encoded = penc.encode_batch([ds.rows[i].prompt for i in rows])
    ids = [e.ids for e in encoded]
    for name, graph, max_prompts in (("fp32", fp32, 16), ("int8", int8, 1)):
        feats = encode_grouped(EncoderSession(graph, feature_dim), ids, pad_id, feature_dim, max_prompts=max_prompts)
        p = trunk(feats)
        aucs[name] = float(np.nanmean(list(cal.auc_per_target(p, scores[rows], report["targets"]).values())))
    drop = aucs["fp32"] - aucs["int8"]
    report["quantization"] = {"rows_checked": len(rows), "val_mean_auc_fp32": aucs["fp32"],
                              "val_mean_auc_int8": aucs["int8"],
                              "auc_drop": drop, "accepted": drop < 0.005, "matmuls_kept_fp32": len(kept),
                              "embedding_tables_int8": tables}
    if drop < 0.005:
        report["reference"] = reference_distribution(p, report["targets"], np.array([e.n_tokens for e in encoded]),
                                                     max_tokens, source="validation split, served by the int8 encoder")
        return int8
    logger.warning("int8 encoder rejected: validation AUC drops by %.4f (>= 0.005)", drop)
    return fp32


def bundle_manifest(handle: EncoderHandle, layers: list[int], pooling: list[str], fitted: FittedTrunk,
                    targets: list[str], prices: list[tuple[float, float]], expected: list[float], scores: np.ndarray,
                    fit_idx: np.ndarray, report: dict[str, Any], parity: dict[str, Any], quantized: bool,
                    opts: TrainOptions) -> dict[str, Any]:
    """The manifest's fields (the bundle format's): the encoder as cut, the targets with prices and priors, the
    presets, the parity check, and what built it."""
    import onnx
    import torch
    import transformers

    from .. import __version__

    prior = np.nanmean(scores[fit_idx], axis=0)
    test_auc = (report.get("test") or {}).get("auc", {})
    presets = {k: {kk: v[kk] for kk in ("kind", "value", "description", "validation_accuracy", "validation_cost")}
               for k, v in report["presets"].items()}
    return {
        "encoder": {
            "id": handle.id, "revision": handle.revision, "kind": handle.kind, "layers": layers, "pooling": pooling,
            "num_hidden_layers": handle.num_hidden_layers, "hidden_size": handle.hidden_size,
            "feature_dim": int(fitted.mean_.shape[0]), "max_prefill_tokens": opts.max_tokens, "head_fraction": 0.25,
            "pad_token_id": handle.pad_token_id, "add_generation_prompt": handle.chat_template is not None,
            "add_special_tokens": handle.add_special_tokens, "template_vars": handle.template_vars,
            "chat_template": "chat_template.jinja" if handle.chat_template else None, "quantized": quantized,
        },
        "targets": [{"name": t, "expected_output_tokens": float(e), "prior_accuracy": float(p),
                     "input_cost_per_token": pr[0], "output_cost_per_token": pr[1],
                     "test_auc": (None if np.isnan(test_auc.get(t, np.nan)) else test_auc.get(t))}
                    for t, e, p, pr in zip(targets, expected, prior, prices)],
        "presets": presets,
        "default_preset": "balanced",
        "parity": {"encoder_max_abs_diff": parity["encoder_max_abs_diff"],
                   "trunk_max_abs_diff": parity["trunk_max_abs_diff"],
                   "probability_max_abs_diff": max(parity["probability_max_abs_diff"],
                                                   parity["cache_vs_export_probability_max_abs_diff"]),
                   "tolerance": parity["tolerance"], "prompts_checked": parity["prompts_checked"]},
        "creator": {"litellm_prefill_router": __version__, "torch": torch.__version__,
                    "transformers": transformers.__version__, "onnx": onnx.__version__,
                    "python": platform.python_version()},
    }
