"""Thin onnxruntime sessions for the two bundle graphs, I/O checked against the manifest."""

from __future__ import annotations

import ctypes
import logging
import os
import weakref
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Union

import numpy as np

from .errors import BundleSchemaError, ConfigurationError, InferenceError
from .onnxruntime_import import ort

logger = logging.getLogger("litellm_prefill_router")

#: an onnxruntime execution provider: its name, or (name, its options), e.g. ("CUDAExecutionProvider", {"device_id": 1})
ProviderSpec = Union[str, tuple[str, Mapping[str, Any]]]
CPU = "CPUExecutionProvider"

ENCODER_INPUTS = ("input_ids", "attention_mask")
ENCODER_OUTPUT = "features"
TRUNK_INPUT = "features"
TRUNK_OUTPUT = "p_correct"
MAX_BATCH_TOKENS = 2048  # padded tokens per encoder call: bounds onnxruntime's arena (see make_session)


def _usable_cpus() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


def _name(spec: ProviderSpec) -> str:
    return spec if isinstance(spec, str) else spec[0]


def resolve_providers(requested: Sequence[ProviderSpec] | None) -> list[ProviderSpec]:
    """The execution providers to run the encoder with, in priority order (None: CPU). A name onnxruntime does not
    know is an error; one this onnxruntime build lacks (CUDA without ``onnxruntime-gpu``) is skipped with a warning
    when ``CPUExecutionProvider`` is listed as the fallback, and an error otherwise - a router is never moved to the
    CPU, tens of times slower, without saying so."""
    if not requested:
        return [CPU]
    names = [_name(p) for p in requested]
    unknown = [n for n in names if n not in ort.get_all_providers()]
    if unknown:
        raise ConfigurationError(f"execution_providers: onnxruntime knows no {unknown}; its providers: "
                                 f"{ort.get_all_providers()}")
    available = ort.get_available_providers()
    usable = [p for p in requested if _name(p) in available]
    missing = [n for n in names if n not in available]
    if missing and (CPU not in names or not usable):
        hint = " (CUDA/TensorRT: install onnxruntime-gpu in place of onnxruntime)" if any(
            n.startswith(("CUDA", "Tensorrt")) for n in missing) else ""
        raise ConfigurationError(
            f"execution_providers {names}: {missing} not available in this onnxruntime {ort.__version__} (available: "
            f"{available}){hint}; or list {CPU!r} last to fall back to the CPU")
    if missing:
        logger.warning("prefill router: execution providers %s are not available in this onnxruntime (available: %s); "
                       "the encoder runs on %s", missing, available, [_name(p) for p in usable])
    return usable


# every session this process opened: a forked child must never free one (see _keep_inherited_sessions)
_OPENED: weakref.WeakSet[ort.InferenceSession] = weakref.WeakSet()


def _keep_inherited_sessions() -> None:
    """In a forked child: the sessions opened before the fork are never freed here. Their intra-op thread pools stayed
    in the parent, and freeing one joins threads the child does not have - the child hung (intra-op spinning off) or
    crashed with SIGSEGV at its exit (spinning on; onnxruntime#31961), whether a released predictor was collected or
    the interpreter exited. One reference each is leaked on purpose (their memory is the parent's, shared)."""
    for session in list(_OPENED):
        ctypes.pythonapi.Py_IncRef(ctypes.py_object(session))
    _OPENED.clear()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_keep_inherited_sessions)


def make_session(path: Path, *, intra_op_threads: int | None = None, providers: Sequence[ProviderSpec] | None = None,
                 spinning: bool = False) -> ort.InferenceSession:
    opts = ort.SessionOptions()
    # explicit: onnxruntime's own default (0) measured 10-20% slower here than naming the usable cores
    opts.intra_op_num_threads = int(intra_op_threads or _usable_cpus())
    opts.inter_op_num_threads = 1
    # onnxruntime's intra-op threads spin-wait for work after each run by default: with two sessions (encoder, trunk)
    # and the serving threads beside them they take the cores those need (session 31, 2 cores: routing added 37 vs
    # 47 ms p50 at 256 tokens without spinning; 7-14% fewer routes/s when saturated)
    if not spinning:
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    # the CPU memory arena stays on: without it the encoder ran 1.2-1.5x slower (measured at 256 and
    # 1024 tokens); batches are capped in tokens instead (PrefillPredictor.max_batch_tokens) to bound it
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    chosen = resolve_providers(providers)
    try:
        sess = ort.InferenceSession(str(path), sess_options=opts,
                                    providers=[p if isinstance(p, str) else (p[0], dict(p[1])) for p in chosen])
    except Exception as err:  # onnxruntime raises its own untyped errors
        # onnxruntime 1.32 says "External data path does not exist: ...", 1.23 "cannot get file size: ... .data"
        if "external data" in str(err).lower() or f"{path.name}.data" in str(err):
            raise BundleSchemaError(
                f"onnxruntime cannot load {path}: its weights live in a file beside it that the bundle lacks ({err}). "
                "Copy the whole bundle directory; bundles that earlier versions of litellm-prefill-router trained "
                "with an encoder over 1.5 GB (fp32) left out encoder.onnx.data: retrain those (features are cached)."
            ) from err
        raise BundleSchemaError(f"onnxruntime cannot load {path}: {err}. Re-export the bundle.") from err
    first = _name(chosen[0])
    if first not in sess.get_providers():  # e.g. CUDA's libraries failed to load: onnxruntime fell back on its own
        if CPU not in [_name(p) for p in chosen]:
            raise ConfigurationError(
                f"onnxruntime did not start {first} for {path} (it runs on {sess.get_providers()}; its log above says "
                f"why, e.g. missing CUDA/cuDNN libraries); fix that, or list {CPU!r} last to fall back to the CPU")
        logger.warning("prefill router: onnxruntime did not start %s for %s; it runs on %s", first, path,
                       sess.get_providers())
    _OPENED.add(sess)
    return sess


def _check_io(sess: ort.InferenceSession, path: Path, inputs: tuple[str, ...], output: str, width: int | None,
              width_name: str) -> None:
    names = tuple(i.name for i in sess.get_inputs())
    if sorted(names) != sorted(inputs):
        raise BundleSchemaError(f"{path} has inputs {names}, expected {inputs}; re-export the bundle.")
    outs = {o.name: o for o in sess.get_outputs()}
    if output not in outs:
        raise BundleSchemaError(f"{path} has outputs {list(outs)}, expected {output!r}; re-export the bundle.")
    shape = outs[output].shape
    if width is not None and len(shape) == 2 and isinstance(shape[1], int) and shape[1] != width:
        raise BundleSchemaError(
            f"{path} output {output!r} has width {shape[1]} but the manifest's {width_name} is {width}; "
            "the graph and the manifest come from different exports. Re-export the bundle."
        )


class EncoderSession:
    """encoder.onnx: (input_ids, attention_mask) -> pooled features (batch, feature_dim)."""

    def __init__(self, path: Path, feature_dim: int, *, intra_op_threads: int | None = None,
                 providers: Sequence[ProviderSpec] | None = None, spinning: bool = False) -> None:
        self.path = path
        self.session = make_session(path, intra_op_threads=intra_op_threads, providers=providers, spinning=spinning)
        _check_io(self.session, path, ENCODER_INPUTS, ENCODER_OUTPUT, feature_dim, "encoder.feature_dim")

    def __call__(self, input_ids: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
        try:
            (out,) = self.session.run([ENCODER_OUTPUT], {"input_ids": input_ids, "attention_mask": attention_mask})
        except Exception as err:
            raise InferenceError(f"encoder {self.path} failed on a batch of shape {input_ids.shape}: {err}") from err
        return np.asarray(out, dtype=np.float32)


class TrunkSession:
    """trunk.onnx: features -> P(correct) per target (batch, K)."""

    def __init__(self, path: Path, n_targets: int, feature_dim: int, *, intra_op_threads: int | None = None,
                 spinning: bool = False) -> None:
        self.path = path
        self.session = make_session(path, intra_op_threads=intra_op_threads, spinning=spinning)
        _check_io(self.session, path, (TRUNK_INPUT,), TRUNK_OUTPUT, n_targets, "number of targets")
        shape = self.session.get_inputs()[0].shape
        if len(shape) == 2 and isinstance(shape[1], int) and shape[1] != feature_dim:
            raise BundleSchemaError(
                f"{path} expects {shape[1]} features but the manifest's encoder.feature_dim is {feature_dim}; "
                "re-export the bundle."
            )

    def __call__(self, features: np.ndarray) -> np.ndarray:
        try:
            (out,) = self.session.run([TRUNK_OUTPUT], {TRUNK_INPUT: features.astype(np.float32, copy=False)})
        except Exception as err:
            raise InferenceError(f"trunk {self.path} failed on features of shape {features.shape}: {err}") from err
        out = np.asarray(out, dtype=np.float32)
        if not np.all(np.isfinite(out)):
            raise InferenceError(f"trunk {self.path} returned non-finite probabilities")
        return out


def pad_batch(ids: Sequence[Sequence[int]], pad_id: int) -> tuple[np.ndarray, np.ndarray]:
    """Right-padded (input_ids, attention_mask) int64 arrays for token-id lists."""
    width = max(len(x) for x in ids)
    input_ids = np.full((len(ids), width), pad_id, dtype=np.int64)
    mask = np.zeros((len(ids), width), dtype=np.int64)
    for i, row in enumerate(ids):
        input_ids[i, : len(row)] = row
        mask[i, : len(row)] = 1
    return input_ids, mask


def encode_grouped(encoder: EncoderSession, ids: Sequence[Sequence[int]], pad_id: int, feature_dim: int, *,
                   max_prompts: int, max_tokens: int = MAX_BATCH_TOKENS) -> np.ndarray:
    """(n, feature_dim) pooled features: encoder calls of at most ``max_prompts`` prompts and ``max_tokens``
    padded tokens, grouped by length to limit padding. ``max_prompts=1`` makes every row independent of the
    others, which a dynamic-int8 encoder needs (its activation scales are per call)."""
    feats = np.zeros((len(ids), feature_dim), dtype=np.float32)
    order = sorted(range(len(ids)), key=lambda i: len(ids[i]))
    batch: list[int] = []
    for i in order:  # ascending length: the last row of a batch is its widest
        if batch and (len(batch) >= max_prompts or (len(batch) + 1) * len(ids[i]) > max_tokens):
            feats[batch] = encoder(*pad_batch([ids[j] for j in batch], pad_id))
            batch = []
        batch.append(i)
    if batch:
        feats[batch] = encoder(*pad_batch([ids[j] for j in batch], pad_id))
    return feats
