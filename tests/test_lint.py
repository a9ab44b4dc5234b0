"""The code keeps the house rules ruff can check (config in pyproject): no unused or undefined names, no syntax
errors, lines of at most 120 characters, imports in order."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CHECKED = ["litellm_prefill_router", "langchain_integration", "tests", "benchmarks", "examples", "scripts"]


def test_the_code_passes_ruff_with_the_projects_rules() -> None:
    r = subprocess.run([sys.executable, "-m", "ruff", "check", "--no-cache", *CHECKED], capture_output=True, text=True,
                       cwd=ROOT, timeout=300)
    assert r.returncode == 0, (r.stdout + r.stderr)[-4000:]
    assert "All checks passed" in r.stdout


def test_ruff_reports_a_line_over_120_characters(tmp_path: Path) -> None:
    """The rules above are in force: a file that breaks one fails the check (not a check that cannot fail)."""
    bad = tmp_path / "bad.py"
    bad.write_text(f"X = {'1' * 130!r}\n")
    r = subprocess.run([sys.executable, "-m", "ruff", "check", "--no-cache", "--config", str(ROOT / "pyproject.toml"),
                        str(bad)], capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert r.returncode == 1 and "E501" in r.stdout
