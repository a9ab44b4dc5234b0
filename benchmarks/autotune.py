"""``autotune`` against a fixed policy when the traffic changes: does the router keep to its budget?

    python benchmarks/autotune.py --bundle bundles/llmrouter --data ../shared/datasets/llmrouter \
        [--out benchmarks/results]

Traffic (prompts the bundle was not fitted on: its validation rows and the test split, with every target's score):
phase A, 400 knowledge / QA prompts (natural_qa, trivia_qa, mmlu, commonsense_qa, arc, openbook_qa, commongen,
logic grids); then phase B, 400 prompts of which 300 are maths and code (gsm8k, mgsm, math, mbpp, human_eval) - a new
use case taking over. The goal: spend half of what sending every call to its dearest candidate would (savings 0.5).
Each variant serves the same 800 calls, in the same order, through litellm.Router(routing_strategy="prefill") (mock
deployments at the bundle's prices):

- ``preset balanced``: the bundle's preset, fixed;
- ``tuned once on phase A``: `prefill-router tune --savings 0.5` on the first variant's phase-A log - what a user
  would set after a week of traffic - fixed from then on;
- ``autotune savings 0.5``: ``autotune: {savings: 0.5, window: 300, every: 50, min_calls: 200}`` (the configured
  preset decides the first 200 calls).

Per phase (and phase B's halves: how soon the tuned setting follows): the savings against the dearest candidates
(estimated costs, as the router sees them), the cost per 1,000
calls, and the accuracy of the routes (the dataset's scores of the targets chosen; >= 0.5 counts as right). Writes
autotune.json, autotune.md and autotune.png (savings over a sliding window of 100 calls).
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import tempfile
import time
from pathlib import Path

import numpy as np
from _serving import bundle_split, serve_logged, serving_args

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

SHIFTED = {"math", "gsm8k", "agentverse-mgsm", "mbpp", "human_eval"}
PHASE = 400
GOAL = 0.5


def traffic(data: str) -> tuple[list[str], np.ndarray, list[str]]:
    """The 800 prompts in serving order, their (800, K) scores and the dataset's targets."""
    ds, _, val = bundle_split(data)
    held = [int(i) for i in np.r_[val, ds.indices("test")]]
    rng = random.Random(0)
    knowledge = [i for i in held if ds.rows[i].benchmark not in SHIFTED]
    shifted = [i for i in held if ds.rows[i].benchmark in SHIFTED]
    rng.shuffle(knowledge)
    phase_b = rng.sample(shifted, 300) + knowledge[PHASE:PHASE + 100]
    rng.shuffle(phase_b)
    order = knowledge[:PHASE] + phase_b
    scores = ds.scores()
    return [str(ds.rows[i].prompt) for i in order], scores[order], list(ds.targets)


def measure(records: list[dict], scores: np.ndarray, targets: list[str]) -> dict:
    col = {t: j for j, t in enumerate(targets)}
    d = [r["decision"] for r in records]
    cost = np.array([x["cost_usd"][x["target"]] for x in d])
    dearest = np.array([max(x["cost_usd"].values()) for x in d])
    right = np.array([scores[i, col[x["target"]]] >= 0.5 for i, x in enumerate(d)], dtype=float)
    phases = {}
    half = PHASE // 2
    for name, part in (("A, calls 1-400 (knowledge)", slice(0, PHASE)),
                       ("B, calls 401-600 (75% maths and code)", slice(PHASE, PHASE + half)),
                       ("B, calls 601-800", slice(PHASE + half, 2 * PHASE))):
        phases[name] = {"savings": float(1 - cost[part].sum() / dearest[part].sum()),
                        "cost_per_1k_usd": float(cost[part].mean() * 1000),
                        "accuracy": float(right[part].mean())}
    w = 100
    sliding = [float(1 - cost[i - w:i].sum() / dearest[i - w:i].sum()) for i in range(w, len(d) + 1)]
    policies = sorted({f"{x['policy'].get('preset') or x['policy']['kind'] + '=' + str(x['policy']['value'])}"
                       + (" (autotuned)" if x["policy"].get("autotuned") else "") for x in d})
    return {"phases": phases, "sliding_savings": sliding, "policies": policies}


def main() -> None:
    args = serving_args().parse_args()

    from litellm_prefill_router.tuning import tune

    prompts, scores, targets = traffic(args.data)
    results: dict[str, dict] = {}
    with tempfile.TemporaryDirectory() as tmp:
        def run(name: str, strategy_args: dict) -> list[dict]:
            log = Path(tmp) / f"{len(results)}.jsonl"
            t0 = time.perf_counter()
            asyncio.run(serve_logged(args.bundle, prompts, log, **strategy_args))
            served_s = time.perf_counter() - t0
            records = [json.loads(line) for line in log.read_text().splitlines()]
            results[name] = {**measure(records, scores, targets), "served_s": served_s, "args": strategy_args}
            ph = results[name]["phases"]
            print(f"{name:<26} " + "  ".join(f"{k}: savings {v['savings']:.1%} accuracy {v['accuracy']:.3f}"
                                            for k, v in ph.items()) + f"  ({served_s:.0f} s)", flush=True)
            return records

        first = run("preset balanced", {"preset": "balanced"})
        once = tune(first[:PHASE], savings=GOAL)["chosen"]
        run(f"tuned once on phase A ({once['kind']} {once['value']:g})", {once["kind"]: once["value"]})
        run("autotune savings 0.5", {"preset": "balanced",
                                     "autotune": {"savings": GOAL, "window": 300, "every": 50, "min_calls": 200}})
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "autotune.json").write_text(json.dumps({"bundle": args.bundle, "goal_savings": GOAL, "calls": len(prompts),
                                                   "variants": results}, indent=1))
    names = list(next(iter(results.values()))["phases"])
    lines = ["| variant | " + " | ".join(f"phase {n}: savings / USD per 1k / accuracy" for n in names) + " |",
             "|---|" + "---|" * len(names)]
    for name, r in results.items():
        cells = [f"{r['phases'][n]['savings']:.1%} / {r['phases'][n]['cost_per_1k_usd']:.4f} / "
                 f"{r['phases'][n]['accuracy']:.3f}" for n in names]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    (out / "autotune.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    plot(results, out / "autotune.png")


def plot(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(9, 4.5))
    for name, r in results.items():
        s = r["sliding_savings"]
        ax.plot(range(100, 100 + len(s)), [100 * v for v in s], label=name)
    ax.axhline(100 * GOAL, color="k", ls=":", label=f"goal: {GOAL:.0%} savings")
    ax.axvline(PHASE, color="grey", ls="--")
    ax.text(PHASE + 5, ax.get_ylim()[0] + 2, "phase B: 75% maths and code", fontsize=8, color="grey")
    ax.set_xlabel("call (savings over the last 100 calls)")
    ax.set_ylabel("% saved vs each call's dearest candidate")
    ax.set_title("autotune keeps to the goal when the traffic changes")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


if __name__ == "__main__":
    main()
