"""Export: the encoder cut after its deepest selected layer, and the whole trunk, as ONNX.

``torch.onnx.export(dynamo=True)`` of the truncated transformers model, dynamic batch
and sequence axes, emitting the pooled features in the order the trunk expects
(for each selected layer, for each pooling). Parity against torch is checked on real
prompts; optional dynamic int8 quantisation of the encoder (onnxruntime).

An ONNX file is one protobuf, which cannot exceed 2 GB: an encoder whose weights pass ``EXTERNAL_DATA_BYTES``
(or any encoder, with ``external_data=True``) keeps them in ``<name>.data`` beside the graph. Every step here
that writes a graph names its weights file the same way and removes a stale one, and
:func:`external_data_files` tells the bundle writer which files travel with a graph.
"""

from __future__ import annotations

import copy
import logging
import re
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ..errors import PrefillRouterError
from ..sessions import pad_batch
from .features import POOLINGS, forward_hidden_states, pool_hidden_states

logger = logging.getLogger(__name__)

# torch.onnx's own threshold for writing weights beside the graph (a protobuf cannot exceed 2 GB; the graph needs room)
EXTERNAL_DATA_BYTES = 1536 * 1024 * 1024


def external_data_files(path: Path) -> list[str]:
    """Names of the files (beside ``path``) that hold the weights of the ONNX graph at ``path``; [] when inline."""
    import onnx
    from onnx.external_data_helper import ExternalDataInfo, uses_external_data

    model = onnx.load(str(path), load_external_data=False)
    tensors = list(model.graph.initializer) + [a.t for n in model.graph.node for a in n.attribute if a.HasField("t")]
    names = sorted({ExternalDataInfo(t).location for t in tensors if uses_external_data(t)})
    for name in names:
        if Path(name).name != name:
            raise ValueError(f"{path} keeps weights in {name!r}, not a file beside it; re-save the graph")
    return names


def _remove_weights_of(path: Path) -> None:
    """Delete the weights files of the graph at ``path``, if any, before a new graph is written there: onnx appends to
    an existing data file, and a graph now saved inline would leave a stale one beside it."""
    if path.exists():
        for old in external_data_files(path):
            (path.parent / old).unlink(missing_ok=True)


def initializer_bytes(model: Any) -> int:
    """Bytes of an in-memory ONNX model's weights (without serialising it: ``ByteSize`` fails past 2 GB)."""
    from onnx import helper

    total = 0
    for t in model.graph.initializer:
        n = int(np.prod(t.dims)) if len(t.dims) else 1
        total += n * helper.tensor_dtype_to_np_dtype(t.data_type).itemsize
    return total


def save_graph(model: Any, path: Path, *, external_data: bool | None = None) -> list[str]:
    """Save an in-memory ONNX model at ``path``: weights in ``<name>.data`` when ``external_data`` is True, or when it
    is None and they pass ``EXTERNAL_DATA_BYTES``; inline otherwise. The weights files a graph at ``path`` used before
    are removed first (onnx appends to an existing data file). Returns the weights files written."""
    import onnx

    _remove_weights_of(path)
    external = external_data if external_data is not None else initializer_bytes(model) > EXTERNAL_DATA_BYTES
    if external:
        onnx.save(model, str(path), save_as_external_data=True, all_tensors_to_one_file=True,
                  location=f"{path.name}.data")
        # onnx moved the weights out of the in-memory model into the file: read them back, so the model stays whole
        from onnx.external_data_helper import load_external_data_for_model

        load_external_data_for_model(model, str(path.parent))
    else:
        onnx.save(model, str(path))
    return external_data_files(path)


def _truncate(base: nn.Module, deepest: int, num_layers: int) -> nn.Module:
    """Keep the first ``deepest`` blocks; drop the final norm unless the last layer is kept."""
    # copy only the blocks kept (a deep copy of the whole model first would need twice its memory)
    holder: Any = base if hasattr(base, "layers") else getattr(base, "encoder", None)
    attr = "layers" if hasattr(base, "layers") else "layer"
    blocks = getattr(holder, attr, None) if holder is not None else None
    if blocks is None:
        raise NotImplementedError(f"do not know how to truncate {type(base).__name__}; it has no .layers")
    try:
        setattr(holder, attr, blocks[:deepest])
        m: Any = copy.deepcopy(base)  # HF modules: attributes checked with hasattr below
    finally:
        setattr(holder, attr, blocks)
    if hasattr(m, "layers"):
        # the last hidden state transformers reports is the final norm's output: a cut model's last block is not the
        # model's last, so its state must stay un-normed, as the full model reports it (Llama & co. name the norm
        # "norm", ModernBERT "final_norm")
        for name in ("norm", "final_norm", "final_layernorm"):
            if deepest < num_layers and isinstance(getattr(m, name, None), nn.Module):
                setattr(m, name, nn.Identity())
    for cfg in (m.config, getattr(m.config, "text_config", None)):
        if cfg is not None and hasattr(cfg, "num_hidden_layers"):
            cfg.num_hidden_layers = deepest
    if hasattr(m, "set_attn_implementation"):
        # eager attention exports to plain MatMul/Softmax; the SDPA decomposition adds IsNaN/Where guards
        # that made the SmolLM2 encoder 26% slower in onnxruntime (measured: 96.5 vs 71.8 ms, layer 6,
        # 290 tokens) for the same outputs (parity 1e-5)
        m.set_attn_implementation("eager")
    if getattr(m, "_can_set_experts_implementation", lambda: False)():
        # mixture-of-experts blocks: transformers' default grouped_mm is a custom op with no ONNX translation and the
        # eager loop over the experts hit is data-dependent (nonzero); batched_mm gathers each token's experts' weights
        # and multiplies in one batched matmul, which exports
        m.set_experts_implementation("batched_mm")
    return m


class PooledEncoder(nn.Module):
    """(input_ids, attention_mask) -> (batch, len(layers) * len(pooling) * hidden) pooled features."""

    def __init__(self, base: nn.Module, layers: Sequence[int], pooling: Sequence[str], num_layers: int) -> None:
        super().__init__()
        self.layers = list(layers)
        self.pool_idx = [POOLINGS.index(p) for p in pooling]
        self.base = _truncate(base, max(layers), num_layers).eval()

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        hs = forward_hidden_states(self.base, input_ids, attention_mask)
        pooled = pool_hidden_states([hs[i] for i in self.layers], attention_mask)  # (b, n_layers, 2, H)
        pooled = pooled[:, :, self.pool_idx]
        return pooled.reshape(pooled.shape[0], -1)


def export_encoder(enc: PooledEncoder, path: Path, example_ids: torch.Tensor, example_mask: torch.Tensor, *,
                   external_data: bool | None = None) -> list[str]:
    """Export ``enc`` to ``path``; returns the weights files written beside it (see the module's docstring)."""
    batch = torch.export.Dim("batch", min=1, max=4096)
    seq = torch.export.Dim("sequence", min=2, max=131072)
    _remove_weights_of(path)
    with torch.inference_mode():
        # external_data=False still writes the weights beside the graph past torch's threshold (1.5 GB)
        torch.onnx.export(
            enc, (example_ids, example_mask), str(path), dynamo=True, external_data=bool(external_data),
            input_names=["input_ids", "attention_mask"], output_names=["features"],
            dynamic_shapes={"input_ids": {0: batch, 1: seq}, "attention_mask": {0: batch, 1: seq}},
            optimize=True, verbose=False,
        )
    return external_data_files(path)


class ExportCheckError(PrefillRouterError):
    """The encoder cannot be served: it does not export to ONNX, or its export computes other features."""


def _root_cause(err: BaseException) -> str:
    """``Type: first line`` of the innermost exception of a chain (torch.onnx wraps the failing op's error in two
    more), without terminal colour codes."""
    while (inner := err.__cause__ or err.__context__) is not None and inner is not err:
        err = inner
    first = next((line for line in str(err).splitlines() if line.strip()), "")
    return f"{type(err).__name__}: {_ANSI.sub('', first)[:300]}"


_ANSI = re.compile(r"\x1b\[[0-9;]*m")


def check_encoder_exports(model: nn.Module, num_layers: int, ids: Sequence[Sequence[int]], pad_id: int,
                          name: str, tolerance: float = 1e-3) -> dict[str, float]:
    """Before hours of feature extraction: export the encoder cut after its first block, run it in onnxruntime, and
    compare its features with torch's - through the cut model and through the full model (whose hidden state after
    block 1 the training features are made of). Raises :class:`ExportCheckError` naming the encoder and the cause."""
    import tempfile

    import onnxruntime as ort

    a, m = pad_batch(ids, pad_id)
    arch = ", ".join(getattr(getattr(model, "config", None), "architectures", None) or [type(model).__name__])
    with tempfile.TemporaryDirectory(prefix="prefill-export-check-") as tmp:
        try:
            enc = PooledEncoder(model, [1], list(POOLINGS), num_layers).eval()
            export_encoder(enc, Path(tmp) / "encoder.onnx", torch.tensor(a), torch.tensor(m))
            sess = ort.InferenceSession(str(Path(tmp) / "encoder.onnx"), providers=["CPUExecutionProvider"])
            got = sess.run(["features"], {"input_ids": a, "attention_mask": m})[0]
        except Exception as err:  # torch.onnx and onnxruntime raise many kinds
            raise ExportCheckError(
                f"encoder {name} ({arch}) cannot be served: its first block does not export to ONNX and run in "
                f"onnxruntime ({_root_cause(err)}). Nothing was trained; choose another encoder (dense decoder and "
                "BERT-like architectures export) or report it with this message."
            ) from err
        with torch.inference_mode():
            cut = enc(torch.tensor(a), torch.tensor(m)).numpy()
            full = pool_hidden_states([forward_hidden_states(model, torch.tensor(a), torch.tensor(m))[1]],
                                      torch.tensor(m)).reshape(len(ids), -1).numpy()
    diffs = {"onnx_vs_torch": float(np.abs(got - cut).max() / (np.abs(cut).max() + 1e-6)),
             "cut_vs_full_model": float(np.abs(cut - full).max() / (np.abs(full).max() + 1e-6))}
    if max(diffs.values()) > tolerance:
        raise ExportCheckError(
            f"encoder {name} ({arch}): the exported graph's features differ from the model's (relative max "
            f"difference {diffs}, tolerance {tolerance:g}), so a router trained on the model's would be served "
            "other features. Nothing was trained; choose another encoder or report it with this message.")
    return diffs


def export_trunk(trunk: nn.Module, path: Path, n_features: int) -> None:
    batch = torch.export.Dim("batch", min=1, max=65536)
    x = torch.zeros((2, n_features), dtype=torch.float32)
    with torch.inference_mode():
        torch.onnx.export(trunk, (x,), str(path), dynamo=True, external_data=False, input_names=["features"],
                          output_names=["p_correct"], dynamic_shapes={"features": {0: batch}}, optimize=True,
                          verbose=False)


def quantize_encoder(src: Path, dst: Path, keep_fp32_in_features: int | None = None, *,
                     external_data: bool | None = None) -> list[str]:
    """Dynamic int8 (per-tensor) MatMuls; MatMuls whose weight has ``keep_fp32_in_features`` rows stay fp32.

    SmolLM2's MLP down-projections (in_features = intermediate size) see the heavy-tailed activations
    that per-tensor int8 cannot represent: quantizing them moved probabilities by 0.13 on average in
    our measurement, keeping them fp32 by 0.02, at 1.4x the fp32 speed instead of 1.7x.
    Returns the names of the MatMuls left in fp32. ``dst``'s weights go beside it (``<name>.data``) when
    ``external_data`` is True, or when it is None and the source's weights were beside the source.
    """
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    model = onnx.load(str(src), load_external_data=False)  # the weights' shapes are enough here
    shapes = {i.name: tuple(i.dims) for i in model.graph.initializer}
    keep = [n.name for n in model.graph.node if n.op_type == "MatMul" and keep_fp32_in_features is not None
            and len(n.input) > 1 and shapes.get(n.input[1], (0,))[0] == keep_fp32_in_features]
    external = external_data if external_data is not None else bool(external_data_files(src))
    _remove_weights_of(dst)
    quantize_dynamic(str(src), str(dst), weight_type=QuantType.QInt8, per_channel=False,
                     op_types_to_quantize=["MatMul"], nodes_to_exclude=keep, use_external_data_format=external)
    return keep


def quantize_embeddings(src: Path, dst: Path, min_rows: int = 1024, *, external_data: bool | None = None) -> list[str]:
    """Store each large embedding table (a ``Gather`` on a 2-D float initializer used nowhere else) as int8 with
    one fp32 scale per row, dequantised after the lookup: ``Mul(Cast(Gather(q, ids)), Gather(scale, ids))``.

    Weight-only, so a prompt's features never depend on the other prompts of a call (unlike dynamic int8
    activations); symmetric per-row scales keep each token's vector to within 1/254 of its largest entry.
    SmolLM2's 49,152 x 576 table shrinks from 113 MB to 28 MB. Returns the names of the tables quantised.
    ``dst`` is saved by :func:`save_graph` (``external_data`` as there).
    """
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    model = onnx.load(str(src))
    graph = model.graph
    inits = {i.name: i for i in graph.initializer}
    uses: dict[str, int] = {}
    for name in [i for node in graph.node for i in node.input] + [o.name for o in graph.output]:
        uses[name] = uses.get(name, 0) + 1
    done: list[str] = []
    nodes = []
    for node in graph.node:
        axis = next((a.i for a in node.attribute if a.name == "axis"), 0)
        table = node.input[0] if node.op_type == "Gather" else None
        if table is None or table not in inits or uses.get(table) != 1 or axis != 0 or \
                inits[table].data_type != TensorProto.FLOAT or len(inits[table].dims) != 2 or \
                inits[table].dims[0] < min_rows:
            nodes.append(node)
            continue
        w = numpy_helper.to_array(inits[table]).astype(np.float32)
        scale = np.abs(w).max(axis=1, keepdims=True) / 127.0
        scale[scale == 0] = 1.0
        q = np.clip(np.rint(w / scale), -127, 127).astype(np.int8)
        graph.initializer.remove(inits[table])
        graph.initializer.extend([numpy_helper.from_array(q, f"{table}_int8"),
                                  numpy_helper.from_array(scale.astype(np.float32), f"{table}_row_scale")])
        ids, out = node.input[1], node.output[0]
        nodes += [helper.make_node("Gather", [f"{table}_int8", ids], [f"{out}_int8"], name=f"{node.name}_int8"),
                  helper.make_node("Gather", [f"{table}_row_scale", ids], [f"{out}_scale"], name=f"{node.name}_scale"),
                  helper.make_node("Cast", [f"{out}_int8"], [f"{out}_float"], name=f"{node.name}_cast",
                                   to=TensorProto.FLOAT),
                  helper.make_node("Mul", [f"{out}_float", f"{out}_scale"], [out], name=f"{node.name}_dequant")]
        done.append(table)
    del graph.node[:]
    graph.node.extend(nodes)
    if initializer_bytes(model) <= EXTERNAL_DATA_BYTES:  # the checker serialises the model: not past 2 GB
        onnx.checker.check_model(model)
    save_graph(model, dst, external_data=external_data)
    return done


def parity(enc: PooledEncoder, trunk: nn.Module, encoder_onnx: Path, trunk_onnx: Path,
           ids: Sequence[Sequence[int]], pad_id: int) -> dict[str, Any]:
    """Compare torch and onnxruntime on the same padded batch of real prompts."""
    import onnxruntime as ort

    a, m = pad_batch(ids, pad_id)
    with torch.inference_mode():
        f_t = enc(torch.tensor(a), torch.tensor(m)).numpy()
        p_t = trunk(torch.tensor(f_t)).numpy()
    es = ort.InferenceSession(str(encoder_onnx), providers=["CPUExecutionProvider"])
    ts = ort.InferenceSession(str(trunk_onnx), providers=["CPUExecutionProvider"])
    f_o = es.run(["features"], {"input_ids": a, "attention_mask": m})[0]
    p_o = ts.run(["p_correct"], {"features": f_o})[0]
    p_t_on_o = ts.run(["p_correct"], {"features": f_t})[0]
    return {
        "encoder_max_abs_diff": float(np.abs(f_t - f_o).max()),
        "encoder_max_rel_diff": float((np.abs(f_t - f_o) / (np.abs(f_t) + 1.0)).max()),
        "trunk_max_abs_diff": float(np.abs(p_t - p_t_on_o).max()),
        "probability_max_abs_diff": float(np.abs(p_t - p_o).max()),
        "prompts_checked": len(ids),
    }


def time_depths(base: nn.Module, num_layers: int, ids: torch.Tensor, mask: torch.Tensor,
                depths: Sequence[int] | None = None, repeats: int = 2) -> dict[int, float]:
    """Forward time (ms) of the encoder truncated at each depth, on one batch."""
    out: dict[int, float] = {}
    for d in depths or range(1, num_layers + 1):
        m = _truncate(base, d, num_layers).eval()
        with torch.inference_mode():
            forward_hidden_states(m, ids, mask)
            t = []
            for _ in range(repeats):
                t0 = time.perf_counter()
                forward_hidden_states(m, ids, mask)
                t.append((time.perf_counter() - t0) * 1000)
        out[d] = float(np.median(t))
    return out
