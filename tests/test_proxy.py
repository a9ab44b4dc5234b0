"""The LiteLLM proxy path: config.yaml with routing_strategy: prefill, served on 127.0.0.1."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from conftest import HIST_PROMPT, MATH_PROMPT, model_list


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


ROOT = Path(__file__).resolve().parents[1]


def _write_config(path: Path, bundle: Path) -> None:
    """The shipped example config (examples/litellm_proxy/config.yaml) with the test bundle's deployments."""
    import yaml

    cfg = yaml.safe_load((ROOT / "examples" / "litellm_proxy" / "config.yaml").read_text())
    cfg["model_list"] = model_list()
    cfg["router_settings"]["routing_strategy_args"] = {"bundle": "os.environ/PREFILL_BUNDLE", "preset": "max-quality"}
    path.write_text(yaml.safe_dump(cfg))


def _post(port: int, prompt: str) -> dict:
    body = json.dumps({"model": "auto", "messages": [{"role": "user", "content": prompt}]}).encode()
    req = urllib.request.Request(f"http://127.0.0.1:{port}/chat/completions", data=body,
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=30) as r:
        return json.loads(r.read())


def test_proxy_hook_module_installs_the_strategy_on_import() -> None:
    import litellm

    import litellm_prefill_router.proxy_hook as hook

    assert getattr(litellm.Router, "_prefill_installed", False)
    assert hook.proxy_handler_instance is not None


def test_the_example_proxy_config_routes_with_routing_strategy_prefill_on_loopback(bundle_dir: Path, tmp_path: Path) -> None:
    exe = shutil.which("litellm", path=str(Path(sys.executable).parent)) or shutil.which("litellm")
    try:
        import fastapi  # noqa: F401
        import uvicorn  # noqa: F401
    except ImportError:
        exe = None
    if exe is None:
        pytest.skip("litellm[proxy] is not installed; the config-loading path is covered by the hook test")
    cfg = tmp_path / "config.yaml"
    _write_config(cfg, bundle_dir)
    port = _free_port()
    env = {**os.environ, "PREFILL_BUNDLE": str(bundle_dir), "LITELLM_LOCAL_MODEL_COST_MAP": "True",
           "DISABLE_SCHEMA_UPDATE": "true", "LITELLM_LOG": "ERROR"}
    env.pop("DATABASE_URL", None)
    log = (tmp_path / "proxy.log").open("w")
    proc = subprocess.Popen([exe, "--config", str(cfg), "--host", "127.0.0.1", "--port", str(port)],
                            stdout=log, stderr=subprocess.STDOUT, env=env, cwd=tmp_path)
    try:
        deadline = time.time() + 120
        while True:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/health/liveliness", timeout=2)
                break
            except OSError:
                if proc.poll() is not None or time.time() > deadline:
                    pytest.fail(f"proxy did not start: {(tmp_path / 'proxy.log').read_text()[-3000:]}")
                time.sleep(0.5)
        math = _post(port, MATH_PROMPT)
        hist = _post(port, HIST_PROMPT)
        assert math["choices"][0]["message"]["content"] == "answer from math-model"
        assert hist["choices"][0]["message"]["content"] == "answer from history-model"
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()
