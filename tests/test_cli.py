from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from conftest import HIST_PROMPT, MATH_PROMPT, cheap_group, model_list, tier_router
from litellm_prefill_router.cli import main


def test_info_prints_targets_presets_and_parity(bundle_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["info", "--bundle", str(bundle_dir)]) == 0
    out = capsys.readouterr().out
    assert "history-model" in out and "balanced (default)" in out and "parity" in out
    assert "rows (validation split): `prefill-router drift` compares traffic with it; each decision's novelty" in out


def test_route_prints_the_table_and_the_decision(bundle_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["route", "--bundle", str(bundle_dir), "--preset", "max-quality", HIST_PROMPT]) == 0
    out = capsys.readouterr().out
    assert "<- chosen" in out and out.strip().endswith("history-model")
    assert main(["route", "--bundle", str(bundle_dir), "--json", "--tolerance", "0", HIST_PROMPT]) == 0
    assert json.loads(capsys.readouterr().out)["target"] == "history-model"
    assert main(["route", "--bundle", str(bundle_dir), "--json", "--value-usd", "0", HIST_PROMPT]) == 0
    d = json.loads(capsys.readouterr().out)  # a right answer worth nothing: the cheapest target
    assert d["policy"]["kind"] == "value_usd" and d["target"] == min(d["cost_usd"], key=d["cost_usd"].get)


@pytest.mark.parametrize(("args", "message"), [
    (["route", "--bundle", "B", "--tolerance", "5", "x"], "argument --tolerance: must be a number in [0, 1], got 5"),
    (["route", "--bundle", "B", "--threads", "-1", "x"], "argument --threads: must be at least 1, got -1"),
    (["route", "--bundle", "B", "--lambda", "inf", "x"], "argument --lambda: must be a number >= 0, got inf"),
    (["evaluate", "--out", "o", "--cv", "1"], "argument --cv: must be at least 2, got 1"),
    (["evaluate", "--out", "o", "--bootstrap", "many"], "argument --bootstrap: 'many' is not a whole number"),
    (["train", "--out", "o", "--seeds", "0"], "argument --seeds: must be at least 1, got 0"),
    (["train", "--out", "o", "--max-tokens", "4"], "argument --max-tokens: must be at least 8, got 4"),
    (["train", "--out", "o", "--layers", "5,x"], "argument --layers: takes comma-separated layer numbers, e.g. 5"),
    (["evaluate", "--out", "o", "--cv", "5", "--layers", "0"], "argument --layers: layers are numbered from 1"),
    (["tune", "--log", "l", "--savings", "1.5"], "argument --savings: must be a number in [0, 1], got 1.5"),
    (["tune", "--log", "l", "--budget-usd-per-1k", "0"], "argument --budget-usd-per-1k: must be a number > 0, got 0"),
    (["collect", "--prompts", "p", "--config", "c", "--out", "o", "--concurrency", "0"],
     "argument --concurrency: must be at least 1, got 0"),
    (["drift", "--log", "l", "--bundle", "B", "--min-calls", "0"], "argument --min-calls: must be at least 1, got 0"),
    (["stats", "--log", "l", "--json", "."], "argument --json: . is a directory; name a file in it"),  # a traceback
    (["predict", "--bundle", "B", "--out", "."], "argument --out: . is a directory"),
    (["evaluate", "--out", __file__, "--cv", "5"], "argument --out: " + __file__ + " is a file; name a directory"),
])
def test_an_out_of_range_number_is_a_usage_error_naming_the_option(args: list[str], message: str,
                                                                   capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:  # before any bundle, data or model is loaded
        main(args)
    assert exit_.value.code == 2 and message in capsys.readouterr().err


def test_every_option_of_every_command_says_what_it_is_for() -> None:
    import argparse

    from litellm_prefill_router.cli import build_parser

    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    bare = {name: [a.option_strings[-1] if a.option_strings else a.dest for a in parser._actions
                   if not a.help and a.dest != "help"] for name, parser in sub.choices.items()}
    assert {name: options for name, options in bare.items() if options} == {}


def test_a_broken_bundle_exits_2_with_the_reason(bundle_copy: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (bundle_copy / "encoder.onnx").unlink()
    assert main(["info", "--bundle", str(bundle_copy)]) == 2
    assert "encoder.onnx" in capsys.readouterr().err


def test_train_command_reuses_cached_features_and_probes_and_prints_a_summary(trained, tiny_encoder: Path,
                                                                              tiny_data: Path,
                                                                    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                    capsys: pytest.CaptureFixture[str]) -> None:
    from litellm_prefill_router.training import features as F

    def no_forward(*a: object) -> None:
        raise AssertionError("features should come from the cache")

    monkeypatch.setattr(F, "forward_hidden_states", no_forward)
    monkeypatch.setattr("litellm_prefill_router.training.pipeline.run_probes", no_forward)  # probes cached too
    out = tmp_path / "cli-bundle"
    rc = main(["train", "--data", str(tiny_data), "--out", str(out), "--encoder", str(tiny_encoder),
               "--max-tokens", "64", "--layers", "2,3", "--seeds", "1"])
    assert rc == 0
    text = capsys.readouterr().out
    assert "bundle written" in text and "mean AUC" in text
    report = json.loads((out / "report.json").read_text())
    assert set(report["stage_seconds"]) >= {"encoder + features", "trunk", "export + parity"}
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["encoder"]["layers"] == [2, 3]
    q = report["quantization"]  # --quantize is on by default: int8 kept only if the AUC holds
    assert manifest["encoder"]["quantized"] == q["accepted"] == (q["auc_drop"] < 0.005)
    assert q["embedding_tables_int8"] == []  # the tiny vocabulary is below the 1,024 rows worth quantising
    # the reference distribution `drift` compares traffic with is what the bundle serves on the validation prompts
    import numpy as np

    from litellm_prefill_router.drift import Histogram, ReferenceDistribution
    from litellm_prefill_router.predictor import PrefillPredictor
    from litellm_prefill_router.training.data import load_dataset
    from litellm_prefill_router.training.pipeline import TrainOptions, split_validation

    ref = ReferenceDistribution.model_validate(report["reference"])
    assert ref.n == report["validation"]["n"] and ("int8" in ref.source) == q["accepted"]
    ds = load_dataset(tiny_data)
    _, val = split_validation(ds, ds.indices("train"), TrainOptions().val_fraction)
    served = PrefillPredictor(out).predict_one
    p = np.array([served(ds.rows[i].prompt).p_correct for i in val])
    for j, t in enumerate(report["targets"]):
        assert ref.p_correct[t].edges == pytest.approx(Histogram.of(p[:, j]).edges, abs=1e-5)


def test_predict_writes_one_line_per_prompt_with_p_and_cost_per_target(bundle_dir: Path, tiny_data: Path,
                                                                       tmp_path: Path) -> None:
    from litellm_prefill_router.training.data import load_dataset

    out = tmp_path / "preds.jsonl"
    assert main(["predict", "--bundle", str(bundle_dir), "--data", str(tiny_data), "--out", str(out)]) == 0
    rows = [json.loads(x) for x in out.read_text().splitlines()]
    test_ids = [r.id for r in load_dataset(tiny_data).rows if r.split == "test"]
    assert [r["id"] for r in rows] == test_ids
    targets = {"math-model", "history-model", "generalist"}
    assert all(set(r["p_correct"]) == set(r["cost"]) == targets for r in rows)
    assert all(0 <= p <= 1 for r in rows for p in r["p_correct"].values())
    math = next(r for r, rid in zip(rows, test_ids) if rid.endswith("0"))  # even ids are math prompts
    assert math["p_correct"]["math-model"] > math["p_correct"]["history-model"]


def test_predict_scores_prompts_without_labels_or_splits_every_row(bundle_dir: Path, tmp_path: Path,
                                                                   capsys: pytest.CaptureFixture[str],
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    data = tmp_path / "prompts.jsonl"  # prompts to score, no labels and no splits: every row is predicted
    data.write_text("\n".join(json.dumps(r) for r in [
        {"id": "q1", "prompt": MATH_PROMPT}, {"id": "q2", "prompt": [{"role": "user", "content": HIST_PROMPT}]},
        {"id": "q3", "prompt": HIST_PROMPT}]) + "\n")
    out = tmp_path / "preds.jsonl"
    assert main(["predict", "--bundle", str(bundle_dir), "--data", str(data), "--out", str(out)]) == 0
    assert "wrote 3 predictions (every row)" in capsys.readouterr().out
    rows = [json.loads(x) for x in out.read_text().splitlines()]
    assert [r["id"] for r in rows] == ["q1", "q2", "q3"]
    assert rows[0]["p_correct"]["math-model"] > rows[0]["p_correct"]["history-model"]
    assert rows[1]["p_correct"]["history-model"] > rows[1]["p_correct"]["math-model"]
    assert rows[1]["p_correct"] == pytest.approx(rows[2]["p_correct"], abs=1e-6)  # a message list is its text
    table = tmp_path / "prompts.csv"  # a table with only a prompt column reads the same
    table.write_text("id,prompt\nq1,\"" + MATH_PROMPT.replace('"', '""') + "\"\n")
    assert main(["predict", "--bundle", str(bundle_dir), "--data", str(table), "--out", str(out)]) == 0
    assert json.loads(out.read_text())["p_correct"] == pytest.approx(rows[0]["p_correct"], abs=1e-6)
    assert main(["predict", "--bundle", str(bundle_dir), "--data", str(data), "--split", "val", "--out", str(out)]) == 2
    assert re.search(r"error: no rows with split 'val' .* names no splits.*--split all", capsys.readouterr().err)
    monkeypatch.delenv("PREFILL_ROUTER_DATA", raising=False)  # no --data and no variable: said, exit 2
    assert main(["predict", "--bundle", str(bundle_dir), "--out", str(out)]) == 2
    assert "error: give --data PATH or set PREFILL_ROUTER_DATA" in capsys.readouterr().err


def test_a_command_refuses_to_write_over_its_own_input(bundle_dir: Path, tmp_path: Path,
                                                                   capsys: pytest.CaptureFixture[str]) -> None:
    data = tmp_path / "routing.jsonl"
    data.write_text(json.dumps({"id": "q1", "prompt": MATH_PROMPT}) + "\n")
    assert main(["predict", "--bundle", str(bundle_dir), "--data", str(data), "--out", str(data)]) == 2
    assert f"--out {data} is also --data, an input of this command" in capsys.readouterr().err
    # --data names the directory that holds it: the same refusal, the same exit status
    assert main(["predict", "--bundle", str(bundle_dir), "--data", str(tmp_path), "--out", str(data)]) == 2
    assert f"--out {data} is also the data file of --data {tmp_path}, an input" in capsys.readouterr().err
    cfg = tmp_path / "proxy.yaml"
    cfg.write_text("model_list: []\n")
    assert main(["migrate", "--config", str(cfg), "--bundle", str(bundle_dir), "--out", str(cfg)]) == 2
    assert f"--out {cfg} is also --config, an input of this command" in capsys.readouterr().err
    log = tmp_path / "decisions.jsonl"
    log.write_text('{"litellm_call_id": "c1"}\n')
    for command in (["judge", "--log", str(log), "--judge", "regex:x", "--out", str(log)],  # appended to the log
                    ["feedback", "--log", str(log), "--feedback", str(data), "--out", str(data)],
                    ["stats", "--log", str(log), "--json", str(log)]):
        assert main(command) == 2
        assert "an input of this command" in capsys.readouterr().err
    assert log.read_text() == '{"litellm_call_id": "c1"}\n'
    assert json.loads(data.read_text())["id"] == "q1" and cfg.read_text() == "model_list: []\n"


def test_predict_rejects_a_line_that_is_not_an_object_naming_the_line(bundle_dir: Path, tmp_path: Path,
                                                                      capsys: pytest.CaptureFixture[str]) -> None:
    data = tmp_path / "prompts.jsonl"
    data.write_text('{"id": "q1", "prompt": "hi"}\n["q2", "hello"]\n')
    assert main(["predict", "--bundle", str(bundle_dir), "--data", str(data), "--out", str(tmp_path / "p")]) == 2
    err = capsys.readouterr().err
    assert "prompts.jsonl:2: a line must be a JSON object with id, prompt; got list" in err
    data.write_text('{"prompt": "hi"}\n')
    assert main(["predict", "--bundle", str(bundle_dir), "--data", str(data), "--out", str(tmp_path / "p")]) == 2
    assert "prompts.jsonl:1: missing field(s) ['id']; each line needs id, prompt" in capsys.readouterr().err


def _proxy_config(path: Path, bundle: str, targets: tuple[str, ...] = ("math-model", "history-model", "generalist"),
                  **deployment_info: object) -> Path:
    import yaml

    from conftest import cheap_group, complexity_router, model_list

    deployments = [*model_list(targets), *model_list(targets, group="budget"), cheap_group(),
                   complexity_router("cheap", "auto")]
    deployments[0]["model_info"].update(deployment_info)
    path.write_text(yaml.safe_dump({
        "model_list": deployments,
        "litellm_settings": {"callbacks": "litellm_prefill_router.proxy_hook.proxy_handler_instance"},
        "router_settings": {"routing_strategy": "prefill",
                            "routing_strategy_args": {"bundle": bundle, "preset": "max-quality"},
                            "routing_groups": [{"group_name": "budget-routing", "models": ["budget"],
                                                "routing_strategy": "prefill",
                                                "routing_strategy_args": {"bundle": bundle, "tolerance": 1.0,
                                                                          "min_p_correct": 0.9,
                                                                          "autotune": {"savings": 0.3}}}]}}))
    return path


def test_check_reports_each_prefill_strategy_its_deployments_prices_and_sample_routes(
        bundle_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("TEST_BUNDLE", str(bundle_dir))  # os.environ/ values are read as the proxy reads them
    cfg = _proxy_config(tmp_path / "config.yaml", "os.environ/TEST_BUNDLE")
    out = tmp_path / "check.json"
    assert main(["check", "--config", str(cfg), "--prompt", MATH_PROMPT, "--prompt", HIST_PROMPT,
                 "--json", str(out), "--strict"]) == 0
    text = capsys.readouterr().out
    assert "router: bundle" in text and "routing group budget-routing: bundle" in text
    assert "policy tolerance=1, autotuned to savings=0.3 (window 2000, every 100 calls, from 200), " \
        "min_p_correct 0.9, fallback" in text
    assert "fallback generalist, serving: routed, encoder on CPUExecutionProvider" in text  # no timeout, shadow...
    report = json.loads(out.read_text())
    router, budget = report["strategies"]
    assert list(router["model_groups"]) == ["auto"] and list(budget["model_groups"]) == ["budget"]
    math_dep = router["model_groups"]["auto"][0]
    assert math_dep == {"target": "math-model", "model_name": "auto", "model": "openai/math-model",
                        "input_usd_per_mtok": pytest.approx(0.2), "output_usd_per_mtok": pytest.approx(0.2),
                        "price_from": "model_info", "max_input_tokens": None}
    assert "smart (auto_router/complexity_router)" in router["unmapped_deployments"]
    assert [r["target"] for r in router["routes"]] == ["math-model", "history-model"]  # max-quality
    # tolerance 1: the cheapest - among the targets at least 90% likely to be right
    assert budget["limits"] == {"min_p_correct": 0.9} and router["limits"] == {}
    assert router["autotune"] is None and budget["autotune"].startswith("savings=0.3")
    assert "note: autotune has no decision_log to start from" in text and router["notes"] == []
    assert [r["target"] for r in budget["routes"]] == ["math-model", "history-model"]


def test_check_exits_2_with_the_error_the_proxy_would_raise_at_start_up(
        bundle_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import yaml

    bad_target = _proxy_config(tmp_path / "a.yaml", str(bundle_dir), prefill_target="no-such-model")
    assert main(["check", "--config", str(bad_target)]) == 2
    assert "'no-such-model', which is not a target" in capsys.readouterr().err
    unset = _proxy_config(tmp_path / "b.yaml", "os.environ/PREFILL_CHECK_UNSET_VARIABLE")
    assert main(["check", "--config", str(unset)]) == 2
    assert "os.environ/PREFILL_CHECK_UNSET_VARIABLE, not set" in capsys.readouterr().err
    (tmp_path / "c.yaml").write_text("model_list: [{model_name: a, litellm_params: {model: openai/a}}]\n")
    assert main(["check", "--config", str(tmp_path / "c.yaml")]) == 2
    assert "no prefill strategy" in capsys.readouterr().err
    (tmp_path / "d.yaml").write_text("model_list: [{model_name: a, model_info: {prefill_target: math-model}}]\n")
    assert main(["check", "--config", str(tmp_path / "d.yaml")]) == 2  # where in the file, what is wrong, what it got
    assert ("d.yaml: not a LiteLLM model_list config: model_list.0.litellm_params: Field required, got "
            "{'model_name': 'a', 'model_info': {'prefill_target': 'math-model'}}") in capsys.readouterr().err
    (tmp_path / "e.yaml").write_text(yaml.safe_dump({"model_list": model_list(), "router_settings": {
        "routing_strategy": "prefill", "routing_strategy_args": {"bundle": str(bundle_dir), "tolerence": 0.2}}}))
    assert main(["check", "--config", str(tmp_path / "e.yaml")]) == 2
    assert "tolerence: unknown setting; did you mean 'tolerance'?" in capsys.readouterr().err
    misspelt = "litellm_prefill_router.proxy_hok.proxy_handler_instance"  # the proxy fails to import it at start-up
    (tmp_path / "f.yaml").write_text(yaml.safe_dump({"model_list": model_list(), "litellm_settings": {
        "callbacks": [misspelt]}, "router_settings": {"routing_strategy": "prefill",
                                                     "routing_strategy_args": {"bundle": str(bundle_dir)}}}))
    assert main(["check", "--config", str(tmp_path / "f.yaml")]) == 2
    assert (f"litellm_settings.callbacks entry {misspelt} cannot be imported (ModuleNotFoundError: No module named "
            "'litellm_prefill_router.proxy_hok')") in capsys.readouterr().err


def test_check_warns_when_metrics_are_on_but_the_proxy_serves_no_metrics_endpoint(
        bundle_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import yaml

    cfg = _proxy_config(tmp_path / "config.yaml", str(bundle_dir))
    raw = yaml.safe_load(cfg.read_text())
    raw["router_settings"]["routing_strategy_args"]["metrics"] = True
    cfg.write_text(yaml.safe_dump(raw))
    assert main(["check", "--config", str(cfg)]) == 0
    assert "warning: metrics: true, but litellm_settings has no `prometheus` callback" in capsys.readouterr().out
    assert main(["check", "--config", str(cfg), "--strict"]) == 1
    assert "router: metrics: true, but" in capsys.readouterr().err
    raw["litellm_settings"]["callbacks"] = [raw["litellm_settings"]["callbacks"], "prometheus"]
    cfg.write_text(yaml.safe_dump(raw))
    assert main(["check", "--config", str(cfg), "--strict"]) == 0
    assert "metrics: true" not in capsys.readouterr().out


def test_check_strict_exits_1_when_a_bundle_target_has_no_deployment(
        bundle_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = _proxy_config(tmp_path / "config.yaml", str(bundle_dir), targets=("math-model", "history-model"))
    assert main(["check", "--config", str(cfg)]) == 0
    assert "no deployment serves (never chosen): generalist" in capsys.readouterr().out
    assert main(["check", "--config", str(cfg), "--strict"]) == 1
    assert "router: no deployment serves generalist" in capsys.readouterr().err


def test_check_warns_when_a_routed_groups_context_windows_differ_and_pre_call_checks_are_off(
        bundle_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import yaml

    cfg = _proxy_config(tmp_path / "config.yaml", str(bundle_dir), max_input_tokens=8192)
    raw = yaml.safe_load(cfg.read_text())
    raw["model_list"][1]["model_info"]["max_input_tokens"] = 131072  # history-model, same group "auto"
    for dep in raw["model_list"][:2]:  # litellm files a deployment's model_info under its model name, process-wide
        dep["litellm_params"]["model"] += "-windowed"
    cfg.write_text(yaml.safe_dump(raw))
    assert main(["check", "--config", str(cfg), "--json", str(tmp_path / "r.json")]) == 0
    out = capsys.readouterr().out
    assert ("warning: model group 'auto' mixes context windows (max input tokens: math-model 8192, history-model "
            "131072) and router_settings.enable_pre_call_checks is off: a prompt longer than 8192 tokens routed to "
            "math-model fails there") in out
    router_entry = json.loads((tmp_path / "r.json").read_text())["strategies"][0]
    assert [d["max_input_tokens"] for d in router_entry["model_groups"]["auto"]] == [8192, 131072, None]
    assert "'budget' mixes" not in out  # the other group's deployments declare no window
    assert router_entry["pre_call_checks"] is False
    assert main(["check", "--config", str(cfg), "--strict"]) == 1
    assert "router: model group 'auto' mixes context windows" in capsys.readouterr().err

    raw["router_settings"]["enable_pre_call_checks"] = True  # litellm drops a deployment the prompt does not fit
    raw["router_settings"]["routing_strategy_args"].update(rollout=0.25, decision_timeout_s=0.5)
    cfg.write_text(yaml.safe_dump(raw))
    assert main(["check", "--config", str(cfg), "--strict"]) == 0
    out = capsys.readouterr().out
    assert "context windows" not in out and "decision timeout 0.5 s, serving: rollout 25%" in out


def test_output_piped_into_a_reader_that_stops_early_ends_quietly(bundle_dir: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    import io
    import os
    import sys

    read_end, write_end = os.pipe()
    os.close(read_end)  # `| head -1` has read its line and left: every write now fails with EPIPE
    closed = io.TextIOWrapper(io.FileIO(write_end, "w"), line_buffering=True)
    monkeypatch.setattr(sys, "stdout", closed)
    assert main(["info", "--bundle", str(bundle_dir)]) == 141  # no BrokenPipeError traceback
    closed.close()


def _classifier_config(directory: Path, bundle: Path, tiers: dict[str, str], module: str, args: str = "",
                       **router_config: object) -> Path:
    """A proxy config whose complexity router's classifier is a PrefillTierClassifier defined in ``module``.py beside
    it (the proxy imports it from the config's directory); ``args``: more of its keyword arguments; ``router_config``:
    more of the complexity router's config."""
    import yaml

    (directory / f"{module}.py").write_text(
        "from litellm_prefill_router.tier_classifier import PrefillTierClassifier\n"
        f"classifier = PrefillTierClassifier({str(bundle)!r}, {tiers!r}, preset='max-quality'{args})\n")
    groups = {"SIMPLE": "hist", "MEDIUM": "maths", "COMPLEX": "gen"}
    # the COMPLEX tier's group is priced in its deployment's model_info; the others are unknown to litellm
    deployments = [{"model_name": g, "litellm_params": {"model": f"openai/tier-{g}", "api_key": "sk-test"},
                    "model_info": {"input_cost_per_token": 3e-6, "output_cost_per_token": 4e-6} if g == "gen" else {}}
                   for g in groups.values()]
    path = directory / "config.yaml"
    path.write_text(yaml.safe_dump({"model_list": [*deployments, tier_router("smart", f"{module}.classifier",
                                                                             groups, **router_config)]}))
    return path


def test_check_reports_a_complexity_routers_tier_classifier_its_tiers_and_sample_tiers(
        bundle_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    tiers = {"SIMPLE": "history-model", "MEDIUM": "math-model", "COMPLEX": "generalist"}
    cfg = _classifier_config(tmp_path, bundle_dir, tiers, "tiers_check_ok")
    out = tmp_path / "check.json"
    assert main(["check", "--config", str(cfg), "--prompt", MATH_PROMPT, "--prompt", HIST_PROMPT,
                 "--json", str(out), "--strict"]) == 0
    text = capsys.readouterr().out
    assert "complexity router 'smart' (tier classifier): bundle" in text and \
        "policy preset=max-quality, classified" in text
    (entry,) = json.loads(out.read_text())["classifiers"]
    assert [(t["tier"], t["target"], t["model_group"]) for t in entry["tiers"]] == \
        [("SIMPLE", "history-model", "hist"), ("MEDIUM", "math-model", "maths"), ("COMPLEX", "generalist", "gen")]
    # priced as the classifier prices a request: the tier's group's deployments, else the bundle's training price
    assert [(t["price_from"], t["input_usd_per_mtok"], t["output_usd_per_mtok"]) for t in entry["tiers"]] == [
        ("manifest", pytest.approx(0.3), pytest.approx(0.3)), ("manifest", pytest.approx(0.2), pytest.approx(0.2)),
        ("model_info", pytest.approx(3.0), pytest.approx(4.0))]
    assert [(r["tier"], r["target"]) for r in entry["routes"]] == [("MEDIUM", "math-model"),
                                                                   ("SIMPLE", "history-model")]


def test_check_warns_of_classifier_tiers_the_complexity_router_lacks_and_names_a_plugin_it_cannot_import(
        bundle_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    tiers = {"SIMPLE": "history-model", "EXPERT": "generalist"}  # the router's tiers: SIMPLE, MEDIUM, COMPLEX
    cfg = _classifier_config(tmp_path, bundle_dir, tiers, "tiers_check_unknown")
    assert main(["check", "--config", str(cfg)]) == 0
    assert "warning: the classifier's tiers ['EXPERT'] are not in complexity_router_config.tiers" in \
        capsys.readouterr().out
    assert main(["check", "--config", str(cfg), "--strict"]) == 1
    cfg.write_text(cfg.read_text().replace("tiers_check_unknown.classifier", "tiers_check_missing.classifier"))
    assert main(["check", "--config", str(cfg)]) == 2
    assert "classifier_plugin 'tiers_check_missing.classifier' cannot be imported (ModuleNotFoundError" in \
        capsys.readouterr().err


def test_check_reports_a_tier_classifiers_rollout_and_warns_of_a_shadow_tier_the_router_lacks(
        bundle_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    tiers = {"SIMPLE": "history-model", "MEDIUM": "math-model"}
    cfg = _classifier_config(tmp_path, bundle_dir, tiers, "tiers_check_rollout", ", rollout=0.1, shadow_tier='EXPERT'")
    assert main(["check", "--config", str(cfg)]) == 0
    text = capsys.readouterr().out
    assert "policy preset=max-quality, rollout 10%, served as before by tier EXPERT" in text
    assert "warning: the classifier's tiers ['EXPERT'] are not in complexity_router_config.tiers" in text


def test_check_warns_when_litellm_would_cancel_the_classifier_before_its_decision_timeout(
        bundle_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    tiers = {"SIMPLE": "history-model", "MEDIUM": "math-model"}
    cfg = _classifier_config(tmp_path, bundle_dir, tiers, "tiers_check_slow", ", decision_timeout_s=5")
    assert main(["check", "--config", str(cfg)]) == 0
    assert ("warning: the classifier waits up to 5 s for a prediction, but litellm cancels it after "
            "classifier_plugin_timeout_ms 3000") in capsys.readouterr().out
    assert main(["check", "--config", str(cfg), "--strict"]) == 1
    # the default (2.5 s) against a router that cuts off sooner
    short = _classifier_config(tmp_path, bundle_dir, tiers, "tiers_check_short", classifier_plugin_timeout_ms=1000)
    assert main(["check", "--config", str(short), "--json", str(tmp_path / "c.json")]) == 0
    assert "set the classifier's decision_timeout_s below 1 s" in capsys.readouterr().out
    (entry,) = json.loads((tmp_path / "c.json").read_text())["classifiers"]
    assert (entry["decision_timeout_s"], entry["classifier_plugin_timeout_ms"]) == (2.5, 1000)


def test_check_reports_a_routing_plugins_pools_and_warns_of_models_a_narrowed_pool_leaves_out(
        bundle_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import yaml

    (tmp_path / "plugin_check_mod.py").write_text(
        "from litellm_prefill_router.routing_plugin import PrefillRoutingPlugin\n"
        f"plugin = PrefillRoutingPlugin({str(bundle_dir)!r}, preset='max-quality')\n")
    mystery = {"model_name": "auto", "litellm_params": {"model": "openai/mystery", "api_key": "k"}}
    # math-model served at 10x the bundle's price: the sample picks are priced as the proxy's requests will be
    cfg = {"model_list": [*model_list(prices={"math-model": (2e-6, 2e-6)}), mystery, cheap_group(),
                          tier_router("smart", None, {"SIMPLE": ["cheap", "auto"]}, classifier_type="heuristic",
                                      plugins=["plugin_check_mod.plugin"])],
           "router_settings": {"routing_strategy": "latency-based-routing", "plugins": ["plugin_check_mod.plugin"]}}
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(cfg))
    out = tmp_path / "check.json"
    assert main(["check", "--config", str(path), "--prompt", MATH_PROMPT, "--json", str(out)]) == 0
    text = capsys.readouterr().out
    assert "routing plugin plugin_check_mod.plugin (router_settings.plugins): bundle" in text
    assert "warning: pool 'auto': ['openai/mystery'] map to no bundle target and are left out" in text
    assert "left as they are): cheap" in text
    first, tiered = json.loads(out.read_text())["plugins"]
    assert {m["model"]: m["target"] for m in first["pools"]["auto"]} == {
        "openai/math-model": "math-model", "openai/history-model": "history-model",
        "openai/generalist": "generalist", "openai/mystery": None}
    assert [(r["model_group"], r["target"]) for r in first["routes"]] == [("auto", "math-model")]
    cost = first["routes"][0]["cost_usd"]  # the same tokens at 2e-6 vs the generalist's 9e-7 per token
    assert cost["math-model"] / cost["generalist"] == pytest.approx(2e-6 / 9e-7)
    assert tiered["name"] == "routing plugin plugin_check_mod.plugin (complexity router 'smart' plugins)"
    assert [(m["model"], m["target"]) for m in tiered["pools"]["tier SIMPLE"]] == [("cheap", None), ("auto", None)]
    # each target's price as the plugin prices a request: its deployments' (model_info here), the row's source
    rows = {m["model"]: (m["input_usd_per_mtok"], m["price_from"]) for m in first["pools"]["auto"]}
    assert rows == {"openai/math-model": (pytest.approx(2.0), "model_info"),
                    "openai/history-model": (pytest.approx(0.3), "model_info"),
                    "openai/generalist": (pytest.approx(0.9), "model_info"), "openai/mystery": (None, None)}
    assert main(["check", "--config", str(path), "--strict"]) == 1
    # a router-wide strategy litellm runs only on its synchronous path, which refuses a Router with plugins
    cfg["router_settings"]["routing_strategy"] = "usage-based-routing"
    path.write_text(yaml.safe_dump(cfg))
    capsys.readouterr()
    assert main(["check", "--config", str(path), "--json", str(out)]) == 0
    assert "routing_strategy 'usage-based-routing' runs on litellm's synchronous selection path, which refuses a " \
           "Router with plugins: every request would fail" in capsys.readouterr().out
    first, tiered = json.loads(out.read_text())["plugins"]
    assert first["refused"].endswith("use 'usage-based-routing-v2'") and tiered["refused"] is None
