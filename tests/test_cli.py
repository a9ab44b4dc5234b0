from __future__ import annotations

import json
from pathlib import Path

import pytest

from conftest import HIST_PROMPT
from litellm_prefill_router.cli import main


def test_info_prints_targets_presets_and_parity(bundle_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["info", "--bundle", str(bundle_dir)]) == 0
    out = capsys.readouterr().out
    assert "history-model" in out and "balanced (default)" in out and "parity" in out


def test_route_prints_the_table_and_the_decision(bundle_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["route", "--bundle", str(bundle_dir), "--preset", "max-quality", HIST_PROMPT]) == 0
    out = capsys.readouterr().out
    assert "<- chosen" in out and out.strip().endswith("history-model")
    assert main(["route", "--bundle", str(bundle_dir), "--json", "--tolerance", "0", HIST_PROMPT]) == 0
    assert json.loads(capsys.readouterr().out)["target"] == "history-model"


def test_a_broken_bundle_exits_2_with_the_reason(bundle_copy: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (bundle_copy / "encoder.onnx").unlink()
    assert main(["info", "--bundle", str(bundle_copy)]) == 2
    assert "encoder.onnx" in capsys.readouterr().err


def test_train_command_reuses_cached_features_and_probes_and_prints_a_summary(trained, tiny_encoder: Path, tiny_data: Path,
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
