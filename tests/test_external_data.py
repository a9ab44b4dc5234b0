"""Encoders whose weights sit beside the graph (``encoder.onnx.data``): an ONNX file is one protobuf and cannot pass
2 GB, so a large encoder (about 400M+ parameters in fp32, cut at its layer) is exported with its weights in a file of
their own. The bundle carries and verifies that file, the runtime serves it from a directory and from the Hugging Face
cache (whose files are links to blobs with other names), and `train --continue-from` keeps it.

The tiny test encoder is far below the 1.5 GB threshold: ``external_data=True`` forces the same layout. Measured once
on a 487M-parameter encoder (1.9 GB fp32; see "Large encoders" in docs/training.md)."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest

import tiny
from conftest import HIST_PROMPT, MATH_PROMPT, needs_training_extra
from litellm_prefill_router.bundle import MANIFEST_NAME, load_bundle
from litellm_prefill_router.errors import BundleMissingFileError, BundleSchemaError
from litellm_prefill_router.predictor import PrefillPredictor

PROMPTS = [MATH_PROMPT, HIST_PROMPT, "what is the sum of the angle", "the treaty of the senate"]


def _predict(bundle: Path | str) -> np.ndarray:
    pred = PrefillPredictor(bundle)
    try:
        return np.stack([pred.predict_one([{"role": "user", "content": p}]).p_correct for p in PROMPTS])
    finally:
        pred.close()


@pytest.fixture(scope="module")
def external_bundle(bundle_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The test bundle with its encoder's weights beside the graph; PREFILL_TEST_EXTERNAL_BUNDLE names one built
    earlier (by tests/tiny.py, scripts/test_runtime_on.sh), so the runtime-only interpreters serve one too."""
    prebuilt = os.environ.get("PREFILL_TEST_EXTERNAL_BUNDLE")
    if prebuilt:
        return Path(shutil.copytree(prebuilt, tmp_path_factory.mktemp("external") / "bundle"))
    needs_training_extra()  # onnx (to re-save the graph) comes with the train extra
    return tiny.externalise(bundle_dir, tmp_path_factory.mktemp("external") / "bundle")


def test_a_bundle_with_the_encoder_weights_beside_the_graph_predicts_exactly_as_the_inline_one(
        bundle_dir: Path, external_bundle: Path) -> None:
    b, inline = load_bundle(external_bundle), load_bundle(bundle_dir)
    assert {"encoder.onnx", "encoder.onnx.data"} <= set(b.manifest.files)
    # the weights left the graph (the tiny encoder's graph is bigger than its weights)
    assert b.manifest.files["encoder.onnx"].size + 40_000 < inline.manifest.files["encoder.onnx"].size
    np.testing.assert_array_equal(_predict(external_bundle), _predict(bundle_dir))


def test_a_missing_or_altered_weights_file_is_named_when_the_bundle_loads(external_bundle: Path,
                                                                          tmp_path: Path) -> None:
    broken = Path(shutil.copytree(external_bundle, tmp_path / "missing"))
    (broken / "encoder.onnx.data").unlink()
    with pytest.raises(BundleMissingFileError, match=r"'encoder.onnx.data' .* is missing"):
        load_bundle(broken)
    altered = Path(shutil.copytree(external_bundle, tmp_path / "altered"))
    with (altered / "encoder.onnx.data").open("r+b") as f:
        f.seek(100)
        f.write(b"\x7f\x7f\x7f\x7f")
    with pytest.raises(Exception, match=r"sha256 of bundle file .*encoder.onnx.data"):
        load_bundle(altered)


def test_a_bundle_whose_manifest_leaves_out_the_weights_file_fails_naming_it_and_the_fix(
        external_bundle: Path, tmp_path: Path) -> None:
    """What earlier versions wrote for an encoder over 1.5 GB: the graph listed, its weights file not copied."""
    old = Path(shutil.copytree(external_bundle, tmp_path / "old"))
    manifest = json.loads((old / MANIFEST_NAME).read_text())
    del manifest["files"]["encoder.onnx.data"]
    (old / MANIFEST_NAME).write_text(json.dumps(manifest))
    (old / "encoder.onnx.data").unlink()
    load_bundle(old)  # every listed file is there and intact
    with pytest.raises(BundleSchemaError, match=r"weights live in a file beside it that the bundle lacks.*retrain"):
        PrefillPredictor(old)


def test_saving_a_graph_again_inline_removes_its_old_weights_file(external_bundle: Path, tmp_path: Path) -> None:
    needs_training_extra()
    import onnx

    from litellm_prefill_router.training.export import external_data_files, save_graph

    graph = tmp_path / "encoder.onnx"
    shutil.copy(external_bundle / "encoder.onnx", graph)
    shutil.copy(external_bundle / "encoder.onnx.data", tmp_path / "encoder.onnx.data")
    assert external_data_files(graph) == ["encoder.onnx.data"]
    model = onnx.load(str(graph))
    assert save_graph(model, graph) == []  # below the threshold: inline
    assert not (tmp_path / "encoder.onnx.data").exists()
    assert save_graph(model, graph, external_data=True) == ["encoder.onnx.data"]
    size = (tmp_path / "encoder.onnx.data").stat().st_size
    assert save_graph(model, graph, external_data=True) == ["encoder.onnx.data"]  # the model stayed whole
    assert (tmp_path / "encoder.onnx.data").stat().st_size == size  # rewritten, not appended to
    import onnxruntime as ort

    ort.InferenceSession(str(graph), providers=["CPUExecutionProvider"])


def test_training_with_external_data_ships_the_weights_file_of_the_encoder_it_keeps(
        bundle_dir: Path, tiny_encoder: Path, tiny_data: Path, tmp_path: Path) -> None:
    from litellm_prefill_router.training.continued import continue_training
    from litellm_prefill_router.training.data import load_dataset
    from litellm_prefill_router.training.pipeline import TrainOptions, train
    from litellm_prefill_router.training.trunk import TrunkConfig

    opts = TrainOptions(encoder=str(tiny_encoder), max_tokens=64, seeds=3, keep=2, progress=False, quantize=True,
                        external_data=True, probe_max_rows=500, trunk=TrunkConfig(max_epochs=80))
    bundle, report = train(tiny_data, tmp_path / "bundle", opts)
    assert report["encoder_files"] == {"graph": "encoder.onnx", "external_data": ["encoder.onnx.data"]}
    assert "quantization" in report  # the int8 graph was built with its weights beside it too, and checked
    assert set(bundle.manifest.files) >= {"encoder.onnx", "encoder.onnx.data"}
    assert sorted(p.name for p in bundle.directory.iterdir() if "encoder" in p.name) == \
        ["encoder.onnx", "encoder.onnx.data"]  # no leftover of the graph not kept
    assert bundle.manifest.encoder.quantized  # int8 accepted: the graph shipped is the int8 one, with its weights
    # the same recipe as the test bundle (fp32, inline): int8 moves probabilities a little, nothing more
    assert np.abs(_predict(bundle.directory) - _predict(bundle_dir)).max() < 0.03

    continued, _ = continue_training(bundle.directory, load_dataset(tiny_data), tmp_path / "continued", seeds=2, keep=1,
                                     progress=False)
    assert continued.manifest.files["encoder.onnx.data"] == bundle.manifest.files["encoder.onnx.data"]
    assert _predict(continued.directory).shape == (len(PROMPTS), 3)


def test_a_hub_bundle_with_a_weights_file_is_served_from_the_hugging_face_caches_links(external_bundle: Path,
                                                                                       tmp_path: Path) -> None:
    """In the cache, snapshots/<commit>/encoder.onnx links to blobs/<sha256>: onnxruntime must be handed the link, so
    that it finds encoder.onnx.data beside it (beside the blob there is only another blob)."""
    from fake_hub import FakeHub
    from test_hub import run_py, script, served_by

    with FakeHub() as hub:
        out = run_py(script(f"""
        from pathlib import Path
        from litellm_prefill_router.publish import push_bundle
        push_bundle({str(external_bundle)!r}, "acme/big", tag="v1", licence="apache-2.0")
        """, served_by("hf://acme/big@v1"), f"""
        from litellm_prefill_router.cli import main
        b = r.prefill_strategy.predictor.bundle
        assert main(["pull", "--bundle", "hf://acme/big@v1", "--out", {str(tmp_path / "pulled")!r}]) == 0
        print(json.dumps({{"answer": answer(), "linked": (b.directory / "encoder.onnx.data").is_symlink(),
                          "files": sorted(b.manifest.files)}}))
        """), hub, tmp_path / "hf")
    assert out["answer"] == "answer from history-model"
    assert out["linked"] is True
    assert "encoder.onnx.data" in out["files"]
    np.testing.assert_array_equal(_predict(tmp_path / "pulled"), _predict(external_bundle))


def test_info_shows_the_encoders_files_and_size(external_bundle: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from litellm_prefill_router.cli import main

    assert main(["info", "--bundle", str(external_bundle)]) == 0
    b = load_bundle(external_bundle)
    size = (b.manifest.files["encoder.onnx"].size + b.manifest.files["encoder.onnx.data"].size) / 1e6
    assert f"size       {size:,.1f} MB encoder (encoder.onnx, encoder.onnx.data)" in capsys.readouterr().out
