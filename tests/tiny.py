"""A tiny causal LM built from a config (random weights) and a synthetic routing dataset with a planted signal.

Nothing is downloaded: the tokenizer is a word-level vocabulary built here, the model a 4-layer Llama.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
MATH_WORDS = ["integral", "derivative", "equation", "algebra", "matrix", "prime", "theorem", "sum", "proof", "angle"]
HIST_WORDS = ["empire", "king", "war", "dynasty", "treaty", "revolution", "castle", "pharaoh", "senate", "crusade"]
FILLER = ["the", "a", "what", "is", "of", "in", "please", "explain", "why", "how", "does", "about", "tell", "me",
          "and", "to", "with", "for", "question", "answer"]
SPECIALS = ["<unk>", "<|im_start|>", "<|im_end|>", "system", "user", "assistant", "[tool", "result]", "call]"]
TARGETS = ["math-model", "history-model", "generalist"]


def build_tiny_encoder(directory: Path, *, layers: int = 4, hidden: int = 32, seed: int = 0) -> Path:
    import torch
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers
    from transformers import LlamaConfig, LlamaForCausalLM

    directory.mkdir(parents=True, exist_ok=True)
    vocab = {w: i for i, w in enumerate(dict.fromkeys(SPECIALS + MATH_WORDS + HIST_WORDS + FILLER))}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tok.normalizer = normalizers.Lowercase()
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok.add_special_tokens(["<|im_start|>", "<|im_end|>"])
    tok.save(str(directory / "tokenizer.json"))
    (directory / "tokenizer_config.json").write_text(json.dumps({
        "tokenizer_class": "PreTrainedTokenizerFast", "bos_token": "<|im_start|>", "eos_token": "<|im_end|>",
        "pad_token": "<|im_end|>", "unk_token": "<unk>", "chat_template": CHAT_TEMPLATE}))
    (directory / "chat_template.jinja").write_text(CHAT_TEMPLATE)
    torch.manual_seed(seed)
    cfg = LlamaConfig(vocab_size=len(vocab), hidden_size=hidden, intermediate_size=hidden * 2,
                      num_hidden_layers=layers, num_attention_heads=4, num_key_value_heads=2,
                      max_position_embeddings=2048, pad_token_id=vocab["<|im_end|>"],
                      bos_token_id=vocab["<|im_start|>"], eos_token_id=vocab["<|im_end|>"],
                      architectures=["LlamaForCausalLM"], tie_word_embeddings=True)
    LlamaForCausalLM(cfg).save_pretrained(str(directory))
    return directory


def build_tiny_model(arch: str, directory: Path, tokenizer_from: Path, **config: object) -> Path:
    """A small model of transformers architecture ``arch`` (3 blocks, hidden 64, random weights) in ``directory``,
    with the tokenizer and chat template of the tiny encoder at ``tokenizer_from``."""
    import shutil

    import torch
    import transformers

    shutil.copytree(tokenizer_from, directory)
    for f in [*directory.glob("model*.safetensors"), directory / "config.json"]:
        f.unlink()
    vocab = json.loads((tokenizer_from / "config.json").read_text())["vocab_size"]
    cls = getattr(transformers, arch)
    torch.manual_seed(0)
    cls(cls.config_class(vocab_size=vocab, hidden_size=64, intermediate_size=128, num_hidden_layers=3,
                         num_attention_heads=4, pad_token_id=2, architectures=[arch], **config)).save_pretrained(
        str(directory))
    return directory


def synthetic_rows(n: int = 240, seed: int = 0) -> list[dict]:
    """Math prompts: only math-model is right; history prompts: only history-model; generalist right 50%."""
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        topic = "math" if i % 2 == 0 else "hist"
        words = MATH_WORDS if topic == "math" else HIST_WORDS
        text = " ".join(rng.choice(FILLER) for _ in range(rng.randint(2, 6))) + " " + \
            " ".join(rng.choice(words) for _ in range(rng.randint(2, 4))) + " " + \
            " ".join(rng.choice(FILLER) for _ in range(rng.randint(1, 8)))
        rows.append({
            "id": f"q{i:04d}", "prompt": text, "benchmark": topic,
            "split": "test" if i % 5 == 0 else "train",
            "scores": {"math-model": float(topic == "math"), "history-model": float(topic == "hist"),
                       "generalist": float(rng.random() < 0.5)},
        })
    return rows


PRICES = {"math-model": (2e-7, 2e-7), "history-model": (3e-7, 3e-7), "generalist": (9e-7, 9e-7)}


def write_dataset(directory: Path, n: int = 240) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    with (directory / "routing.jsonl").open("w") as f:
        for r in synthetic_rows(n):
            f.write(json.dumps(r) + "\n")
    (directory / "models.json").write_text(json.dumps(
        {t: {"input_cost_per_token": p[0], "output_cost_per_token": p[1]} for t, p in PRICES.items()}))
    return directory


def train_test_bundle(workdir: Path, encoder: Path, data: Path):  # type: ignore[no-untyped-def]
    """(bundle, report): the test bundle, from the real `train` pipeline on the synthetic dataset (needs torch).
    fp32 encoder: the parity tests compare the bundle's graphs with torch; the CLI test covers --quantize."""
    from litellm_prefill_router.training.pipeline import TrainOptions, train
    from litellm_prefill_router.training.trunk import TrunkConfig

    opts = TrainOptions(encoder=str(encoder), max_tokens=64, seeds=3, keep=2, progress=False, quantize=False,
                        probe_max_rows=500, trunk=TrunkConfig(max_epochs=80))
    return train(data, workdir / "bundle", opts)


def externalise(bundle_dir: Path, out: Path) -> Path:
    """The same bundle with the encoder's weights moved to encoder.onnx.data (as `train` writes a large encoder)."""
    import shutil

    import onnx

    from litellm_prefill_router.bundle import load_bundle, write_bundle
    from litellm_prefill_router.training.export import save_graph

    src = load_bundle(bundle_dir)
    work = out.parent / f"{out.name}-work"
    work.mkdir(parents=True)
    written = save_graph(onnx.load(str(src.path("encoder.onnx"))), work / "encoder.onnx", external_data=True)
    assert written == ["encoder.onnx.data"]
    files = {n: src.path(n) for n in src.manifest.files if n != "encoder.onnx"}
    files.update({"encoder.onnx": work / "encoder.onnx", "encoder.onnx.data": work / "encoder.onnx.data"})
    fields = json.loads(src.manifest.model_dump_json())
    fields.pop("files"), fields.pop("schema_version")
    write_bundle(out, files, fields)
    shutil.rmtree(work)
    return out


if __name__ == "__main__":  # python tests/tiny.py DIR: the test bundles in DIR/bundle, DIR/bundle-external
    # (scripts/test_runtime_on.sh)
    import sys

    out = Path(sys.argv[1])
    bundle, _ = train_test_bundle(out, build_tiny_encoder(out / "encoder"), write_dataset(out / "data"))
    externalise(bundle.directory, out / "bundle-external")  # the same, its encoder's weights in encoder.onnx.data
    print(bundle.directory)
