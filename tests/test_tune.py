"""`prefill-router tune`: every tolerance and lambda applied to a real router's decision log, and the setting that fits
a budget - checked against a replay of the log with that setting (which runs the bundle again)."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

from conftest import HIST_PROMPT, MATH_PROMPT, model_list
from litellm_prefill_router import PrefillRouter, flush_logging
from litellm_prefill_router.cli import main
from litellm_prefill_router.policy import RoutingPolicy
from litellm_prefill_router.predictor import PrefillPredictor
from litellm_prefill_router.replay import replay
from litellm_prefill_router.tuning import TuneError, tune


@pytest.fixture(scope="module")
def log(bundle_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> list[dict]:
    """Ten calls through litellm.Router: maths and history prompts, one pinned, one with its own cost ceiling."""
    import asyncio

    path = tmp_path_factory.mktemp("tune") / "decisions.jsonl"

    async def serve() -> None:
        r = PrefillRouter(model_list=model_list(), routing_strategy="prefill",
                          routing_strategy_args={"bundle": str(bundle_dir), "preset": "max-quality",
                                                 "decision_log": str(path)})
        for i in range(4):
            for text in (MATH_PROMPT, HIST_PROMPT):
                await r.acompletion(model="auto", messages=[{"role": "user", "content": f"{text} {'again ' * i}"}])
        await r.acompletion(model="auto", messages=[{"role": "user", "content": HIST_PROMPT}],
                            metadata={"prefill": {"pin_model": "generalist"}})
        await r.acompletion(model="auto", messages=[{"role": "user", "content": HIST_PROMPT + " at sea"}],
                            metadata={"prefill": {"max_cost_usd": 6e-5}})
        await flush_logging()

    asyncio.run(serve())
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_the_setting_chosen_for_a_budget_is_the_most_accurate_within_it_and_a_replay_costs_the_same(
        log: list[dict], bundle_dir: Path) -> None:
    free = tune(log, savings=0.0)
    assert free["calls"] == 9 and free["calls_with_limits"] == 1
    assert free["skipped"] == {"pinned or fallback (no policy chose them)": 1}
    cheapest, dearest = free["frontier"][0]["cost_per_1k_usd"], free["frontier"][-1]["cost_per_1k_usd"]
    budget = (cheapest + dearest) / 2
    r = tune(log, budget_usd_per_1k=budget)
    within = [q for q in r["points"] if q["cost_per_1k_usd"] <= budget]
    assert r["chosen"]["cost_per_1k_usd"] <= budget
    assert r["chosen"]["expected_accuracy"] == max(q["expected_accuracy"] for q in within)
    # the same setting, decided again by the bundle on the logged messages: the same routes, the same cost
    predictor = PrefillPredictor(bundle_dir)
    lam = next(q for q in r["points"] if q["kind"] == "lambda" and q["value"] == 0.5)
    values = [q for q in r["points"] if q["kind"] == "value_usd"]  # what a right answer is worth, USD
    assert len({q["cost_per_1k_usd"] for q in values}) > 1  # the grid spans these calls' costs
    val = values[len(values) // 2]
    for c in (r["chosen"], lam, val):
        again = replay(log, predictor, policy=RoutingPolicy(c["kind"], c["value"]))
        assert again["calls"] == 9
        assert again["estimated_cost_after_usd"] / 9 * 1000 == pytest.approx(c["cost_per_1k_usd"], rel=1e-6)
        assert again["mean_p_correct_new_route"] == pytest.approx(c["expected_accuracy"], abs=1e-5)


def test_a_quality_goal_gets_the_cheapest_setting_reaching_it(log: list[dict]) -> None:
    front = tune(log, savings=0.0)["frontier"]
    goal = (front[0]["expected_accuracy"] + front[-1]["expected_accuracy"]) / 2
    chosen = tune(log, min_expected_accuracy=goal)["chosen"]
    assert chosen["expected_accuracy"] >= goal
    assert all(q["cost_per_1k_usd"] >= chosen["cost_per_1k_usd"] for q in front if q["expected_accuracy"] >= goal)


def test_goals_no_setting_meets_are_errors_naming_what_is_possible(log: list[dict]) -> None:
    with pytest.raises(TuneError, match=r"no setting \(tolerance, lambda or value_usd\) meets cost <= 1e-09 USD per 1k "
                                        r"requests on these 9 calls: the cheapest setting costs"):
        tune(log, budget_usd_per_1k=1e-9)
    with pytest.raises(TuneError, match="the most any setting reaches is"):
        tune(log, min_expected_accuracy=1.0)
    with pytest.raises(TuneError, match="exactly one goal"):
        tune(log, budget_usd_per_1k=1.0, savings=0.5)
    with pytest.raises(TuneError, match="no call of the decision log was decided by a policy"):
        tune([r for r in log if r["decision"]["reason"] == "pinned"], savings=0.5)


def test_the_tune_command_prints_the_frontier_and_the_setting_to_configure(
        log: list[dict], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "decisions.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in log))
    out = tmp_path / "tune.json"
    assert main(["tune", "--log", str(path), "--savings", "0.2", "--json", str(out)]) == 0
    text = capsys.readouterr().out
    chosen = json.loads(out.read_text())["chosen"]
    assert f"routing_strategy_args: {{{chosen['kind']}: {chosen['value']:g}}}" in text
    assert "saved vs dearest" in text and "(20% saved)" in text
    assert "let the router keep tuning it on its latest calls: routing_strategy_args: " \
        "{autotune: {savings: 0.2}}" in text
    assert main(["tune", "--log", str(path), "--budget-usd-per-1k", "1e-9"]) == 2  # a TuneError, said plainly
    if importlib.util.find_spec("matplotlib"):
        assert main(["tune", "--log", str(path), "--savings", "0.2", "--plot", str(tmp_path / "t.png")]) == 0
        assert (tmp_path / "t.png").stat().st_size > 10_000


def test_with_feedback_each_setting_shows_the_observed_score_of_the_calls_it_keeps_and_the_calibration(
        log: list[dict], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from litellm_prefill_router.records import feedback_ids

    # users liked the history-model answers and not the others; the pinned call was scored too (no policy chose it)
    scores = {feedback_ids(r)[0]: float(r["decision"]["target"] == "history-model") for r in log}
    r = tune(log, savings=0.0, scores=scores)
    decided = [x for x in log if x["decision"]["reason"] != "pinned"]
    cal = r["calibration"]
    assert cal["scored_calls"] == len(decided) == 9
    assert cal["mean_score"] == pytest.approx(sum(x["decision"]["target"] == "history-model" for x in decided) / 9)
    assert cal["mean_p_correct_served"] == pytest.approx(
        sum(x["decision"]["p_correct"][x["decision"]["target"]] for x in decided) / 9)
    as_logged = next(q for q in r["points"] if q["kind"] == "tolerance" and q["value"] == 0.0)  # max-quality
    assert as_logged["observed_kept"] == {"calls": 9, "mean_score": pytest.approx(cal["mean_score"])}
    cheapest = max((q for q in r["points"] if q["kind"] == "tolerance"), key=lambda q: q["value"])
    assert cheapest["observed_kept"]["calls"] < 9  # it moves some calls: their outcome there is unknown
    path, fb = tmp_path / "decisions.jsonl", tmp_path / "feedback.jsonl"
    path.write_text("".join(json.dumps(x) + "\n" for x in log))
    fb.write_text("".join(json.dumps({"id": i, "score": s}) + "\n" for i, s in scores.items()))
    assert main(["tune", "--log", str(path), "--savings", "0.2", "--feedback", str(fb)]) == 0
    out = capsys.readouterr().out
    assert "observed score, calls kept (n)" in out and "calibration on 9 scored calls" in out


def test_a_log_of_several_model_groups_is_tuned_one_group_at_a_time_when_asked(
        log: list[dict], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    other = json.loads(json.dumps(log[:4]))  # the same calls, as if routed in a second group
    for r in other:
        r["decision"]["model_group"] = "budget"
    both = log + other
    assert tune(both, savings=0.5)["calls"] == 13
    r = tune(both, savings=0.5, model_group="auto")
    assert r["calls"] == 9 and r["model_groups"] == {"auto": 10, "budget": 4}
    with pytest.raises(TuneError, match=r"no logged call was routed in model group 'smart'; the log has"):
        tune(both, savings=0.5, model_group="smart")
    path = tmp_path / "decisions.jsonl"
    path.write_text("".join(json.dumps(x) + "\n" for x in both))
    assert main(["tune", "--log", str(path), "--savings", "0.5"]) == 0
    assert "the log spans model groups {'auto': 10, 'budget': 4}" in capsys.readouterr().err
    assert main(["tune", "--log", str(path), "--savings", "0.5", "--model-group", "budget"]) == 0
    assert "4 logged calls decided by a policy" in capsys.readouterr().out


def _repeated(log: list[dict], times: int) -> list[dict]:
    """The log's calls ``times`` over, each copy with its own call id (enough scored calls to recalibrate on)."""
    out = []
    for k in range(times):
        for r in json.loads(json.dumps(log)):
            r["litellm_call_id"] = f"{r['litellm_call_id']}-{k}"
            out.append(r)
    return out


def test_recalibration_to_feedback_changes_expected_accuracy_not_routes(
        log: list[dict], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from litellm_prefill_router.records import feedback_ids

    calls = _repeated([r for r in log if r["decision"]["reason"] != "pinned"], 4)
    served_p = {feedback_ids(r)[0]: r["decision"]["p_correct"][r["decision"]["target"]] for r in calls}
    raw = tune(calls, savings=0.0)
    # scores equal to the bundle's own P(correct): it is calibrated, the fit is the identity
    same = tune(calls, savings=0.0, scores=served_p, recalibrate=True)
    assert same["recalibration"]["a"] == pytest.approx(1.0, abs=0.02)
    assert same["recalibration"]["b"] == pytest.approx(0.0, abs=0.02)
    for q, p in zip(raw["points"], same["points"]):
        assert q["expected_accuracy"] == pytest.approx(p["expected_accuracy"], abs=0.01)
    # users scored the answers half as good as the bundle expected: every expected accuracy falls, no route moves
    halved = {i: p / 2 for i, p in served_p.items()}
    low = tune(calls, savings=0.0, scores=halved, recalibrate=True)
    rc = low["recalibration"]
    assert rc["scored_calls"] == 36 and rc["mean_recalibrated_served"] == pytest.approx(rc["mean_score"], abs=0.01)
    for q, p in zip(raw["points"], low["points"]):
        assert (p["kind"], p["value"], p["routes"], p["cost_per_1k_usd"]) == \
            (q["kind"], q["value"], q["routes"], q["cost_per_1k_usd"])
        assert p["expected_accuracy"] < q["expected_accuracy"]
    with pytest.raises(TuneError, match=r"--recalibrate needs feedback / judge scores on at least 30 of the logged "
                                        r"calls \(9 scored\)"):
        tune(_repeated(log, 1), savings=0.0, scores=served_p, recalibrate=True)
    path, fb = tmp_path / "decisions.jsonl", tmp_path / "feedback.jsonl"
    path.write_text("".join(json.dumps(x) + "\n" for x in calls))
    fb.write_text("".join(json.dumps({"id": i, "score": s}) + "\n" for i, s in halved.items()))
    assert main(["tune", "--log", str(path), "--savings", "0.2", "--feedback", str(fb), "--recalibrate"]) == 0
    out = capsys.readouterr().out
    assert "recalibrated to the feedback (36 scored calls)" in out and "(recalibrated P(correct) of the routes" in out
    assert main(["tune", "--log", str(path), "--savings", "0.2", "--recalibrate"]) == 2  # no feedback: said plainly
    assert "pass --feedback" in capsys.readouterr().err


def test_a_time_window_narrows_stats_tune_and_drift_to_the_calls_logged_in_it(
        log: list[dict], tmp_path: Path, capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture) -> None:
    dated = json.loads(json.dumps(log))
    for i, r in enumerate(dated):
        r["ts"] = "2026-01-01T00:00:00+00:00" if i < 4 else "2026-02-01T12:00:00+00:00"
    del dated[-1]["ts"]  # a line without a timestamp cannot be placed in a window
    path = tmp_path / "decisions.jsonl"
    path.write_text("".join(json.dumps(x) + "\n" for x in dated))
    with caplog.at_level("WARNING"):
        assert main(["stats", "--log", str(path), "--since", "2026-01-15"]) == 0
    assert capsys.readouterr().out.startswith("5 routed calls")  # 4 by the policy and the pinned one
    assert "1 decision log records have no readable timestamp" in caplog.text
    assert main(["tune", "--log", str(path), "--until", "2026-01-15T00:00:00Z", "--savings", "0"]) == 0
    assert "4 logged calls decided by a policy" in capsys.readouterr().out
    # this month's calls against the whole log as the reference (the window applies to --log only)
    assert main(["drift", "--log", str(path), "--reference-log", str(path), "--since", "2026-01-15",
                 "--min-calls", "1"]) == 0
    assert "4 logged calls against log" in capsys.readouterr().out  # the pinned call has no prediction to compare
    for command in (["stats"], ["tune", "--savings", "0"], ["replay", "--bundle", "unused"]):
        assert main([*command, "--log", str(path), "--since", "2026-03-01"]) == 2  # nothing in the window: said so
        assert ("none of the 9 decision log records was logged from 2026-03-01T00:00:00+00:00: they were logged "
                "from 2026-01-01T00:00:00+00:00 to 2026-02-01T12:00:00+00:00; widen --since / --until"
                in capsys.readouterr().err)
    with pytest.raises(SystemExit) as bad:
        main(["tune", "--log", str(path), "--since", "last tuesday", "--savings", "0"])
    assert bad.value.code == 2 and "'last tuesday' is not an ISO date" in capsys.readouterr().err


def test_feedback_ids_that_name_no_logged_call_are_pointed_out_not_silently_dropped(
        log: list[dict], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path, fb = tmp_path / "decisions.jsonl", tmp_path / "fb.jsonl"
    path.write_text("".join(json.dumps(x) + "\n" for x in log))
    known = log[0]["litellm_call_id"]
    fb.write_text(json.dumps({"id": known, "score": 1}) + "\n" + json.dumps({"id": "chat-42", "score": 0}) + "\n")
    note = ("note: 1 of 2 feedback ids name no call read from the decision log (e.g. chat-42), so they count "
            "nowhere; an id is a call's litellm_call_id")
    assert main(["stats", "--log", str(path), "--feedback", str(fb)]) == 0
    out = capsys.readouterr()
    assert note in out.err and "feedback: 1 calls scored" in out.out
    assert main(["tune", "--log", str(path), "--savings", "0", "--feedback", str(fb)]) == 0
    assert note in capsys.readouterr().err
    fb.write_text(json.dumps({"id": known, "score": 1}) + "\n")
    assert main(["stats", "--log", str(path), "--feedback", str(fb)]) == 0
    assert "note:" not in capsys.readouterr().err  # every id names a call: nothing to say


def test_autotune_simulation_settings_without_the_simulation_are_refused(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "decisions.jsonl"
    path.write_text("")  # refused before the log is read: before, --window 50 was silently ignored
    assert main(["tune", "--log", str(path), "--savings", "0.5", "--window", "50", "--every", "10"]) == 2
    assert "--window, --every set the simulated autotune: add --simulate-autotune" in capsys.readouterr().err


def test_an_output_file_in_a_directory_not_made_yet_is_written_there(log: list[dict], tmp_path: Path) -> None:
    path = tmp_path / "decisions.jsonl"
    path.write_text("".join(json.dumps(x) + "\n" for x in log))
    report = tmp_path / "reports" / "week-48" / "stats.json"
    assert main(["stats", "--log", str(path), "--json", str(report)]) == 0  # a FileNotFoundError traceback before
    assert json.loads(report.read_text())["calls"] == len(log)


def test_a_plot_in_a_directory_not_made_yet_is_written_there(log: list[dict], tmp_path: Path) -> None:
    pytest.importorskip("matplotlib", reason="--plot needs matplotlib (the train extra; not in the serving install)")
    path, plot = tmp_path / "decisions.jsonl", tmp_path / "plots" / "tune.png"
    path.write_text("".join(json.dumps(x) + "\n" for x in log))
    assert main(["tune", "--log", str(path), "--savings", "0", "--plot", str(plot)]) == 0
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
