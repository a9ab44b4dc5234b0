"""Training pipeline pieces on small synthetic data with planted signals."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

import tiny
from litellm_prefill_router.training.data import DataError, load_dataset
from litellm_prefill_router.training.features import FeatureCache
from litellm_prefill_router.training.probes import run_probes, select_layer


def test_probes_rank_the_informative_layer_highest_and_select_it() -> None:
    rng = np.random.default_rng(0)
    n, layers, hidden = 400, 6, 16
    y = rng.integers(0, 2, size=(n, 2)).astype(np.float32)
    feats = rng.normal(size=(n, layers + 1, 2, hidden)).astype(np.float32)
    feats[:, 4, :, :2] += 1.5 * y[:, None, :]  # layer 4 carries both targets' labels
    cache = FeatureCache(Path("."), feats, np.full(n, 10))
    res = run_probes(cache, y, ["a", "b"], np.arange(n), k=8, progress=False)
    best_auc = max(res.summary, key=lambda r: r["auc"])
    best_j = max(res.summary, key=lambda r: r["fisher_j"])
    assert best_auc["layer"] == 4 and best_j["layer"] == 4 and best_auc["auc"] > 0.8
    sel = select_layer(res, max_auc_loss=0.005)
    assert sel["layer"] == 4 and sel["j_matches_auc_within_one_layer"].split("/")[0] != "0"
    assert all(r["d_eff"] > 1 for r in res.summary)


def test_selection_prefers_a_shallower_layer_within_the_allowed_auc_loss() -> None:
    from litellm_prefill_router.training.probes import ProbeResult

    res = ProbeResult(summary=[{"layer": 2, "pooling": "mean", "auc": 0.80, "fisher_j": 1.0, "d_eff": 3.0},
                               {"layer": 5, "pooling": "mean", "auc": 0.82, "fisher_j": 2.0, "d_eff": 3.0}])
    assert select_layer(res, max_auc_loss=0.005)["layer"] == 5
    assert select_layer(res, max_auc_loss=0.03)["layer"] == 2


def test_trunk_learns_the_planted_signal_and_the_report_has_every_stage(trained) -> None:
    bundle, report = trained
    auc = report["test"]["auc"]
    assert auc["math-model"] > 0.85 and auc["history-model"] > 0.85
    assert set(report["stage_seconds"]) == {"load data", "encoder + features", "probes", "trunk",
                                            "calibration + evaluation", "export + parity"}
    assert set(bundle.manifest.presets) == {"max-quality", "balanced", "match-best-single", "min-cost"}
    assert len(report["probes"]["forward_ms_by_depth"]) == 4
    assert (bundle.directory / "probes.png").stat().st_size > 1000
    assert bundle.manifest.encoder.layers and bundle.manifest.parity.prompts_checked == 8
    stored = json.loads((bundle.directory / "report.json").read_text())
    assert stored["test"]["auc"] == pytest.approx(auc)


def test_feature_cache_is_reused_and_an_interrupted_run_resumes(trained, tiny_encoder: Path, tiny_data: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    from litellm_prefill_router.training import features as F
    from litellm_prefill_router.training.encoders import cache_root, load_encoder

    ds = load_dataset(tiny_data)
    handle = load_encoder(str(tiny_encoder))
    calls = {"n": 0}
    real = F.forward_hidden_states

    def counting(model, ids, mask):  # type: ignore[no-untyped-def]
        calls["n"] += ids.shape[0]
        return real(model, ids, mask)

    monkeypatch.setattr(F, "forward_hidden_states", counting)
    kw = dict(dataset_hash=ds.content_hash(), cache_dir=cache_root() / "features", max_tokens=64, progress=False)
    full = F.extract_features(handle, ds.prompts(), **kw)
    assert calls["n"] == 0  # the training run's cache is reused: no forward pass at all
    expected = np.array(full.features[:5])
    done_path = full.directory / "done.npy"
    done = np.load(done_path)
    done[:5] = False  # as if the run had stopped before these rows
    np.save(done_path, done)
    again = F.extract_features(handle, ds.prompts(), **kw)
    assert calls["n"] == 5
    np.testing.assert_allclose(np.array(again.features[:5]), expected, atol=1e-5)


def _jsonl(tmp_path: Path, rows: list[dict]) -> Path:
    p = tmp_path / "d.jsonl"
    p.write_text("\n".join(json.dumps(r) for r in rows))
    return p


def _row(i: int, **kw) -> dict:
    return {"id": f"r{i}", "prompt": f"p {i}", "benchmark": "b", "scores": {"m": float(i % 2)}, **kw}


@pytest.mark.parametrize(("mutate", "message"), [
    (lambda r: r[0].pop("scores"), "missing field"),
    (lambda r: r[0]["scores"].update(m=float("nan")), "NaN"),
    (lambda r: r[0]["scores"].update(m=1.5), "outside"),
    (lambda r: r[1].update(id="r0"), "duplicate id"),
    (lambda r: r[0].update(split="holdout"), "unknown split"),
])
def test_malformed_datasets_fail_with_the_row_and_the_fix(tmp_path: Path, mutate, message: str) -> None:
    rows = [_row(i) for i in range(40)]
    mutate(rows)
    with pytest.raises(DataError, match=message):
        load_dataset(_jsonl(tmp_path, rows), min_labels=5)


def test_targets_with_too_few_labels_are_named(tmp_path: Path) -> None:
    rows = [_row(i) for i in range(40)]
    rows[0]["scores"]["rare"] = 1.0
    with pytest.raises(DataError, match="rare"):
        load_dataset(_jsonl(tmp_path, rows))


def test_missing_labels_are_allowed_and_splits_are_stratified_and_deterministic(tmp_path: Path) -> None:
    rows = [{**_row(i), "benchmark": "b1" if i < 50 else "b2", "scores": {"m": 1.0, **({"n": 0.0} if i % 3 else {})}}
            for i in range(100)]
    ds = load_dataset(_jsonl(tmp_path, rows), min_labels=5)
    s = ds.scores()
    assert np.isnan(s[:, ds.targets.index("n")]).sum() == 34
    test_ids = [r.id for r in ds.rows if r.split == "test"]
    assert len(test_ids) == 10
    assert sum(r.benchmark == "b1" for r in ds.rows if r.split == "test") == 5
    assert test_ids == [r.id for r in load_dataset(_jsonl(tmp_path, rows), min_labels=5).rows if r.split == "test"]


def test_long_csv_wide_csv_and_parquet_loaders(tmp_path: Path) -> None:
    long = tmp_path / "long.csv"
    long.write_text("question,model,isCorrect,output_tokens\n" + "".join(
        f"q{i},a,{i % 2},{10 + i}\nq{i},b,{(i + 1) % 2},20\n" for i in range(30)))
    ds = load_dataset(long, min_labels=5)
    assert ds.targets == ["a", "b"] and len(ds) == 30 and ds.mean_output_tokens("b") == 20.0
    wide = tmp_path / "wide.csv"
    wide.write_text("prompt,a,b,a|total_cost,b|total_cost\n" + "".join(f"q{i},1,0,0.001,0.002\n" for i in range(30)))
    ds = load_dataset(wide, min_labels=5)
    assert ds.targets == ["a", "b"] and ds.prices["b"][0] > ds.prices["a"][0]
    pd = pytest.importorskip("pandas")
    pq = tmp_path / "wide.parquet"
    pd.DataFrame({"prompt": [f"q{i}" for i in range(30)], "a": [1.0] * 30, "b": [0.0, 1.0] * 15}).to_parquet(pq)
    ds = load_dataset(pq, min_labels=5)
    assert ds.targets == ["a", "b"] and len(ds) == 30 and len(ds.indices("test")) == 3
    bad = tmp_path / "bad.csv"
    bad.write_text("text,a\nx,1\n")
    with pytest.raises(DataError, match="prompt"):
        load_dataset(bad)

    for prices, said in (("", "cannot read the prices"), ("[1, 2]", "prices are a JSON object"),
                         (None, "No such file")):  # a traceback before
        path = tmp_path / "prices.json"
        path.unlink(missing_ok=True)
        if prices is not None:
            path.write_text(prices)
        with pytest.raises(DataError, match=said):
            load_dataset(pq, min_labels=5, models_json=path)


def test_the_shared_llmrouter_dataset_loads_when_present() -> None:
    d = Path(__file__).resolve().parents[2] / "shared" / "datasets" / "llmrouter"
    if not d.exists():
        pytest.skip("../shared/datasets/llmrouter is not beside this checkout")
    ds = load_dataset(d)
    assert len(ds) == 5610 and len(ds.targets) == 9 and len(ds.indices("test")) == 450
    assert set(ds.prices) == set(ds.targets)


def test_embedding_quantisation_dequantises_per_row_and_leaves_shared_tables_alone(tmp_path: Path) -> None:
    import onnx
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper

    from litellm_prefill_router.training.export import quantize_embeddings

    rng = np.random.default_rng(0)
    own = (rng.normal(size=(2048, 8)) * np.geomspace(1e-3, 10, 2048)[:, None]).astype(np.float32)  # row scales differ
    tied = rng.normal(size=(2048, 8)).astype(np.float32)
    graph = helper.make_graph(
        [helper.make_node("Gather", ["own", "ids"], ["e_own"], name="g_own"),
         helper.make_node("Gather", ["tied", "ids"], ["e_tied"], name="g_tied"),
         helper.make_node("Transpose", ["tied"], ["tied_t"], name="t"),
         helper.make_node("MatMul", ["e_tied", "tied_t"], ["logits"], name="lm_head")],
        "g", [helper.make_tensor_value_info("ids", TensorProto.INT64, ["b", "s"])],
        [helper.make_tensor_value_info("e_own", TensorProto.FLOAT, ["b", "s", 8]),
         helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["b", "s", 2048])],
        [numpy_helper.from_array(own, "own"), numpy_helper.from_array(tied, "tied")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    onnx.save(model, str(tmp_path / "m.onnx"))

    assert quantize_embeddings(tmp_path / "m.onnx", tmp_path / "q.onnx") == ["own"]  # "tied" is used twice
    ids = rng.integers(0, 2048, size=(3, 5)).astype(np.int64)
    ref = ort.InferenceSession(str(tmp_path / "m.onnx")).run(None, {"ids": ids})
    got = ort.InferenceSession(str(tmp_path / "q.onnx")).run(None, {"ids": ids})
    np.testing.assert_array_equal(got[1], ref[1])
    err = np.abs(got[0] - ref[0]).max(-1)
    assert np.all(err <= np.abs(own[ids]).max(-1) / 254 + 1e-7)  # within half an int8 step of each row's own scale
    assert err.max() > 0


@pytest.mark.parametrize(("arch", "config"), [
    # its final norm is called final_norm: a cut model kept it, and served features that training never saw
    ("ModernBertModel", {"bos_token_id": 1, "eos_token_id": 2, "cls_token_id": 1, "sep_token_id": 2}),
    # mixture of experts: transformers' default experts kernel has no ONNX translation
    ("Qwen3MoeForCausalLM", {"num_key_value_heads": 2, "moe_intermediate_size": 32, "num_experts": 4,
                             "num_experts_per_tok": 2, "bos_token_id": 1, "eos_token_id": 2}),
])
def test_encoders_with_another_final_norm_name_or_experts_export_with_the_models_own_features(
        arch: str, config: dict, tiny_encoder: Path, tmp_path: Path) -> None:
    from litellm_prefill_router.training.encoders import load_encoder
    from litellm_prefill_router.training.export import check_encoder_exports
    from litellm_prefill_router.training.features import prompt_encoder

    handle = load_encoder(str(tiny.build_tiny_model(arch, tmp_path / arch, tiny_encoder, **config)))
    ids = [e.ids for e in prompt_encoder(handle, 64).encode_batch(["what is the integral", "the king went to war"])]
    diffs = check_encoder_exports(handle.model, handle.num_hidden_layers, ids, handle.pad_token_id, handle.id)
    assert max(diffs.values()) < 1e-5


def test_an_encoder_whose_cut_computes_other_features_is_refused_before_training(tiny_encoder: Path) -> None:
    from litellm_prefill_router.training.encoders import load_encoder
    from litellm_prefill_router.training.export import ExportCheckError, check_encoder_exports
    from litellm_prefill_router.training.features import prompt_encoder

    handle = load_encoder(str(tiny_encoder))
    ids = [e.ids for e in prompt_encoder(handle, 64).encode_batch(["what is the integral"])]
    # told it has one block, the cut keeps the final norm: its features are not the model's block-1 state
    with pytest.raises(ExportCheckError, match=r"features differ from the model's .*cut_vs_full_model"):
        check_encoder_exports(handle.model, 1, ids, handle.pad_token_id, handle.id)


def test_an_encoder_that_does_not_export_fails_in_seconds_before_any_feature_is_computed(
        tiny_encoder: Path, tiny_data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import torch

    from litellm_prefill_router.training import pipeline
    from litellm_prefill_router.training.export import ExportCheckError
    from litellm_prefill_router.training.pipeline import TrainOptions, train

    def no_onnx(*args: object, **kwargs: object) -> None:
        try:
            raise KeyError("aten::fancy_op")
        except KeyError as inner:  # torch.onnx wraps the op's error
            raise RuntimeError("\x1b[96mFailed to convert the exported program\x1b[0m") from inner

    monkeypatch.setattr(torch.onnx, "export", no_onnx)
    monkeypatch.setenv("PREFILL_ROUTER_CACHE", str(tmp_path / "cache"))  # no marker of an earlier pass
    extracted: list[int] = []
    monkeypatch.setattr(pipeline, "extract_features", lambda *a, **k: extracted.append(1))
    opts = TrainOptions(encoder=str(tiny_encoder), max_tokens=64, progress=False)
    with pytest.raises(ExportCheckError, match=r"cannot be served: .*\(KeyError: 'aten::fancy_op'\)\. Nothing was "
                                               r"trained"):
        train(tiny_data, tmp_path / "bundle", opts)
    assert not extracted and not (tmp_path / "bundle").exists()


def test_feature_extraction_runs_where_asked_and_a_device_torch_cannot_use_fails_before_the_encoder_loads(
        tiny_data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import torch

    from litellm_prefill_router.errors import PrefillRouterError
    from litellm_prefill_router.training import pipeline
    from litellm_prefill_router.training.features import resolve_device
    from litellm_prefill_router.training.pipeline import TrainOptions, train

    assert resolve_device("cpu") == "cpu"
    assert resolve_device("auto") == ("cuda" if torch.cuda.is_available() else "cpu")
    with pytest.raises(PrefillRouterError, match="use auto, cpu, cuda or cuda:N"):
        resolve_device("gpu")
    if torch.cuda.is_available():
        pytest.skip("this torch has CUDA")
    loaded: list[str] = []
    monkeypatch.setattr(pipeline, "load_encoder", lambda name: loaded.append(name))
    with pytest.raises(PrefillRouterError, match=r"--device cuda:1: torch .* sees no CUDA GPU .*--device cpu"):
        train(tiny_data, tmp_path / "bundle", TrainOptions(encoder="smollm2", device="cuda:1", progress=False))
    assert loaded == []


def test_the_export_check_is_remembered_once_passed_and_a_cache_it_cannot_write_only_costs_the_check_again(
        tiny_encoder: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from litellm_prefill_router.training import export
    from litellm_prefill_router.training.encoders import load_encoder
    from litellm_prefill_router.training.pipeline import check_export_once

    handle = load_encoder(str(tiny_encoder))
    checks: list[str] = []
    real = export.check_encoder_exports
    monkeypatch.setattr(export, "check_encoder_exports", lambda *a, **k: checks.append("check") or real(*a, **k))
    monkeypatch.setenv("PREFILL_ROUTER_CACHE", str(tmp_path / "cache"))
    check_export_once(handle, 64)
    check_export_once(handle, 64)
    assert checks == ["check"]
    (tmp_path / "not-a-directory").write_text("")
    monkeypatch.setenv("PREFILL_ROUTER_CACHE", str(tmp_path / "not-a-directory"))
    check_export_once(handle, 64)  # passes; the marker cannot be written under a file
    check_export_once(handle, 64)
    assert checks == ["check"] * 3
