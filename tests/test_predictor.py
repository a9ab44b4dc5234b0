from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pytest

from conftest import HIST_PROMPT, MATH_PROMPT
from litellm_prefill_router.predictor import PrefillPredictor, shared_predictor


@pytest.fixture(scope="module")
def predictor(bundle_dir: Path) -> PrefillPredictor:
    return PrefillPredictor(bundle_dir, intra_op_threads=1, max_batch_size=8)


def test_predictions_change_with_the_prompt(predictor: PrefillPredictor) -> None:
    p = predictor.predict([MATH_PROMPT, HIST_PROMPT])
    t = predictor.targets
    assert p.shape == (2, 3)
    assert p[0, t.index("math-model")] > p[0, t.index("history-model")]
    assert p[1, t.index("history-model")] > p[1, t.index("math-model")]


def test_batched_and_single_predictions_agree(predictor: PrefillPredictor) -> None:
    prompts = [MATH_PROMPT, HIST_PROMPT, "why", "the sum " * 40]
    batch = predictor.predict(prompts)
    singles = np.stack([predictor.predict_one(x).p_correct for x in prompts])
    np.testing.assert_allclose(batch, singles, atol=1e-5)


def test_onnx_runtime_reproduces_the_torch_test_metrics(trained, predictor: PrefillPredictor, tiny_data: Path) -> None:
    """The bundle's ONNX graphs, fed by the runtime tokenizer, give the AUCs training measured with torch."""
    from litellm_prefill_router.training.calibrate import auc_per_target
    from litellm_prefill_router.training.data import load_dataset

    bundle, report = trained
    ds = load_dataset(tiny_data)
    idx = ds.indices("test")
    p = predictor.predict([ds.rows[i].prompt for i in idx])
    auc = auc_per_target(p, ds.scores()[idx], ds.targets)
    for t in ds.targets:
        assert abs(auc[t] - report["test"]["auc"][t]) < 1e-3, (t, auc[t], report["test"]["auc"][t])
    assert bundle.manifest.parity.probability_max_abs_diff < 1e-3


def test_predictor_is_thread_safe_under_concurrent_callers(predictor: PrefillPredictor) -> None:
    expected = predictor.predict([MATH_PROMPT, HIST_PROMPT])
    results: list[np.ndarray] = []
    errors: list[BaseException] = []

    def work(i: int) -> None:
        try:
            results.append((i % 2, predictor.predict_one(MATH_PROMPT if i % 2 == 0 else HIST_PROMPT).p_correct))
        except BaseException as e:  # noqa: BLE001
            errors.append(e)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(64)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert not errors
    assert len(results) == 64
    for which, p in results:
        np.testing.assert_allclose(p, expected[which], atol=1e-5)


def test_shared_predictor_reuses_one_session_per_bundle(bundle_dir: Path) -> None:
    assert shared_predictor(bundle_dir) is shared_predictor(bundle_dir)
