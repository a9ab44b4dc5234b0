"""What the `prefill-router` commands share: the dataset argument, plain-text tables, decision-log records and
feedback scores, and their ``--json`` / ``--plot`` outputs."""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

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
        from ..errors import PrefillRouterError

        raise PrefillRouterError(f"give --data PATH or set {DATA_ENV}")
    return data


def read_rubric(path: str | None) -> str | None:

    return Path(path).read_text(encoding="utf-8") if path else None


def or_dash(x: float | None, fmt: str = "{:.3f}") -> str:
    """``x`` formatted, or "-" where there is none."""
    return "-" if x is None else fmt.format(x)


def decision_records(paths: Sequence[str], error: type[Exception],
                     args: argparse.Namespace | None = None) -> list[dict]:
    """Every record of the decision logs at ``paths`` (within ``args.since`` / ``args.until`` when given); a missing
    file is ``error`` saying how to get one."""
    from ..log_stats import decision_log_records

    return decision_log_records(paths, error, since=getattr(args, "since", None), until=getattr(args, "until", None))


def feedback_scores(files: Sequence[str] | None, records: Sequence[Mapping[str, Any]] = ()) -> dict[str, float] | None:
    """Feedback / judge scores by call id from ``files`` (None: no files given); a note on stderr when some name no
    call of ``records`` (the decision log's, in the time window) - they are left out of every number."""
    if not files:
        return None
    from ..feedback import load_feedback
    from ..records import FEEDBACK_ID_MEANING, feedback_ids

    scores: dict[str, float] = {}
    for f in files:
        scores.update(load_feedback(f))
    known = {i for rec in records for i in feedback_ids(rec)}
    if records and (unmatched := [i for i in scores if i not in known]):
        print(f"note: {len(unmatched)} of {len(scores)} feedback ids name no call read from the decision log (e.g. "
              f"{', '.join(unmatched[:3])}), so they count nowhere; an id is {FEEDBACK_ID_MEANING}", file=sys.stderr)
    return scores


def pyplot() -> Any:
    """matplotlib.pyplot on the Agg backend, for ``--plot``; without matplotlib, an error naming the fix."""
    from ..replay import ReplayError

    try:
        import matplotlib
    except ImportError as err:
        raise ReplayError(f"--plot needs matplotlib, which the serving install leaves out: pip install matplotlib "
                          f"(or litellm-prefill-router[train]) ({err})") from err

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def write_text(path: str, text: str) -> None:
    """An output file (``--json``, ``--out``): its missing parent directories are made first."""
    p = Path(path).expanduser()
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(text, encoding="utf-8")


def write_outputs(args: argparse.Namespace, result: dict, plot: Callable[[dict, Path], None]) -> None:
    """``--json`` and ``--plot`` of a command's result (missing parent directories made)."""
    if args.json:
        write_text(args.json, json.dumps(result, indent=1))
    if args.plot:
        Path(args.plot).expanduser().parent.mkdir(parents=True, exist_ok=True)
        plot(result, Path(args.plot).expanduser())


_INPUTS = ("log", "feedback", "data", "config", "reference_log", "prompts", "rubric", "models_json", "add")
_OUTPUTS = ("out", "json", "plot", "novel_out")


def check_outputs_apart(args: argparse.Namespace) -> None:
    """Refuse a command whose output file is one of its input files (``judge --out`` the decision log it reads,
    ``feedback --out`` a feedback file): writing it would destroy or corrupt the input before, or while, it is read."""
    from ..errors import PrefillRouterError

    def paths(names: tuple[str, ...]) -> dict[Path, str]:
        found: dict[Path, str] = {}
        for name in names:
            value = getattr(args, name, None)
            for v in value if isinstance(value, list) else [value] if value else []:
                found.setdefault(Path(str(v)).expanduser().resolve(), f"--{name.replace('_', '-')}")
        return found

    inputs = paths(_INPUTS)
    for path, option in paths(_OUTPUTS).items():
        if path in inputs:
            raise PrefillRouterError(f"{option} {path} is also {inputs[path]}, an input of this command; writing it "
                                     "would destroy what is read - name another file")
