"""Every example runs offline against mock deployments."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _run(args: list[str], **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, *args], cwd=ROOT, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "LITELLM_LOCAL_MODEL_COST_MAP": "True", **env})


def test_litellm_sdk_example_routes_every_sample_and_prints_decisions(bundle_dir: Path) -> None:
    r = _run(["examples/litellm_sdk.py", "--bundle", str(bundle_dir), "--preset", "max-quality"])
    assert r.returncode == 0, r.stderr[-2000:]
    lines = [line for line in r.stdout.splitlines() if line.strip().startswith(tuple("NWWFG"))]
    assert len(lines) >= 6 and all("[" in line for line in lines)
    assert "policy:" in r.stdout
