"""`prefill-router drift` on traffic with a known shift: does it stay quiet on traffic like the training data and speak
up when the traffic moves?

    python benchmarks/drift.py --bundle bundles/llmrouter --data ../shared/datasets/llmrouter [--out benchmarks/results]

Every scenario's prompts go through litellm.Router(routing_strategy="prefill") (mock deployments, the bundle's
prices) with a decision log, and the log is compared with the bundle's reference (its validation split, stored by
`train`). Only prompts the bundle was not fitted on are used (its validation rows, the test split):

- ``validation prompts``: the reference's own prompts, served (int8 encoder) - the false-alarm baseline;
- ``test split``: 9 of the 13 benchmarks, in other proportions (human_eval, commongen, the agentverse tasks weigh more);
- ``80% validation + 20% code``, ``60% + 40%``: a use case the training data has, in another proportion;
- ``80% validation + 20% long context``: a kind of prompt it has none of (four held-out prompts joined);
- ``maths only`` / ``code only`` / ``QA only``: one kind of traffic.

Writes drift.json, drift.md and drift.png (PSI above noise per target and scenario, and the share of novel calls).
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

MATHS = {"math", "gsm8k", "agentverse-mgsm"}
CODE = {"mbpp", "human_eval"}
QA = {"natural_qa", "trivia_qa"}


def scenarios(data: str) -> tuple[dict[str, list[str]], dict[str, set[str]]]:
    """Each scenario's prompts, and for the mixed ones the prompts of the slice mixed in."""
    ds, _, val = bundle_split(data)
    test = ds.indices("test")
    held = [ds.rows[i] for i in np.r_[val, test]]

    def only(kinds: set[str]) -> list[str]:
        return [str(r.prompt) for r in held if r.benchmark in kinds]

    rng = random.Random(0)
    validation = [str(ds.rows[i].prompt) for i in val]
    code = only(CODE)
    out = {"validation prompts": validation, "test split": [str(ds.rows[i].prompt) for i in test]}
    slices: dict[str, set[str]] = {}
    for share in (0.2, 0.4):  # a new use case arriving: part of the traffic is code
        part = rng.sample(code, 150)
        mixed = rng.sample(validation, round(150 * (1 - share) / share)) + part
        rng.shuffle(mixed)
        out[f"{1 - share:.0%} validation + {share:.0%} code"] = mixed
        slices[f"{1 - share:.0%} validation + {share:.0%} code"] = set(part)
    # a kind of prompt the training data has none of: long contexts (four held-out prompts joined, as a RAG context)
    joined = ["\n\n".join(rng.sample(validation, 4)) for _ in range(150)]
    mixed = rng.sample(validation, 600) + joined
    rng.shuffle(mixed)
    out["80% validation + 20% long context"] = mixed
    slices["80% validation + 20% long context"] = set(joined)
    return {**out, "maths only": only(MATHS), "code only": code, "QA only": only(QA)}, slices


def main() -> None:
    ap = serving_args()
    ap.add_argument("--min-calls", type=int, default=150)
    args = ap.parse_args()

    from litellm_prefill_router import load_bundle
    from litellm_prefill_router.drift import bundle_reference, drift

    bundle = load_bundle(args.bundle)
    ref = bundle_reference(bundle.report(), args.bundle)
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        prompts_of, slices = scenarios(args.data)
        for name, prompts in prompts_of.items():
            log = Path(tmp) / f"{len(results)}.jsonl"
            t0 = time.perf_counter()
            asyncio.run(serve_logged(args.bundle, prompts, log))
            served_s = time.perf_counter() - t0
            records = [json.loads(line) for line in log.read_text().splitlines()]
            t0 = time.perf_counter()
            r = drift(records, ref, bundle_version=bundle.version, min_calls=args.min_calls)
            r["drift_ms"], r["served_s"] = (time.perf_counter() - t0) * 1000, served_s
            if name in slices:  # how many novel calls are the slice's, and how much of the slice is novel
                hits = sum(c["messages"][-1]["content"] in slices[name] for c in r["novel_calls"])
                r["novel_from_slice"] = {"novel_calls": len(r["novel_calls"]), "from_slice": hits,
                                         "slice_calls": len(slices[name])}
            r["novel_calls"] = [{"id": c["id"], "distance": c["distance"]} for c in r["novel_calls"][:20]]
            results[name] = r
            worst = max(((v["psi"] - v["noise"], t) for t, v in r["targets"].items() if "psi" in v), default=(0, "-"))
            print(f"{name:<28} {r['calls']:>4} calls  {r['verdict']:<15} shifted {len(r['shifted_targets'])}/"
                  f"{len(r['targets'])}  worst {worst[1]} PSI-noise {worst[0]:.3f}  tokens "
                  f"{r['input_tokens']['verdict'] if r['input_tokens'] else '-'}  novel {r['novelty']['share']:.1%} "
                  f"{r['novelty']['verdict']}  ({r['drift_ms']:.0f} ms)"
                  + (f"  novel from the slice {r['novel_from_slice']}" if "novel_from_slice" in r else ""), flush=True)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "drift.json").write_text(json.dumps({"bundle": args.bundle, "bundle_version": bundle.version,
                                                "reference_rows": ref.n, "scenarios": results}, indent=1))
    targets = list(ref.p_correct)
    lines = ["| scenario | calls | verdict | targets shifted | worst target (PSI - noise) | prompt tokens: median "
             "(ref) / verdict | novel calls (5% expected) / verdict | drift check ms |",
             "|---|---|---|---|---|---|---|---|"]
    for name, r in results.items():
        worst = max(((v["psi"] - v["noise"], t) for t, v in r["targets"].items() if "psi" in v), default=(0, "-"))
        tok = r["input_tokens"]
        lines.append(f"| {name} | {r['calls']} | {r['verdict']} | {len(r['shifted_targets'])} of {len(targets)} | "
                     f"{worst[1]} ({worst[0]:.3f}) | {tok['median']:g} ({tok['reference_median']:g}) / "
                     f"{tok['verdict']} | {r['novelty']['share']:.1%} / {r['novelty']['verdict']} | "
                     f"{r['drift_ms']:.0f} |")
    (out / "drift.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    plot(results, targets, out / "drift.png")


def plot(results: dict, targets: list[str], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = targets + ["(prompt tokens)", "(novel share - 5%)"]
    m = np.array([[max((r["targets"][t]["psi"] - r["targets"][t]["noise"]) if "psi" in r["targets"][t] else 0, 0)
                   for t in targets] + [max(r["input_tokens"]["psi"] - r["input_tokens"]["noise"], 0),
                                        max(r["novelty"]["share"] - r["novelty"]["expected_share"], 0)]
                  for r in results.values()])
    fig, ax = plt.subplots(figsize=(12, 5.4))
    im = ax.imshow(m.T, cmap="Reds", vmin=0, vmax=1.0, aspect="auto")
    ax.set_xticks(range(len(results)), [f"{k.replace(' + ', chr(10) + '+ ')}\n({r['verdict']})"
                                        for k, r in results.items()], fontsize=8)
    ax.set_yticks(range(len(rows)), rows, fontsize=8)
    for i in range(m.shape[0]):
        for j in range(m.shape[1]):
            ax.text(i, j, f"{m[i, j]:.2f}", ha="center", va="center", fontsize=7,
                    color="white" if m[i, j] > 0.6 else "black")
    fig.colorbar(im, label="PSI above its noise level (0.1 moderate, 0.25 major);\nnovel share above 5% (0.05, 0.15)")
    ax.set_title("prefill-router drift: each scenario's decision log vs the bundle's reference")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


if __name__ == "__main__":
    main()
