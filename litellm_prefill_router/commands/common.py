"""What the `prefill-router` commands share: the dataset argument and plain-text tables."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

DATA_ENV = "PREFILL_ROUTER_DATA"


def table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    cells = [[str(h) for h in headers]] + [[("-" if c != c else f"{c:.4g}") if isinstance(c, float) else str(c)
                                             for c in r] for r in rows]  # NaN (c != c): no labels to measure on
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths)) for r in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def data_arg(value: str | None) -> str:
    data = value or os.environ.get(DATA_ENV)
    if not data:
        raise SystemExit(f"error: give --data PATH or set {DATA_ENV}")
    return data


def read_rubric(path: str | None) -> str | None:

    return Path(path).read_text(encoding="utf-8") if path else None
