"""Every example runs offline against mock deployments."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _run(args: list[str], **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, *args], cwd=ROOT, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "LITELLM_LOCAL_MODEL_COST_MAP": "True", **env})


def test_litellm_sdk_example_routes_every_sample_and_prints_decisions(bundle_dir: Path, tmp_path: Path) -> None:
    # as scripts/main.sh runs it: with a decision log, summed up by `prefill-router stats`, replayed by `replay`
    log = tmp_path / "decisions.jsonl"
    r = _run(["examples/litellm_sdk.py", "--bundle", str(bundle_dir), "--preset", "max-quality",
              "--decision-log", str(log)])
    assert r.returncode == 0, r.stderr[-2000:]
    lines = [line for line in r.stdout.splitlines() if line.strip().startswith(tuple("NWWFG"))]
    assert len(lines) >= 6 and all("[" in line for line in lines)
    assert "policy:" in r.stdout
    assert "with max_cost_usd=5e-05: [" in r.stdout  # the dearest route again, under a per-request cost ceiling
    assert len(log.read_text().splitlines()) == 7
    stats = _run(["-m", "litellm_prefill_router.cli", "stats", "--log", str(log)])
    assert stats.returncode == 0, stats.stderr[-2000:]
    assert "7 routed calls, 0 failed" in stats.stdout and "saved" in stats.stdout
    assert "limits (max_cost_usd / min_p_correct): 1 call, 1 of them excluded a target" in stats.stdout
    replayed = _run(["-m", "litellm_prefill_router.cli", "replay", "--log", str(log), "--bundle", str(bundle_dir),
                     "--preset", "min-cost", "--quiet"])  # as scripts/main.sh runs it
    assert replayed.returncode == 0, replayed.stderr[-2000:]
    assert "replayed 7 logged calls" in replayed.stdout and "policy preset=min-cost" in replayed.stdout
    tuned = _run(["-m", "litellm_prefill_router.cli", "tune", "--log", str(log), "--savings", "0.5"])  # as it ends
    assert tuned.returncode == 0, tuned.stderr[-2000:]
    assert "7 logged calls decided by a policy (1 with their own limits, kept)" in tuned.stdout
    assert "routing_strategy_args: {" in tuned.stdout


def test_langchain_chain_example_routes_each_question(bundle_dir: Path) -> None:
    r = _run(["examples/langchain_chain.py", "--bundle", str(bundle_dir)])
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.count("(answer from") == 3


def test_semantic_swap_example_routes_and_migrates(bundle_dir: Path) -> None:
    r = _run(["examples/semantic_swap.py", "--bundle", str(bundle_dir)])
    assert r.returncode == 0, r.stderr[-2000:]
    assert "name=None" in r.stdout  # the empty prompt is declined
    assert "prefill_target=" in r.stdout and "'routing_strategy': 'prefill'" in r.stdout


def test_proxy_example_config_enables_the_prefill_strategy() -> None:
    import yaml

    cfg = yaml.safe_load((ROOT / "examples/litellm_proxy/config.yaml").read_text())
    assert cfg["router_settings"]["routing_strategy"] == "prefill"
    assert cfg["litellm_settings"]["callbacks"] == "litellm_prefill_router.proxy_hook.proxy_handler_instance"
    assert all(d["model_info"]["prefill_target"] and d["litellm_params"]["mock_response"] for d in cfg["model_list"])


def test_complexity_router_example_gives_each_tier_a_model_group_and_a_bundle_target() -> None:
    import ast

    import yaml

    here = ROOT / "examples/litellm_complexity_router"
    cfg = yaml.safe_load((here / "config.yaml").read_text())
    router_cfg = next(d for d in cfg["model_list"] if d["litellm_params"]["model"] == "auto_router/complexity_router")
    complexity = router_cfg["litellm_params"]["complexity_router_config"]
    assert (complexity["classifier_type"], complexity["classifier_plugin"]) == ("custom", "tiers.classifier")
    tree = ast.parse((here / "tiers.py").read_text())
    tiers = next(ast.literal_eval(n.value) for n in ast.walk(tree)
                 if isinstance(n, ast.Assign) and any(getattr(t, "id", None) == "TIERS" for t in n.targets))
    assert set(tiers) == set(complexity["tiers"])
    groups = {d["model_name"]: d["litellm_params"]["model"] for d in cfg["model_list"]}
    # each tier's model group serves the model the classifier takes it for
    assert all(groups[complexity["tiers"][t]] == f"openai/{target}" for t, target in tiers.items())
    assert cfg["litellm_settings"]["callbacks"] == "litellm_prefill_router.proxy_hook.proxy_handler_instance"


def test_readme_quick_start_proxy_config_passes_check_with_one_deployment_priced_by_litellms_cost_map(
        bundle_dir: Path, tmp_path: Path) -> None:
    # the README's proxy config as written, but for the test bundle's targets: `check` builds its router as the
    # proxy would (no provider called) - the together_ai model must be priced by litellm's own (local) cost map
    import json
    import re

    import yaml

    block = re.search(r"```yaml\n(# config\.yaml.*?)```", (ROOT / "README.md").read_text(), re.S)
    assert block, "the README's quick start has no proxy config.yaml"
    cfg = yaml.safe_load(block.group(1))
    for deployment, target in zip(cfg["model_list"], ("history-model", "math-model"), strict=True):
        deployment["model_info"]["prefill_target"] = target
    cfg["router_settings"]["routing_strategy_args"]["bundle"] = str(bundle_dir)
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(cfg))
    r = _run(["-m", "litellm_prefill_router.cli", "check", "--config", str(tmp_path / "config.yaml"),
              "--json", str(tmp_path / "check.json")], LITELLM_MASTER_KEY="sk-test")
    assert r.returncode == 0, r.stderr[-2000:]
    deployments = json.loads((tmp_path / "check.json").read_text())["strategies"][0]["model_groups"]["auto"]
    assert [(d["target"], d["price_from"]) for d in deployments] == [("history-model", "litellm"),
                                                                   ("math-model", "model_info")]
    assert deployments[0]["input_usd_per_mtok"] > 0
