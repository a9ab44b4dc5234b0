"""What the serving benchmarks share: their arguments, the default bundle's split of the dataset, and serving prompts
through litellm.Router(routing_strategy="prefill") with mock deployments."""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np


def serving_args() -> argparse.ArgumentParser:
    """``--bundle`` (the default: the main job's), ``--data`` ($PREFILL_ROUTER_DATA, else the shared dataset beside
    the clone) and ``--out`` (benchmarks/results)."""
    ap = argparse.ArgumentParser()
    ap.add_argument("--bundle", default="bundles/llmrouter")
    ap.add_argument("--data", default=os.environ.get("PREFILL_ROUTER_DATA", "../shared/datasets/llmrouter"))
    ap.add_argument("--out", default="benchmarks/results")
    return ap


def bundle_split(data: str) -> tuple[Any, np.ndarray, np.ndarray]:
    """(dataset, the training rows a bundle trained with the default options was fitted on, its validation rows):
    the rows it was not fitted on are the validation rows and the test split."""
    from litellm_prefill_router.training.data import load_dataset
    from litellm_prefill_router.training.pipeline import TrainOptions, split_validation

    ds = load_dataset(data)
    fit, val = split_validation(ds, ds.indices("train"), TrainOptions().val_fraction)
    return ds, fit, val


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


def accuracy_cost_plot(path: Path, title: str, points: dict[str, dict], singles: dict[str, dict],
                       ours: Callable[[str], bool], single_label: Callable[[str], str] = str,
                       curves: dict[str, tuple[list[float], list[float]]] | None = None) -> None:
    """Accuracy vs estimated cost per 1,000 requests (PNG at ``path``): ``points`` (name -> {accuracy,
    cost_per_1k_usd}; circles where ``ours(name)``, squares otherwise), each single model as a grey cross labelled
    ``single_label(name)``, and ``curves`` (label -> (costs, accuracies)) under them."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7.5, 4.8))
    for label, (xs, ys) in (curves or {}).items():
        ax.plot(xs, ys, "-", color="tab:blue", alpha=0.6, label=label)
    for name, r in points.items():
        ax.plot(r["cost_per_1k_usd"], r["accuracy"], "o" if ours(name) else "s", label=name)
    for name, r in singles.items():
        ax.plot(r["cost_per_1k_usd"], r["accuracy"], "x", color="grey")
        ax.annotate(single_label(name), (r["cost_per_1k_usd"], r["accuracy"]), fontsize=6, color="grey")
    ax.set_xlabel("estimated cost per 1,000 requests (USD)")
    ax.set_ylabel("accuracy (held-out prompts)")
    ax.set_title(title)
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def append_jsonl(path: str | None, row: dict) -> None:
    """Append ``row`` to the JSONL file at ``path`` (``--out``; its parent made first); nothing when None."""
    if not path:
        return
    import json

    Path(path).parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a", encoding="utf-8") as f:
        f.write(json.dumps(row) + "\n")


def per_release_plot(path: Path, draw: Callable[[Any, int, list[dict]], None], ylabel: str, title: str) -> None:
    """A PNG beside the JSONL file at ``path`` with one column per litellm release of its runs: ``draw(ax, i, runs)``
    draws release ``i``'s runs (rows with a ``litellm`` key) in column ``i``."""
    import json

    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    releases = sorted({r["litellm"] for r in rows})
    fig, ax = plt.subplots(figsize=(5, 3.2))
    for i, release in enumerate(releases):
        draw(ax, i, [r for r in rows if r["litellm"] == release])
    ax.set_xticks(range(len(releases)), [f"litellm {r}" for r in releases])
    ax.set_xlim(-0.6, len(releases) - 0.4)
    ax.set_ylim(bottom=0)
    ax.set_ylabel(ylabel)
    ax.set_title(title.format(**rows[0]), fontsize=9)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path.with_suffix(".png"), dpi=120)
    print(f"wrote {path.with_suffix('.png')}")
