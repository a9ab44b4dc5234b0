"""Serving a benchmark's prompts through litellm.Router(routing_strategy="prefill") with mock deployments."""

from __future__ import annotations

from pathlib import Path


async def serve_logged(bundle: str, prompts: list[str], log: Path, **strategy_args: object) -> None:
    """Send ``prompts`` one after the other through a PrefillRouter whose deployments answer "ok" (one per bundle
    target, at the bundle's prices), writing each decision to the decision log ``log``."""
    from litellm_prefill_router import PrefillRouter, flush_logging, load_bundle

    model_list = [{"model_name": "auto",
                   "litellm_params": {"model": f"openai/{t.name}", "api_key": "sk-mock", "mock_response": "ok"},
                   "model_info": {"prefill_target": t.name, "input_cost_per_token": t.input_cost_per_token or 1e-7,
                                  "output_cost_per_token": t.output_cost_per_token or 1e-7}}
                  for t in load_bundle(bundle).manifest.targets]
    router = PrefillRouter(model_list=model_list, routing_strategy="prefill",
                           routing_strategy_args={"bundle": bundle, "decision_log": str(log), **strategy_args})
    for p in prompts:
        await router.acompletion(model="auto", messages=[{"role": "user", "content": p}])
    await flush_logging()
