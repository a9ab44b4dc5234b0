"""optimum-onnx's exporter and quantizer on the same truncated SmolLM2 (layer 7), for comparison.

optimum-onnx pins transformers < 4.58, so this runs in its own virtual environment:

    python -m venv /tmp/optvenv && . /tmp/optvenv/bin/activate
    pip install torch==2.13.0 "optimum-onnx[onnxruntime]" "transformers<4.58"
    HF_HUB_OFFLINE=1 python benchmarks/optimum_export_compare.py

It needs the SmolLM2 safetensors cache that `prefill-router train --encoder smollm2` writes under
~/.cache/litellm-prefill-router/encoders/. Prints JSON: export time, max |onnx - torch| of the
last hidden state over real tokens, and the same after optimum's dynamic int8 (avx2, per-tensor).
"""

from __future__ import annotations

import glob
import json
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch
from transformers import AutoModel, PreTrainedTokenizerFast

WORK = Path("/tmp/optimum-cmp")
LAYERS = 7
PROMPTS = ["What is the capital of France?", "Solve for x: 2x + 3 = 11. Show your work step by step please.",
           "hello", "Write a python function that reverses a string"] * 2


def truncated_checkpoint() -> tuple[torch.nn.Module, PreTrainedTokenizerFast, Path]:
    src = glob.glob(str(Path.home() / ".cache/litellm-prefill-router/encoders/smollm2-*"))[0]
    tok = PreTrainedTokenizerFast(tokenizer_file=f"{src}/tokenizer.json", pad_token="<|im_end|>",
                                  eos_token="<|im_end|>", bos_token="<|im_start|>")
    model = AutoModel.from_pretrained(src, torch_dtype=torch.float32).eval()
    model.layers = model.layers[:LAYERS]
    model.config.num_hidden_layers = LAYERS
    out = WORK / f"smol{LAYERS}"
    model.save_pretrained(out)
    tok.save_pretrained(out)
    return model, tok, out


def run(path: str, enc: dict) -> np.ndarray:
    sess = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    names = [i.name for i in sess.get_inputs()]
    feeds = {n: enc[n].numpy() for n in names if n in enc}
    if "position_ids" in names:
        feeds["position_ids"] = np.cumsum(enc["attention_mask"].numpy(), 1) - 1
    return sess.run(None, feeds)[0]


def main() -> None:
    from optimum.exporters.onnx import main_export
    from optimum.onnxruntime import ORTQuantizer
    from optimum.onnxruntime.configuration import AutoQuantizationConfig

    model, tok, ckpt = truncated_checkpoint()
    t0 = time.perf_counter()
    main_export(str(ckpt), output=str(WORK / "onnx"), task="feature-extraction", no_post_process=True)
    res: dict[str, object] = {"optimum_export_seconds": time.perf_counter() - t0}
    enc = tok(PROMPTS, return_tensors="pt", padding=True)
    with torch.no_grad():
        ref = model(**enc).last_hidden_state.numpy()
    real = enc["attention_mask"].numpy().astype(bool)
    out = run(str(WORK / "onnx" / "model.onnx"), enc)
    res["optimum_max_abs_diff_last_hidden"] = float(np.abs(out - ref)[real].max())
    res["reference_max_abs"] = float(np.abs(ref[real]).max())
    quantizer = ORTQuantizer.from_pretrained(str(WORK / "onnx"), file_name="model.onnx")
    t0 = time.perf_counter()
    quantizer.quantize(save_dir=str(WORK / "int8"),
                       quantization_config=AutoQuantizationConfig.avx2(is_static=False, per_channel=False))
    res["optimum_quantize_seconds"] = time.perf_counter() - t0
    q = run(glob.glob(str(WORK / "int8" / "*.onnx"))[0], enc)
    res["optimum_int8_max_abs_diff"] = float(np.abs(q - ref)[real].max())
    res["optimum_int8_mean_rel_diff"] = float((np.abs(q - ref)[real] / (np.abs(ref[real]) + 1)).mean())
    print(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
