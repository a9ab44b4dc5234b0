"""Route prompts through litellm.Router(routing_strategy="prefill") with offline mock deployments.

    python examples/litellm_sdk.py --bundle bundles/llmrouter [--models-json ../shared/datasets/llmrouter/models.json]
        [--decision-log decisions.jsonl]

Each bundle target becomes one deployment of the model group "auto" whose mock_response names the
target, so the printed answers show where each request went. Swap litellm_params for real providers.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

SAMPLES = [
    "Natalia sold clips to 48 of her friends in April, and then she sold half as many clips in May. "
    "How many clips did Natalia sell altogether in April and May?",
    "Who wrote the novel 'One Hundred Years of Solitude'?",
    "Write a python function to find the first repeated character in a given string.",
    "Which of these is a renewable resource?\nA. coal\nB. natural gas\nC. wind\nD. oil",
    "Find all real x such that x^4 - 5x^2 + 4 = 0.",
    "Generate a sentence using all of these concepts: dog, frisbee, catch, throw.",
]


def model_list(bundle: str, models_json: str | None) -> list[dict]:
    from litellm_prefill_router import load_bundle

    manifest = load_bundle(bundle).manifest
    prices = json.load(open(models_json)) if models_json else {}
    out = []
    for t in manifest.targets:
        p = prices.get(t.name, {})
        out.append({
            "model_name": "auto",
            "litellm_params": {"model": f"openai/{t.name}", "api_key": "sk-mock", "mock_response": f"[{t.name}]"},
            "model_info": {"prefill_target": t.name,
                           "input_cost_per_token": p.get("input_cost_per_token", t.input_cost_per_token),
                           "output_cost_per_token": p.get("output_cost_per_token", t.output_cost_per_token)},
        })
    return out


async def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--bundle", default=os.environ.get("PREFILL_BUNDLE", "bundles/llmrouter"))
    ap.add_argument("--models-json")
    ap.add_argument("--preset", default=None)
    ap.add_argument("--decision-log", help="append each decision and its outcome here (then: prefill-router stats "
                                           "--log PATH)")
    args = ap.parse_args()

    import litellm

    from litellm_prefill_router import flush_logging, install

    install()  # a plain litellm.Router now understands routing_strategy="prefill"
    router = litellm.Router(
        model_list=model_list(args.bundle, args.models_json),
        routing_strategy="prefill",
        routing_strategy_args={"bundle": args.bundle, **({"preset": args.preset} if args.preset else {}),
                               **({"decision_log": args.decision_log} if args.decision_log else {})},
    )
    print(f"{'prompt':<58} {'routed to':<34} {'P(correct)':>10} {'est. cost $':>11} {'route ms':>8}")
    dearest = (0.0, SAMPLES[0])
    for prompt in SAMPLES:
        resp = await router.acompletion(model="auto", messages=[{"role": "user", "content": prompt}])
        d = resp._hidden_params["prefill_routing"]
        dearest = max(dearest, (d["cost_usd"][d["target"]], prompt))
        short = prompt.replace("\n", " ")[:55] + "..."
        print(f"{short:<58} {resp.choices[0].message.content:<34} {d['p_correct'][d['target']]:>10.3f} "
              f"{d['cost_usd'][d['target']]:>11.2e} {d['latency_ms']:>8.1f}")
    print(f"\npolicy: {d['policy']}")
    # the dearest route again, with a per-request cost ceiling (a proxy key's metadata.prefill can set one for all its
    # requests): the policy chooses among the targets this prompt costs at most that much on
    ceiling = 5e-5
    resp = await router.acompletion(model="auto", messages=[{"role": "user", "content": dearest[1]}],
                                    metadata={"prefill": {"max_cost_usd": ceiling}})
    d = resp._hidden_params["prefill_routing"]
    print(f"{dearest[1][:40]}... with max_cost_usd={ceiling:g}: {resp.choices[0].message.content} (P(correct) "
          f"{d['p_correct'][d['target']]:.3f}, est. {d['cost_usd'][d['target']]:.2e} USD; reason "
          f"{d['reason'].split(':')[0]}; {len(d['constraints']['excluded'])} targets over the ceiling)")
    await flush_logging()  # litellm logs on a background worker: let it write the decision log before the loop ends


if __name__ == "__main__":
    asyncio.run(main())
