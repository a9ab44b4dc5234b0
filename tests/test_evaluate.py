"""The evaluation harness: metric definitions on hand-made rows, and `prefill-router evaluate` end to end
(cross-validation with the real MiniLM baselines, and a served bundle on its test split)."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from litellm_prefill_router.cli import main
from litellm_prefill_router.training import evaluation as ev
from litellm_prefill_router.training.data import load_dataset


def _set(hard: list[list[float]], cost: list[list[float]], benchmarks: list[str] | None = None) -> ev.EvalSet:
    h = np.array(hard, dtype=float)
    return ev.EvalSet(["a", "b"], h, np.array(cost, dtype=float),
                      np.array(benchmarks or ["x"] * len(h)), [f"r{i}" for i in range(len(h))])


def test_gap_captured_and_savings_follow_their_definitions() -> None:
    # target a: cheap, right on rows 0-1; target b: expensive, right on rows 1-3
    es = _set([[1, 0], [1, 1], [0, 1], [0, 1]], [[1, 10]] * 4)
    m = ev.point_metrics(np.array([0, 0, 1, 1]), es)  # the oracle's choice
    assert m["accuracy"] == 1.0 and m["gap_captured"] == pytest.approx(1.0)
    assert m["savings_vs_most_expensive"] == pytest.approx(1 - 22 / 40)
    best = ev.point_metrics(np.array([1, 1, 1, 1]), es)
    assert best["gap_captured"] == pytest.approx(0.0) and best["savings_vs_best_single"] == pytest.approx(0.0)
    assert best["zones"]["all right"]["n"] == 1 and best["zones"]["disagree"]["n"] == 3


def test_weighted_auc_matches_sklearn_including_ties_and_bootstrap_weights() -> None:
    from sklearn.metrics import roc_auc_score

    rng = np.random.default_rng(1)
    y = rng.integers(0, 2, 300).astype(float)
    p = np.round(rng.random(300), 1) + 0.2 * y  # many ties
    w = rng.integers(0, 4, 300).astype(float)
    assert ev.roc_auc(y, p) == pytest.approx(roc_auc_score(y, p))
    assert ev.roc_auc(y, p, w) == pytest.approx(roc_auc_score(y, p, sample_weight=w))
    assert np.isnan(ev.roc_auc(np.ones(5), np.arange(5.0)))


def test_frontier_area_is_the_mean_of_the_concave_monotone_hull() -> None:
    x, y = np.array([0.2, 1.0]), np.array([0.5, 0.7])
    assert ev.frontier_area(x, y, 0.2) == pytest.approx(0.6, abs=1e-3)
    # a point under the chord does not count; a point above it does
    assert ev.frontier_area(np.r_[x, 0.5], np.r_[y, 0.55], 0.2) == pytest.approx(0.6, abs=1e-3)
    assert ev.frontier_area(np.r_[x, 0.5], np.r_[y, 0.7], 0.2) > 0.66
    # a dominated, more expensive point never lowers the curve
    assert ev.frontier_area(np.r_[x, 0.9], np.r_[y, 0.1], 0.2) == pytest.approx(0.6, abs=1e-3)


def test_pair_metrics_of_a_perfect_and_an_inverted_router() -> None:
    # strong (b) right on every row, weak (a) right on half
    es = _set([[1, 1], [0, 1], [1, 1], [0, 1]], [[1, 10]] * 4)
    perfect = ev.pair_metrics(np.array([[1, 1], [0, 1], [1, 1], [0, 1]], dtype=float), es, strong=1, weak=0)
    inverted = ev.pair_metrics(np.array([[0, 1], [1, 0], [0, 1], [1, 0]], dtype=float), es, strong=1, weak=0)
    assert perfect["cpt50"] == pytest.approx(0.25) and perfect["cpt80"] == pytest.approx(0.5)
    assert perfect["apgr"] > inverted["apgr"]
    assert inverted["cpt80"] == pytest.approx(1.0)


def test_per_benchmark_baseline_uses_training_means_and_falls_back_to_the_overall_mean() -> None:
    from litellm_prefill_router.training.baselines import benchmark_prior_predict

    y = np.array([[1.0, np.nan], [1.0, np.nan], [0.0, 1.0], [0.0, 0.0]])
    p = benchmark_prior_predict(["math", "math", "hist", "hist"], y, ["hist", "math", "unseen"])
    # math has no score for the second target: the overall mean of that target stands in for it
    np.testing.assert_allclose(p, [[0.0, 0.5], [1.0, 0.5], [0.5, 0.5]])
    assert benchmark_prior_predict(["a"], y[:1], []).shape == (0, 2)


def test_operating_points_are_chosen_on_the_reference_rows_only() -> None:
    rng = np.random.default_rng(0)
    n = 400
    hard = rng.integers(0, 2, (n, 2)).astype(float)
    es = ev.EvalSet(["a", "b"], hard, np.tile([1.0, 10.0], (n, 1)), np.array(["x"] * n), [str(i) for i in range(n)])
    p = np.clip(hard * 0.6 + rng.random((n, 2)) * 0.4, 0, 1)
    ops = ev.choose_on_reference(p, es, p[:5], es.cost[:5])
    assert set(ops) == {"max-quality", "match-best-single", "paper-savings", "balanced"}
    assert all(len(c) == 5 for c in ops.values())
    # paper-savings on the reference rows saves at least 74.31% vs always-b
    settings, ch = ev.sweep_choices(p, es.cost)
    chosen = ev.choose_on_reference(p, es, p, es.cost)["paper-savings"]
    assert 1 - es.cost[np.arange(n), chosen].sum() / es.cost[:, 1].sum() >= ev.PAPER_SAVINGS
    assert len(settings) == ch.shape[0]


def test_evaluate_cv_writes_metrics_report_plot_and_an_out_of_fold_prediction_per_row(
        tiny_encoder: Path, tiny_data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "cv"
    rc = main(["evaluate", "--data", str(tiny_data), "--cv", "3", "--encoder", str(tiny_encoder), "--layers", "4",
               "--baselines", "knn,mf,benchmark", "--bootstrap", "50", "--out", str(out), "--quiet"])
    assert rc == 0
    printed = capsys.readouterr().out
    assert "prefill trunk L4" in printed and "kNN MiniLM" in printed
    ids = [r.id for r in load_dataset(tiny_data).rows]
    lines = [json.loads(x) for x in (out / "oof_preds.jsonl").read_text().splitlines()]
    assert [x["id"] for x in lines] == ids
    assert all(set(x["p_correct"]) == {"math-model", "history-model", "generalist"} for x in lines)
    assert all(0.0 <= v <= 1.0 for x in lines for v in x["p_correct"].values())
    report = json.loads((out / "metrics.json").read_text())
    sc = report["scorers"]
    assert set(sc) >= {"prefill trunk L4 mean+last", "kNN MiniLM", "MF MiniLM", "per-benchmark (task tag known)",
                       "random", "cheapest", "best single", "oracle"}
    # the tiny data's benchmark tag is the topic that decides the right model: the tag table learns it too
    assert sc["per-benchmark (task tag known)"]["auc"]["math-model"] > 0.8
    pre = sc["prefill trunk L4 mean+last"]
    # the planted signal (math prompts -> math-model, history -> history-model) is learned out of fold
    assert pre["auc"]["math-model"] > 0.8 and pre["auc"]["history-model"] > 0.8
    assert pre["operating_points"]["max-quality"]["gap_captured"] > 0.3
    assert sc["oracle"]["operating_points"]["fixed"]["gap_captured"] == pytest.approx(1.0)
    # best single is picked on the other folds, so it can only match or trail the in-hindsight best target
    assert sc["best single"]["operating_points"]["fixed"]["gap_captured"] <= 1e-9
    assert all(s["operating_points"][op]["accuracy"] <= report["oracle_accuracy"] + 1e-9
               for s in sc.values() for op in s["operating_points"])
    lo, hi = pre["operating_points"]["max-quality"]["ci95"]["accuracy"]
    assert lo <= pre["operating_points"]["max-quality"]["accuracy"] <= hi
    assert {"apgr", "cpt50", "cpt80"} <= set(pre["pair"])
    assert "kNN MiniLM" in report["paired_vs_reference"]
    assert (out / "curve.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "## Agreement zones" in (out / "report.md").read_text()


def test_evaluate_bundle_scores_the_served_bundle_on_the_test_split_with_its_presets(
        bundle_dir: Path, tiny_data: Path, tmp_path: Path) -> None:
    out = tmp_path / "split"
    assert main(["evaluate", "--bundle", str(bundle_dir), "--data", str(tiny_data), "--baselines", "none",
                 "--bootstrap", "50", "--out", str(out), "--quiet"]) == 0
    report = json.loads((out / "metrics.json").read_text())
    n_test = sum(r.split == "test" for r in load_dataset(tiny_data).rows)
    assert report["n"] == n_test and report["mode"]["kind"] == "split"
    (name,) = [k for k in report["scorers"] if k.startswith("prefill bundle")]
    ops = report["scorers"][name]["operating_points"]
    assert {"preset balanced", "preset max-quality", "paper-savings"} <= set(ops)
    assert len((out / "preds.jsonl").read_text().splitlines()) == n_test


def test_evaluate_says_when_evaluated_rows_have_unlabelled_cells(bundle_dir: Path, tiny_data: Path, tmp_path: Path,
                                                                 capsys: pytest.CaptureFixture[str]) -> None:
    import shutil

    data = tmp_path / "gappy"
    shutil.copytree(tiny_data, data)
    rows = [json.loads(x) for x in (data / "routing.jsonl").read_text().splitlines()]
    gaps = 0
    for r in rows:
        if r.get("split") == "test" and gaps < 5:  # five test prompts without a generalist label
            r["scores"].pop("generalist")
            gaps += 1
    (data / "routing.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert main(["evaluate", "--bundle", str(bundle_dir), "--data", str(data), "--baselines", "none",
                 "--bootstrap", "20", "--out", str(tmp_path / "out"), "--quiet"]) == 0
    assert "note: 5 prompt x target cells of the evaluated rows have no label" in capsys.readouterr().out
    assert main(["evaluate", "--bundle", str(bundle_dir), "--data", str(tiny_data), "--baselines", "none",
                 "--bootstrap", "20", "--out", str(tmp_path / "out2"), "--quiet"]) == 0
    assert "have no label" not in capsys.readouterr().out


@pytest.mark.parametrize("argv, message", [
    (["evaluate", "--out", "x"], "exactly one of --bundle"),
    (["evaluate", "--out", "x", "--cv", "3", "--bundle", "b"], "exactly one of --bundle"),
    (["evaluate", "--out", "x", "--bundle", "b", "--layers", "3"], "apply to --cv"),
])
def test_evaluate_rejects_a_missing_or_ambiguous_mode(argv: list[str], message: str,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    assert main(argv) == 2
    assert message in capsys.readouterr().err


def test_evaluate_names_unknown_pair_targets_and_baselines(bundle_dir: Path, tiny_data: Path, tmp_path: Path,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["evaluate", "--bundle", str(bundle_dir), "--data", str(tiny_data), "--baselines", "none",
                 "--pair", "gpt-9,generalist", "--out", str(tmp_path / "o"), "--quiet"]) == 2
    assert "gpt-9" in capsys.readouterr().err
    assert main(["evaluate", "--bundle", str(bundle_dir), "--data", str(tiny_data), "--baselines", "svm",
                 "--out", str(tmp_path / "o"), "--quiet"]) == 2
    assert "unknown baselines ['svm']" in capsys.readouterr().err


def test_evaluate_cv_refuses_more_folds_than_rows_before_computing_anything(
        tiny_data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rows = sum(1 for line in (tiny_data / "routing.jsonl").read_text().splitlines() if line.strip())
    assert main(["evaluate", "--data", str(tiny_data), "--cv", str(rows + 1), "--out", str(tmp_path / "o")]) == 2
    # before: the prompts' features, then as many folds as rows (one model fit each), the bar counting --cv of them
    err = capsys.readouterr().err
    assert f"--cv {rows + 1}: the data has {rows} rows, fewer than the folds asked for" in err
    assert "prefill features" not in err and not (tmp_path / "o").exists()


def test_stratified_folds_are_deterministic_and_balanced_per_benchmark(tiny_data: Path) -> None:
    from litellm_prefill_router.training.harness import stratified_folds

    ds = load_dataset(tiny_data)
    f1, f2 = stratified_folds(ds, 4), stratified_folds(ds, 4)
    assert (f1 == f2).all()
    for b in ("math", "hist"):
        counts = np.bincount(f1[[r.benchmark == b for r in ds.rows]], minlength=4)
        assert counts.max() - counts.min() <= 1
