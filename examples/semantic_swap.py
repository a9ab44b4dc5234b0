"""Swap a semantic router for the prefill router: same call shape, one constructor changes.

    python examples/semantic_swap.py --bundle bundles/llmrouter

Before (aurelio-labs semantic-router)::

    from semantic_router import Route
    from semantic_router.routers import SemanticRouter
    rl = SemanticRouter(encoder=encoder, routes=[Route(name="gpt-4o", utterances=[...]), ...])
    choice = rl("How do I integrate x^2?")
    model = choice.name or "default-model"

After::

    from litellm_prefill_router.semantic import PrefillSemanticRouter
    rl = PrefillSemanticRouter(bundle="bundles/llmrouter", preset="balanced")
    choice = rl("How do I integrate x^2?")
    model = choice.name or "default-model"

It also rewrites a LiteLLM proxy config that uses an ``auto_router/`` semantic deployment
(``prefill-router migrate --config old.yaml --bundle DIR --out new.yaml``); shown below on a sample.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

from litellm_prefill_router import load_bundle
from litellm_prefill_router.semantic import PrefillSemanticRouter, migrate_auto_router_config


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--bundle", default="bundles/llmrouter")
    args = ap.parse_args()
    rl = PrefillSemanticRouter(args.bundle, preset="balanced")
    for text in ["How do I integrate x^2 from 0 to 3?", "Who was the first emperor of Rome?", ""]:
        choice = rl(text)
        print(f"{text[:45]!r:<48} -> name={choice.name!r} score={choice.similarity_score}")

    targets = load_bundle(args.bundle).manifest.target_names[:2]
    with tempfile.TemporaryDirectory() as d:
        (Path(d) / "router.json").write_text(json.dumps(
            {"routes": [{"name": t, "utterances": ["example"], "score_threshold": 0.5} for t in targets]}))
        old = {"model_list": [{"model_name": t, "litellm_params": {"model": f"openai/{t}"}} for t in targets] + [
            {"model_name": "smart-router", "litellm_params": {
                "model": "auto_router/smart", "auto_router_config_path": "router.json",
                "auto_router_default_model": targets[0], "auto_router_embedding_model": "text-embedding-3-small"}}]}
        new, notes = migrate_auto_router_config(old, args.bundle, config_dir=d)
    print("\nmigrated model group 'smart-router':")
    for dep in new["model_list"]:
        if dep["model_name"] == "smart-router":
            print(f"  {dep['litellm_params']['model']:<40} prefill_target={dep['model_info']['prefill_target']}")
    print(f"router_settings: {new['router_settings']}")
    for n in notes:
        print(f"note: {n}")


if __name__ == "__main__":
    main()
