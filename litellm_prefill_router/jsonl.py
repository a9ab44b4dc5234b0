"""The JSONL files the CLI reads and writes: append-only logs (read leniently) and outputs (written atomically)."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

logger = logging.getLogger(__name__)


def read_log(path: Path) -> list[tuple[int, dict[str, Any]]]:
    """(line number, record) for every JSON line of an append-only log; blank lines are skipped and a line
    that is not JSON (a write cut short by a crash) is skipped with a warning."""
    out = []
    with path.open(encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                out.append((n, json.loads(line)))
            except json.JSONDecodeError:
                logger.warning("%s:%d: not JSON (an interrupted write?); skipped", path, n)
    return out


def write_atomic(path: str | Path, records: Iterable[dict[str, Any]]) -> Path:
    """One JSON line per record, written to a temporary file that then replaces ``path``."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    tmp = p.with_name(p.name + ".tmp")
    with tmp.open("w", encoding="utf-8") as f:
        for r in records:
            f.write(json.dumps(r) + "\n")
    tmp.replace(p)
    return p


def write_predictions(path: str | Path, ids: Sequence[str], targets: Sequence[str], p: np.ndarray,
                      cost: np.ndarray) -> Path:
    """The ``predict`` format: ``{"id", "p_correct": {target: p}, "cost": {target: usd}}`` per prompt."""
    return write_atomic(path, ({"id": rid, "p_correct": {t: round(float(x), 6) for t, x in zip(targets, p[i])},
                                "cost": {t: float(c) for t, c in zip(targets, cost[i])}}
                               for i, rid in enumerate(ids)))
