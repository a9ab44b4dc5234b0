"""The Router integration on a litellm it cannot serve: a typed error naming the supported range and the fix, while
the parts that need no litellm Router (the LangChain runnable, the semantic drop-in, the predictor) keep working.
CI runs this file on the newest litellm too (scripts/test.sh: litellm 1.110, whose Router refuses subclasses)."""

from __future__ import annotations

import importlib.metadata
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from litellm_prefill_router import UnsupportedLiteLLMError
from litellm_prefill_router.errors import ConfigurationError
from litellm_prefill_router.litellm_support import SUPPORTED_LITELLM

ROOT = Path(__file__).resolve().parents[1]


def _litellm_release() -> tuple[int, int]:
    major, minor = importlib.metadata.version("litellm").split(".")[:2]
    return int(major), int(minor)


SEALED_ROUTER = _litellm_release() >= (1, 110)


def test_pyproject_pins_litellm_to_the_range_the_error_message_names():
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    pins = [*project["dependencies"], *project["optional-dependencies"]["proxy"]]
    assert f"litellm{SUPPORTED_LITELLM}" in pins
    assert f"litellm[proxy]{SUPPORTED_LITELLM}" in pins


def test_unsupported_litellm_error_is_a_configuration_error_and_an_import_error():
    err = UnsupportedLiteLLMError("x")
    assert isinstance(err, ConfigurationError) and isinstance(err, ImportError)


@pytest.mark.skipif(SEALED_ROUTER, reason="the installed litellm refuses subclasses itself (the next test)")
def test_a_litellm_router_that_refuses_subclasses_is_reported_with_the_supported_range_and_the_fix():
    # litellm 1.110's Router, as seen by the integration: a class whose __init_subclass__ raises TypeError
    script = textwrap.dedent("""
        import litellm
        from litellm_prefill_router import UnsupportedLiteLLMError

        class Sealed(litellm.Router):
            def __init_subclass__(cls, **kwargs):
                raise TypeError("litellm.Router cannot be subclassed")

        litellm.Router = Sealed
        try:
            from litellm_prefill_router import PrefillRouter
        except UnsupportedLiteLLMError as err:
            assert isinstance(err.__cause__, TypeError), err.__cause__
            print(err)
        else:
            raise SystemExit("imported PrefillRouter over a Router that refuses subclasses")
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "LITELLM_LOCAL_MODEL_COST_MAP": "True", "HF_HUB_OFFLINE": "1"},
                          cwd=ROOT)
    assert done.returncode == 0, done.stderr[-3000:]
    message = done.stdout
    assert "litellm.Router cannot be subclassed" in message  # litellm's own words
    assert f'pip install "litellm{SUPPORTED_LITELLM}"' in message
    assert "PrefillRouterRunnable" in message  # what keeps working


@pytest.mark.skipif(not SEALED_ROUTER, reason="needs litellm 1.110+ (CI installs it in a runtime venv)")
def test_importing_the_router_integration_on_litellm_1_110_raises_the_typed_error():
    for name in ("litellm_prefill_router.router", "litellm_prefill_router.proxy_hook"):
        sys.modules.pop(name, None)
        with pytest.raises(UnsupportedLiteLLMError, match=rf"litellm {importlib.metadata.version('litellm')} is "
                                                          r"installed.*cannot be subclassed.*pip install"):
            __import__(name)
    with pytest.raises(ImportError):  # an optional import of the integration catches it as what it is
        from litellm_prefill_router import PrefillRouter  # noqa: F401
