"""Execution providers for the encoder (``execution_providers``): the CPU by default; a GPU provider with
onnxruntime-gpu. This machine's onnxruntime is the CPU build, so a CUDA request shows what a user without
onnxruntime-gpu gets: an error naming the fix, or - with the CPU listed as the fallback - a warning and CPU serving."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

from conftest import HIST_PROMPT, MATH_PROMPT, model_list
from litellm_prefill_router import ConfigurationError, PrefillRouter
from litellm_prefill_router.predictor import PrefillPredictor

CUDA = "CUDAExecutionProvider"
CPU = "CPUExecutionProvider"
no_cuda = pytest.mark.skipif(CUDA in ort.get_available_providers(), reason="this onnxruntime has CUDA")


def _p(pred: PrefillPredictor) -> np.ndarray:
    return np.stack([pred.predict_one([{"role": "user", "content": t}]).p_correct for t in (MATH_PROMPT, HIST_PROMPT)])


def test_the_encoder_runs_on_the_cpu_unless_told_otherwise_and_takes_provider_options(bundle_dir: Path) -> None:
    plain = PrefillPredictor(bundle_dir)
    assert plain.providers == [CPU]
    with_options = PrefillPredictor(bundle_dir, execution_providers=[(CPU, {})])
    np.testing.assert_array_equal(_p(with_options), _p(plain))


def test_a_provider_name_onnxruntime_does_not_know_is_refused_with_the_known_names(bundle_dir: Path) -> None:
    with pytest.raises(ConfigurationError, match=r"onnxruntime knows no \['CUDAExecutonProvider'\]; its providers: "
                                                 r".*'CUDAExecutionProvider'"):
        PrefillPredictor(bundle_dir, execution_providers=["CUDAExecutonProvider", CPU])


@no_cuda
def test_cuda_without_onnxruntime_gpu_is_an_error_naming_the_package_unless_the_cpu_is_the_fallback(
        bundle_dir: Path, caplog: pytest.LogCaptureFixture) -> None:
    with pytest.raises(ConfigurationError, match=r"\['CUDAExecutionProvider'\] not available in this onnxruntime .*"
                                                 r"install onnxruntime-gpu in place of onnxruntime.*list "
                                                 r"'CPUExecutionProvider' last"):
        PrefillPredictor(bundle_dir, execution_providers=[CUDA])
    with caplog.at_level(logging.WARNING, logger="litellm_prefill_router"):
        fallback = PrefillPredictor(bundle_dir, execution_providers=[(CUDA, {"device_id": 0}), CPU])
    assert fallback.providers == [CPU]
    assert "execution providers ['CUDAExecutionProvider'] are not available" in caplog.text
    np.testing.assert_array_equal(_p(fallback), _p(PrefillPredictor(bundle_dir)))


@no_cuda
async def test_litellm_routing_strategy_args_take_execution_providers(bundle_dir: Path) -> None:
    def router(providers: object) -> PrefillRouter:
        return PrefillRouter(model_list=model_list(), routing_strategy="prefill",
                             routing_strategy_args={"bundle": str(bundle_dir), "preset": "max-quality",
                                                    "execution_providers": providers})

    # as a proxy's YAML writes them: a name, or [name, {options}]
    r = router([[CUDA, {"device_id": 0}], CPU])
    assert r.prefill_strategy.predictor.providers == [CPU]
    resp = await r.acompletion(model="auto", messages=[{"role": "user", "content": HIST_PROMPT}])
    assert resp.choices[0].message.content == "answer from history-model"
    with pytest.raises(ConfigurationError, match="install onnxruntime-gpu"):
        router([CUDA])
    with pytest.raises(ConfigurationError, match="execution_providers"):
        router([])
