"""`prefill-router drift`: traffic a real router logged, compared with the reference distribution `train` stores in
the bundle (its validation split) or with an earlier log. Traffic drawn like the training data is stable; a traffic of
maths prompts only - half the training data's topics gone - is a major shift of the predictions."""

from __future__ import annotations

import asyncio
import importlib.util
import json
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from conftest import model_list
from litellm_prefill_router import PrefillRouter, flush_logging, load_bundle
from litellm_prefill_router.bundle import MANIFEST_NAME, write_bundle
from litellm_prefill_router.cli import main
from litellm_prefill_router.drift import (
    DriftError,
    Histogram,
    ReferenceDistribution,
    bundle_reference,
    drift,
    drift_from_bundle,
)
from tiny import synthetic_rows

CALLS = 240


def _route(bundle_dir: Path, prompts: list[str], path: Path) -> list[dict]:
    async def serve() -> None:
        r = PrefillRouter(model_list=model_list(), routing_strategy="prefill",
                          routing_strategy_args={"bundle": str(bundle_dir), "decision_log": str(path)})
        for text in prompts:
            await r.acompletion(model="auto", messages=[{"role": "user", "content": text}])
        await flush_logging()

    asyncio.run(serve())
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.fixture(scope="module")
def logs(bundle_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Decision logs of the test bundle serving new prompts: ``like_training`` (maths and history, as the training
    data, other draws), ``like_training_later`` (more of the same), ``maths_only`` and ``long_slice`` (a fifth of the
    calls four times as long: the last ones)."""
    d = tmp_path_factory.mktemp("drift")
    fresh = [r for r in synthetic_rows(4 * CALLS, seed=7)]
    maths = [r["prompt"] for r in fresh if r["benchmark"] == "math"][:CALLS]
    both = [r["prompt"] for r in synthetic_rows(2 * CALLS, seed=11)]
    # a new kind of traffic: a fifth of the calls are prompts four times as long as any the bundle was trained on
    longer = both[: CALLS - CALLS // 5] + [" ".join([p] * 4) for p in both[CALLS: CALLS + CALLS // 5]]
    out = {"like_training": both[:CALLS], "like_training_later": both[CALLS:], "maths_only": maths,
           "long_slice": longer}
    for name, prompts in out.items():
        _route(bundle_dir, prompts, d / f"{name}.jsonl")
    return {name: d / f"{name}.jsonl" for name in out}


def _records(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def _against_bundle(path: Path, bundle_dir: Path, **kw: object) -> dict:
    return drift_from_bundle(_records(path), bundle_dir, **kw)


def test_a_trained_bundle_carries_the_reference_distribution_of_its_validation_predictions(bundle_dir: Path) -> None:
    report = load_bundle(bundle_dir).report()
    ref = ReferenceDistribution.model_validate(report["reference"])
    assert ref.n == report["validation"]["n"]
    assert set(ref.p_correct) == set(report["targets"])
    for h in ref.p_correct.values():
        assert 1 <= len(h.edges) <= 9 and 0.0 <= h.edges[0] and h.edges[-1] <= 1.0
        assert sum(h.shares) == pytest.approx(1.0) and 0.0 < h.mean < 1.0
    tokens = ref.input_tokens
    assert tokens is not None and tokens.edges[0] > 0 and tokens.median >= tokens.edges[0]
    assert ref.truncated_share == 0.0  # the tiny prompts fit the 64-token window
    assert ref.rows is not None and len(ref.rows.p_correct) == ref.n and ref.rows.targets == report["targets"]


def test_traffic_drawn_like_the_training_data_is_stable_and_maths_only_traffic_is_a_major_shift(
        logs: dict[str, Path], bundle_dir: Path) -> None:
    same = _against_bundle(logs["like_training"], bundle_dir)
    assert same["calls"] == CALLS and same["skipped"] == {}
    assert same["verdict"] == "stable", same["targets"]
    assert same["input_tokens"]["verdict"] == "stable"
    assert "no action" in same["advice"]
    maths = _against_bundle(logs["maths_only"], bundle_dir)
    assert maths["verdict"] == "major shift"
    # the topic-specific targets' predictions moved: maths-model is now sure, history-model sure of failure
    assert {"math-model", "history-model"} <= set(maths["shifted_targets"])
    m = maths["targets"]["math-model"]
    assert m["mean_p_correct"] > m["reference_mean_p_correct"] + 0.2 and m["psi"] > m["bound_99"]
    assert "math-model" in maths["advice"] and "retrain" in maths["advice"]


def test_an_earlier_log_is_a_reference_too(logs: dict[str, Path]) -> None:
    before = _records(logs["like_training"])
    assert drift(_records(logs["like_training_later"]), before)["verdict"] == "stable"
    shifted = drift(_records(logs["maths_only"]), before, reference_name="last-month.jsonl")
    assert shifted["verdict"] == "major shift" and shifted["reference"]["source"] == "log last-month.jsonl"
    assert shifted["reference"]["n"] == CALLS


def test_few_calls_get_no_verdict_and_the_advice_names_the_bar(logs: dict[str, Path], bundle_dir: Path) -> None:
    r = _against_bundle(logs["maths_only"], bundle_dir, min_calls=CALLS + 1)
    assert r["verdict"] == "too few calls" and r["shifted_targets"] == []
    assert all(v["verdict"] == "too few calls" for v in r["targets"].values())
    assert str(CALLS + 1) in r["advice"]


def test_calls_another_bundle_version_decided_are_left_out_and_none_left_is_an_error_naming_the_versions(
        logs: dict[str, Path], bundle_dir: Path) -> None:
    records = _records(logs["like_training"])
    for rec in records[:40]:
        rec["decision"]["bundle_version"] = "0ldversion00"
    bundle = load_bundle(bundle_dir)
    ref = bundle_reference(bundle.report(), "b")
    r = drift(records, ref, bundle_version=bundle.version)
    assert r["calls"] == CALLS - 40 and r["skipped"] == {"decided by another bundle version": 40}
    with pytest.raises(DriftError, match="0ldversion00.*pass the bundle that decided them"):
        drift(records[:40], ref, bundle_version=bundle.version)


def test_each_request_counts_once_and_pinned_calls_and_fallbacks_are_left_out(
        logs: dict[str, Path], bundle_dir: Path) -> None:
    records = _records(logs["like_training"])
    retry = json.loads(json.dumps(records[0]))
    retry["decision"]["reason"] = "retry: math-model failed this request"
    reroute = json.loads(json.dumps(retry))  # a LangChain reroute: no trace id
    reroute["decision"].pop("trace_id")
    pinned = {"decision": {"target": "generalist", "reason": "pinned", "p_correct": {}, "trace_id": "t-pinned"}}
    no_text = json.loads(json.dumps(records[1]))  # predicted, on a prompt without text: not traffic to compare
    no_text["decision"].update(reason="fallback: the request has no text to route on", trace_id="t-no-text")
    r = _against_bundle(logs["like_training"], bundle_dir)
    bundle = load_bundle(bundle_dir)
    again = drift(records + [retry, reroute, pinned, no_text], bundle_reference(bundle.report(), "b"),
                  bundle_version=bundle.version)
    assert again["calls"] == r["calls"] == CALLS
    assert again["skipped"] == {"another attempt of a request counted already": 2,
                                "pinned or fallback (no prediction to compare)": 2}
    assert again["targets"] == r["targets"]


def test_feedback_compares_each_answering_targets_predictions_with_its_scores(
        logs: dict[str, Path], bundle_dir: Path) -> None:
    records = _records(logs["like_training"])
    scores = {rec["litellm_call_id"]: 0.0 for rec in records[:50]}
    bundle = load_bundle(bundle_dir)
    r = drift(records, bundle_reference(bundle.report(), "b"), bundle_version=bundle.version, scores=scores)
    cal = r["calibration"]
    assert sum(c["scored"] for c in cal.values()) == 50
    for t, c in cal.items():
        served = [rec for rec in records[:50] if rec["decision"]["target"] == t]
        assert c["scored"] == len(served) and c["mean_score"] == 0.0
        assert c["mean_p_correct"] == pytest.approx(np.mean([rec["decision"]["p_correct"][t] for rec in served]))


def test_psi_is_the_textbook_sum_over_the_reference_deciles_and_ties_share_a_bin() -> None:
    rng = np.random.default_rng(0)
    ref = rng.normal(size=20_000)
    hist = Histogram.of(ref)
    assert len(hist.shares) == 10 and hist.shares == pytest.approx([0.1] * 10)
    x = rng.normal(0.5, 1.0, size=3_000)
    edges = np.quantile(ref, np.arange(1, 10) / 10, method="inverted_cdf")
    observed = np.bincount(np.searchsorted(edges, x), minlength=10) / len(x)
    expected = np.bincount(np.searchsorted(edges, ref), minlength=10) / len(ref)
    assert hist.psi(x) == pytest.approx(float(np.sum((observed - expected) * np.log(observed / expected))), rel=1e-9)
    assert hist.psi(ref) == pytest.approx(0.0, abs=1e-12)
    # integer-valued data (prompt lengths): tied deciles merge, the shares are the data's own, no false shift
    tokens = rng.poisson(3, size=5_000)
    lengths = Histogram.of(tokens)
    assert len(lengths.edges) < 9 and sum(lengths.shares) == pytest.approx(1.0)
    assert lengths.psi(rng.poisson(3, size=5_000)) < 0.01 < lengths.psi(rng.poisson(4, size=5_000))


def _with_report(bundle_dir: Path, tmp_path: Path, edit: Callable[[dict], None]) -> Path:
    """A copy of the bundle whose report.json ``edit`` changed (written as `train` writes bundles: hashes and all)."""
    src = tmp_path / "src"
    shutil.copytree(bundle_dir, src)
    report = json.loads((src / "report.json").read_text())
    edit(report)
    (src / "report.json").write_text(json.dumps(report))
    fields = json.loads((src / MANIFEST_NAME).read_text())
    files = {name: src / name for name in fields.pop("files")}
    fields.pop("schema_version")
    return write_bundle(tmp_path / "edited", files, fields).directory


def test_a_bundle_without_a_reference_is_an_error_naming_the_ways_out(bundle_dir: Path, tmp_path: Path) -> None:
    old = load_bundle(_with_report(bundle_dir, tmp_path, lambda report: report.pop("reference")))
    with pytest.raises(DriftError, match="no reference distribution.*Retrain.*--reference-log"):
        bundle_reference(old.report(), str(old.directory))


def test_the_cli_prints_the_table_writes_json_and_plot_and_fails_on_a_shift_when_asked(
        logs: dict[str, Path], bundle_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "drift.json"
    assert main(["drift", "--log", str(logs["like_training"]), "--bundle", str(bundle_dir), "--fail-on", "moderate",
                 "--json", str(out)]) == 0
    text = capsys.readouterr().out
    assert f"{CALLS} logged calls against validation split" in text and "verdict: stable" in text
    assert "(prompt tokens)" in text and json.loads(out.read_text())["verdict"] == "stable"
    plot = ["--plot", str(tmp_path / "drift.png")] if importlib.util.find_spec("matplotlib") else []
    assert main(["drift", "--log", str(logs["maths_only"]), "--reference-log", str(logs["like_training"]),
                 "--fail-on", "major", *plot]) == 3
    text = capsys.readouterr().out
    assert "verdict: major shift" in text and "math-model" in text
    if plot:
        assert (tmp_path / "drift.png").stat().st_size > 10_000
    assert main(["drift", "--log", str(tmp_path / "missing.jsonl"), "--bundle", str(bundle_dir)]) == 2
    assert "decision_log" in capsys.readouterr().err


def test_a_semantic_router_drop_ins_log_is_checked_the_same_way(bundle_dir: Path, tmp_path: Path) -> None:
    from litellm_prefill_router.semantic import PrefillSemanticRouter

    log = tmp_path / "semantic.jsonl"
    rl = PrefillSemanticRouter(bundle=str(bundle_dir), decision_log=str(log))
    for r in synthetic_rows(2 * CALLS, seed=7):
        if r["benchmark"] == "math":
            rl(r["prompt"])  # each line is written before the call returns
    r = _against_bundle(log, bundle_dir)
    assert r["calls"] == CALLS and r["verdict"] == "major shift" and "math-model" in r["shifted_targets"]


def test_novelty_finds_a_new_slice_of_traffic_and_ranks_its_calls_first(logs: dict[str, Path],
                                                                         bundle_dir: Path) -> None:
    same = _against_bundle(logs["like_training"], bundle_dir)["novelty"]
    assert same["verdict"] == "stable" and same["share"] < 0.1  # about 5% on traffic like the reference
    assert same["features"] == [*load_bundle(bundle_dir).report()["targets"], "input tokens"]
    r = _against_bundle(logs["long_slice"], bundle_dir)
    nov, slice_ids = r["novelty"], {rec["litellm_call_id"] for rec in _records(logs["long_slice"])[-(CALLS // 5):]}
    assert nov["verdict"] in ("moderate shift", "major shift") and nov["z"] > 3.09
    assert nov["share"] >= 0.15 and nov["novel"] == len(r["novel_calls"])
    top = [c["id"] for c in r["novel_calls"][: CALLS // 5]]
    assert len(set(top) & slice_ids) >= 0.8 * len(top)  # the novel calls are the new slice's
    assert [c["distance"] for c in r["novel_calls"]] == sorted((c["distance"] for c in r["novel_calls"]), reverse=True)
    assert "unlike any reference row" in r["advice"] and "--novel-out" in r["advice"]


def test_novel_out_writes_the_novel_calls_as_collect_prompts(logs: dict[str, Path], bundle_dir: Path,
                                                            tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from litellm_prefill_router.collect import load_prompts

    out = tmp_path / "novel.jsonl"
    assert main(["drift", "--log", str(logs["long_slice"]), "--bundle", str(bundle_dir), "--novel-out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "novel calls" in text and f"to {out} as collect prompts" in text
    prompts = load_prompts(out)
    r = _against_bundle(logs["long_slice"], bundle_dir)
    assert [p.id for p in prompts] == [c["id"] for c in r["novel_calls"]]
    by_id = {rec["litellm_call_id"]: rec["messages"] for rec in _records(logs["long_slice"])}
    assert all(p.prompt == by_id[p.id] for p in prompts)


def test_each_decision_carries_its_novelty_as_drift_computes_it_and_stats_and_headers_show_it(
        logs: dict[str, Path], bundle_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from litellm_prefill_router.records import DECISION_KEY, decision_headers

    records = _records(logs["long_slice"])
    logged = {rec["litellm_call_id"]: rec["decision"]["novelty"] for rec in records}
    r = _against_bundle(logs["long_slice"], bundle_dir)
    # the same distance (the log rounds P(correct) to 6 decimals and the novelty to 4)
    assert r["novel_calls"] and all(logged[c["id"]] == pytest.approx(c["distance"], abs=1e-3)
                                    for c in r["novel_calls"])
    assert sum(v > 1 for v in logged.values()) == r["novelty"]["novel"]
    assert main(["stats", "--log", str(logs["long_slice"])]) == 0
    assert "novel prompts (unlike any the bundle was validated on" in capsys.readouterr().out
    top = max(records, key=lambda rec: rec["decision"]["novelty"])
    headers = decision_headers({"metadata": {DECISION_KEY: top["decision"]}})
    assert headers is not None and float(headers["x-prefill-novelty"]) > 1.0


def test_a_bundle_without_reference_rows_routes_as_before_without_novelty(bundle_dir: Path, tmp_path: Path) -> None:
    from litellm_prefill_router.predictor import PrefillPredictor

    old = _with_report(bundle_dir, tmp_path, lambda report: report["reference"].pop("rows"))
    records = _route(old, [r["prompt"] for r in synthetic_rows(4, seed=3)], tmp_path / "old.jsonl")
    assert PrefillPredictor(old).novelty is None
    assert all("novelty" not in rec["decision"] for rec in records)  # log lines as they were


def test_malformed_reference_rows_cost_the_novelty_with_a_warning_never_a_route(
        bundle_dir: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    def short_row(report: dict) -> None:
        report["reference"]["rows"]["p_correct"][3] = [0.5]

    broken = _with_report(bundle_dir, tmp_path, short_row)
    with caplog.at_level("WARNING", logger="litellm_prefill_router"):
        records = _route(broken, [r["prompt"] for r in synthetic_rows(4, seed=3)], tmp_path / "broken.jsonl")
    assert len(records) == 4 and all("novelty" not in rec["decision"] for rec in records)
    assert "cannot read" in caplog.text and "row 3 has 1 values for 3 targets" in caplog.text
    with pytest.raises(DriftError, match="'reference' is malformed.*retrain"):
        bundle_reference(load_bundle(broken).report(), str(broken))


def test_replay_reports_the_novel_share_as_logged_and_with_the_replaying_bundle(
        logs: dict[str, Path], bundle_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from litellm_prefill_router.predictor import PrefillPredictor
    from litellm_prefill_router.replay import replay

    records = _records(logs["long_slice"])
    r = replay(records, PrefillPredictor(bundle_dir), progress=False)
    logged = sum(rec["decision"]["novelty"] > 1 for rec in records) / len(records)
    assert r["novel_share"] == {"before": pytest.approx(logged), "after": pytest.approx(logged)}  # the same bundle
    assert logged >= 0.15
    assert main(["replay", "--log", str(logs["long_slice"]), "--bundle", str(bundle_dir), "--quiet"]) == 0
    assert f"novel prompts (unlike the bundle's validation data): {logged:.1%} as logged -> {logged:.1%}" in \
        capsys.readouterr().out
