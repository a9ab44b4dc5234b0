"""Which encoder architectures `prefill-router train` turns into a servable bundle.

For each transformers architecture: a small model built from a config (random weights, the test tokenizer), the
export check that `train` runs before extracting features (first block exported, run in onnxruntime, compared with
torch through the cut and through the full model), then the whole pipeline on the synthetic test dataset (layer 2,
int8), and one prediction through the runtime's PrefillPredictor. Prints a table and writes
benchmarks/results/architectures.json. Nothing is downloaded; about 10 s per architecture on 2 cores.

    python benchmarks/architectures.py [ARCH ...]
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

DECODER = {"num_key_value_heads": 2, "bos_token_id": 1, "eos_token_id": 2}
ARCHITECTURES: dict[str, dict] = {
    "LlamaForCausalLM": DECODER,
    "Qwen2ForCausalLM": DECODER,
    "Qwen3ForCausalLM": DECODER,
    "Qwen3MoeForCausalLM": {**DECODER, "moe_intermediate_size": 32, "num_experts": 4, "num_experts_per_tok": 2},
    "MistralForCausalLM": DECODER,
    "Phi3ForCausalLM": DECODER,
    "Gemma2ForCausalLM": DECODER,
    "Gemma3ForCausalLM": {**DECODER, "head_dim": 16, "sliding_window": 32},
    "Olmo2ForCausalLM": DECODER,
    "GraniteForCausalLM": DECODER,
    "SmolLM3ForCausalLM": DECODER,
    "BertModel": {},
    "XLMRobertaModel": {},
    "DebertaV2Model": {},
    "ModernBertModel": {"bos_token_id": 1, "eos_token_id": 2, "cls_token_id": 1, "sep_token_id": 2},
}


def main(archs: list[str]) -> None:
    import os

    import tiny

    work = Path(tempfile.mkdtemp(prefix="prefill-arch-"))
    os.environ["PREFILL_ROUTER_CACHE"] = str(work / "cache")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import transformers

    from litellm_prefill_router.predictor import PrefillPredictor
    from litellm_prefill_router.training.encoders import load_encoder
    from litellm_prefill_router.training.export import check_encoder_exports
    from litellm_prefill_router.training.features import prompt_encoder
    from litellm_prefill_router.training.pipeline import TrainOptions, train
    from litellm_prefill_router.training.trunk import TrunkConfig

    base = tiny.build_tiny_encoder(work / "base")
    data = tiny.write_dataset(work / "data")
    rows = []
    for arch in archs:
        row: dict = {"architecture": arch}
        t0 = time.perf_counter()
        try:
            enc = tiny.build_tiny_model(arch, work / arch, base, **ARCHITECTURES[arch])
            handle = load_encoder(str(enc))
            row["kind"] = handle.kind
            ids = [e.ids for e in prompt_encoder(handle, 64).encode_batch(["what is the integral", "the king"])]
            row["check"] = check_encoder_exports(handle.model, handle.num_hidden_layers, ids, handle.pad_token_id,
                                                 handle.id)
            opts = TrainOptions(encoder=str(enc), max_tokens=64, seeds=1, keep=1, progress=False, layers=[2],
                                probe_max_rows=500, trunk=TrunkConfig(max_epochs=20))
            bundle, _ = train(data, work / f"bundle-{arch}", opts)
            pred = PrefillPredictor(bundle.directory)
            pred.predict_one([{"role": "user", "content": "what is the integral"}])
            pred.close()
            assert bundle.manifest.parity is not None
            row.update(ok=True, parity=bundle.manifest.parity.probability_max_abs_diff,
                       int8=bundle.manifest.encoder.quantized)
        except Exception as err:  # noqa: BLE001 - a table row per architecture
            row.update(ok=False, error=f"{type(err).__name__}: {str(err).splitlines()[0][:200]}")
        row["seconds"] = round(time.perf_counter() - t0, 1)
        rows.append(row)
        print(json.dumps(row), flush=True)
    print(f"\ntransformers {transformers.__version__}\n")
    print("| architecture | kind | export check (max rel. diff) | bundle parity | int8 | s | result |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        check = max(r["check"].values()) if "check" in r else float("nan")
        print(f"| {r['architecture']} | {r.get('kind', '-')} | {check:.1e} | {r.get('parity', float('nan')):.1e} | "
              f"{r.get('int8', '-')} | {r['seconds']} | {'ok' if r['ok'] else r['error']} |")
    out = ROOT / "benchmarks" / "results" / "architectures.json"
    out.write_text(json.dumps({"transformers": transformers.__version__, "rows": rows}, indent=1))
    print(f"\nwrote {out}")


if __name__ == "__main__":
    main(sys.argv[1:] or list(ARCHITECTURES))
