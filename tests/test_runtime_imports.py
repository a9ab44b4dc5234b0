"""The runtime never imports torch or transformers, and importing it does no work."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from conftest import MATH_PROMPT


def test_serving_a_request_imports_neither_torch_nor_transformers(bundle_dir: Path) -> None:
    code = f"""
import asyncio, sys
from litellm_prefill_router import PrefillRouter
from litellm_prefill_router.semantic import PrefillSemanticRouter
from langchain_integration import PrefillRouterRunnable
from conftest import model_list
r = PrefillRouter(model_list=model_list(), routing_strategy="prefill",
                  routing_strategy_args={{"bundle": {str(bundle_dir)!r}}})
resp = asyncio.run(r.acompletion(model="auto", messages=[{{"role": "user", "content": {MATH_PROMPT!r}}}]))
assert resp._hidden_params["prefill_routing"]["target"]
PrefillSemanticRouter({str(bundle_dir)!r})({MATH_PROMPT!r})
print(sorted(m for m in ("torch", "transformers") if m in sys.modules))
"""
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parent), "LITELLM_LOCAL_MODEL_COST_MAP": "True"}
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.strip().splitlines()[-1] == "[]"


def test_importing_the_package_loads_no_litellm_and_no_model() -> None:
    code = "import sys, litellm_prefill_router; print('litellm' in sys.modules, 'onnxruntime' in sys.modules)"
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    litellm_loaded, _ = r.stdout.split()
    assert litellm_loaded == "False"  # litellm (and its network price-map fetch) only when a router is built


#: the runtime modules that may import litellm: a litellm upgrade touches these and no other (see router.py)
LITELLM_FACING = {"router", "strategy", "composition", "decision_logger", "collection_client", "proxy_hook"}


def test_only_the_litellm_facing_modules_import_litellm() -> None:
    import ast

    root = Path(__file__).resolve().parents[1]
    importers = set()
    for path in [*(root / "litellm_prefill_router").glob("*.py"), *(root / "langchain_integration").glob("*.py")]:
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module or ""] if isinstance(node, ast.ImportFrom) and node.level == 0 else []
            if any(n == "litellm" or n.startswith("litellm.") for n in names):
                importers.add(path.stem if path.parent.name == "litellm_prefill_router" else f"lc.{path.stem}")
    assert importers == LITELLM_FACING
