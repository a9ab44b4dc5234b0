"""The JSONL files the CLI reads and writes: append-only logs (read leniently) and outputs (written atomically)."""

from __future__ import annotations

import json
import logging
import os
import re
import tempfile
import threading
from collections.abc import Iterable, Iterator, Mapping, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from .forking import unheld_in_child

logger = logging.getLogger(__name__)


def numbered_lines(path: Path) -> Iterator[tuple[int, str]]:
    """(line number, line) of every line of the UTF-8 text file at ``path`` that is not blank."""
    with path.open(encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if line.strip():
                yield n, line


def read_log(path: Path) -> list[tuple[int, dict[str, Any]]]:
    """(line number, record) for every JSON line of an append-only log; blank lines are skipped and a line
    that is not JSON (a write cut short by a crash) is skipped with a warning."""
    out = []
    for n, line in numbered_lines(path):
        try:
            out.append((n, json.loads(line)))
        except json.JSONDecodeError:
            logger.warning("%s:%d: not JSON (an interrupted write?); skipped", path, n)
    return out


#: placeholders of an append-only log's path: ``{date}`` (UTC, 2026-11-23: one file per day) and ``{pid}`` (one
#: file per process, e.g. per proxy worker)
LOG_PLACEHOLDERS = ("{date}", "{pid}")
_PLACEHOLDER = re.compile(r"\{[^{}]*\}")


def checked_log_template(template: str | None) -> str | None:
    """``template`` (a log path, or None); ValueError naming any ``{...}`` part not in :data:`LOG_PLACEHOLDERS`, or
    a file this process could not write: a directory, or in a directory it cannot create or write to (checked by
    opening: the file for appending, an unnamed temporary file in the directory; nothing is created; for a pydantic
    validator)."""
    bad = [m for m in _PLACEHOLDER.findall(template or "") if m not in LOG_PLACEHOLDERS]
    if bad:
        raise ValueError(f"decision_log {template!r} has unknown placeholders {bad}; use "
                         f"{' and '.join(LOG_PLACEHOLDERS)}")
    if template:
        _check_writable(log_path(template).expanduser().absolute(), template)
    return template


def _check_writable(path: Path, template: str) -> None:
    if path.is_dir():
        raise ValueError(f"decision_log {template!r} is a directory; name a file in it, e.g. "
                         f"{str(Path(template) / 'decisions-{date}.jsonl')!r}")
    if path.exists():
        try:
            with path.open("ab"):  # opened for appending, nothing written: the file is unchanged
                pass
        except OSError as err:
            raise ValueError(f"decision_log {template!r}: {path} cannot be appended to ({err})") from err
        return
    existing = next(d for d in path.parents if d.exists())  # the directory the missing ones would be made in
    if not existing.is_dir():
        raise ValueError(f"decision_log {template!r}: {existing} is a file, not a directory")
    try:  # an unnamed file where one is supported (O_TMPFILE): nothing appears in the directory
        with tempfile.TemporaryFile(dir=existing):
            pass
    except OSError as err:  # os.access would say yes to root on a read-only mount
        what = "directory" if existing == path.parent else f"missing directory {path.parent} in"
        raise ValueError(f"decision_log {template!r}: this process may not create the {what} {existing} "
                         f"({err}); name a writable path") from err


def _now() -> datetime:
    return datetime.now(timezone.utc)


def log_path(template: str, now: datetime | None = None) -> Path:
    """The file a log line written now goes to: ``template`` with its placeholders filled in."""
    day = (now or _now()).astimezone(timezone.utc).strftime("%Y-%m-%d")
    return Path(template.replace("{date}", day).replace("{pid}", str(os.getpid())))


def logs_of(template: str) -> list[Path]:
    """Every file an append-only log ``template`` has written (each placeholder matching anything: all days, all
    processes), the most recently written first."""
    pattern = Path(_PLACEHOLDER.sub("*", template)).expanduser()
    files = [f for f in pattern.parent.glob(pattern.name) if f.is_file()] if pattern.parent.is_dir() else []
    return sorted(files, key=lambda f: f.stat().st_mtime_ns, reverse=True)


def records_from_end(paths: Iterable[Path], block: int = 1 << 20) -> Iterator[dict[str, Any]]:
    """The JSON records of append-only logs, the last line of each file first (files in the order given), read
    backwards a block at a time - so the latest records of a large log cost what they hold, not the whole file. A
    line that is not JSON (an interrupted write) is skipped; so is a file that cannot be read, with a warning."""
    for path in paths:
        try:
            with path.open("rb") as f:
                pos, rest = f.seek(0, os.SEEK_END), b""
                while pos > 0:
                    step = min(block, pos)
                    pos -= step
                    f.seek(pos)
                    lines = (f.read(step) + rest).split(b"\n")
                    rest = lines[0]
                    yield from _parsed(reversed(lines[1:]))
                yield from _parsed([rest])
        except OSError as err:
            logger.warning("%s: could not be read (%s: %s); skipped", path, type(err).__name__, err)


def _parsed(lines: Iterable[bytes]) -> Iterator[dict[str, Any]]:
    for line in lines:
        if line.strip():
            try:
                rec = json.loads(line)
            except (json.JSONDecodeError, UnicodeDecodeError):
                continue
            if isinstance(rec, dict):
                yield rec


def append_line(path: Path, line: str) -> None:
    """Append one JSON line with a single write to a file opened for appending, so lines that several processes
    (proxy workers) append to one file do not interleave."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("ab", buffering=0) as f:
        f.write((line + "\n").encode("utf-8"))


_APPEND_LOCK = unheld_in_child(threading.Lock())
_FAILING: dict[str, str] = {}  # log template -> the error its last write failed with (under _APPEND_LOCK)


def append_log_record(template: str, record: Mapping[str, Any]) -> None:
    """Append ``record`` as one JSON line to the log that ``template`` names now (placeholders filled in). A record
    that cannot be written is logged as an error, never raised: the call it describes is the caller's, and a log line
    is not worth losing it."""
    try:
        line = json.dumps(record, default=str)
        with _APPEND_LOCK:
            append_line(log_path(template), line)
    except Exception as err:  # noqa: BLE001
        # said once while it keeps failing the same way (a full disk is not worth an error per request)
        said = f"{type(err).__name__}: {err}"
        with _APPEND_LOCK:
            new, _FAILING[template] = _FAILING.get(template) != said, said
        if new:
            logger.error("prefill router: could not write decision log %s: %s; calls go on without their log lines "
                         "(said again when the error changes)", template, said)
    else:
        with _APPEND_LOCK:
            recovered = _FAILING.pop(template, None) is not None
        if recovered:
            logger.warning("prefill router: decision log %s is written again", template)


def parse_time(value: str) -> datetime:
    """An ISO date (``2026-11-16``) or date-time (``2026-11-16T08:00``, ``...+02:00``); without a zone, UTC."""
    try:
        t = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
    except ValueError as err:
        raise ValueError(f"{value!r} is not an ISO date or date-time (e.g. 2026-11-16 or 2026-11-16T08:00:00+00:00)") \
            from err
    return t if t.tzinfo is not None else t.replace(tzinfo=timezone.utc)


def _logged_at(rec: Mapping[str, Any]) -> datetime | None:
    try:
        return parse_time(str(rec["ts"]))
    except (KeyError, ValueError):
        return None


class EmptyWindowError(LookupError):
    """A time window (``since`` / ``until``) holds none of a log's records; the message gives the log's span."""


def read_logs(paths: str | Path | Sequence[str | Path], what: str = "log", *, since: datetime | None = None,
              until: datetime | None = None) -> list[tuple[str, int, dict[str, Any]]]:
    """(file, line number, record) of every record of one or several append-only logs, in the order given (e.g.
    the daily files of a ``{date}`` log). A path that is not a file raises FileNotFoundError naming it. ``since`` /
    ``until``: only the records logged (``ts``) from ``since`` and before ``until``; a record without a readable
    ``ts`` is then left out (a warning counts them); a window that keeps none of the dated records raises
    :class:`EmptyWindowError` naming the span they were logged in."""
    files = [Path(paths)] if isinstance(paths, (str, Path)) else [Path(x) for x in paths]
    if not files:
        raise FileNotFoundError(f"no {what} file given")
    out: list[tuple[str, int, dict[str, Any]]] = []
    for f in files:
        if not f.is_file():
            raise FileNotFoundError(f"{what} {f} does not exist")
        out.extend((str(f), n, rec) for n, rec in read_log(f))
    if since is None and until is None:
        return out
    kept, undated, times = [], 0, []
    for item in out:
        t = _logged_at(item[2])
        if t is None:
            undated += 1
            continue
        times.append(t)
        if (since is None or t >= since) and (until is None or t < until):
            kept.append(item)
    if undated:
        logger.warning("%d %s records have no readable timestamp (ts): left out of the time window", undated, what)
    if times and not kept:
        window = " and ".join(f"{name} {t.isoformat()}" for name, t in (("from", since), ("before", until)) if t)
        raise EmptyWindowError(f"none of the {len(times)} {what} records was logged {window}: they were logged from "
                               f"{min(times).isoformat()} to {max(times).isoformat()}; widen --since / --until")
    return kept


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
                                "cost": {t: float(f"{c:.6g}") for t, c in zip(targets, cost[i])}}
                               for i, rid in enumerate(ids)))
