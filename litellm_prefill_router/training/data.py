"""Routing datasets: one in-memory schema and loaders for JSONL, long CSV and wide tables."""

from __future__ import annotations

import csv
import hashlib
import json
import math
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import PrefillRouterError
from ..jsonl import numbered_lines
from .evaluation import binarize

VALID_SPLITS = ("train", "val", "test")
_SPLIT_ALIASES = {"train": "train", "training": "train", "val": "val", "valid": "val", "validation": "val",
                  "dev": "val", "test": "test", "eval": "test"}


class DataError(PrefillRouterError):
    """A routing dataset is malformed; the message names the file, the row and the fix."""


@dataclass(frozen=True)
class RoutingRow:
    id: str
    prompt: str | list[dict[str, Any]]
    benchmark: str
    split: str | None
    scores: dict[str, float]
    costs: dict[str, float] = field(default_factory=dict)
    output_tokens: dict[str, int] = field(default_factory=dict)


@dataclass
class RoutingDataset:
    rows: list[RoutingRow]
    targets: list[str]
    prices: dict[str, tuple[float, float]] = field(default_factory=dict)  # (input, output) USD/token
    source: str = ""
    splits_assigned: bool = False  # the data named no splits: `assign_splits` made train/test

    def __len__(self) -> int:
        return len(self.rows)

    def scores(self, targets: Sequence[str] | None = None) -> np.ndarray:
        """(n, K) scores in [0, 1]; NaN where a target has no label."""
        ts = list(targets or self.targets)
        out = np.full((len(self.rows), len(ts)), np.nan, dtype=np.float32)
        for i, r in enumerate(self.rows):
            for j, t in enumerate(ts):
                if t in r.scores:
                    out[i, j] = r.scores[t]
        return out

    def indices(self, split: str) -> np.ndarray:
        return np.array([i for i, r in enumerate(self.rows) if r.split == split], dtype=np.int64)

    def prompts(self) -> list[str | list[dict[str, Any]]]:
        return [r.prompt for r in self.rows]

    def content_hash(self) -> str:
        h = hashlib.sha256()
        for r in self.rows:
            h.update(r.id.encode())
            h.update(b"\0")
            h.update(json.dumps(r.prompt, sort_keys=True, ensure_ascii=False).encode("utf-8", "replace"))
            h.update(b"\1")
        return h.hexdigest()[:16]

    def mean_output_tokens(self, target: str) -> float | None:
        vals = [r.output_tokens[target] for r in self.rows if target in r.output_tokens]
        return float(np.mean(vals)) if vals else None

    def subset(self, idx: Iterable[int]) -> RoutingDataset:
        return RoutingDataset([self.rows[i] for i in idx], list(self.targets), dict(self.prices), self.source,
                              self.splits_assigned)


def _score(value: Any, where: str) -> float | None:
    if value is None or (isinstance(value, str) and value.strip() == ""):
        return None
    if isinstance(value, bool):
        return float(value)
    if isinstance(value, str) and value.strip().lower() in ("true", "false"):
        return 1.0 if value.strip().lower() == "true" else 0.0
    try:
        v = float(value)
    except (TypeError, ValueError) as err:
        raise DataError(f"{where}: score {value!r} is not a number; scores must be 0/1 or floats in [0, 1]") from err
    if math.isnan(v):
        raise DataError(f"{where}: score is NaN; leave the label out instead (missing labels are allowed)")
    if not 0.0 <= v <= 1.0:
        raise DataError(f"{where}: score {v} is outside [0, 1]; rescale it")
    return v


def _split(value: Any, where: str) -> str | None:
    if value is None or value == "":
        return None
    key = str(value).strip().lower()
    if key not in _SPLIT_ALIASES:
        raise DataError(f"{where}: unknown split {value!r}; use one of {VALID_SPLITS} (or leave it empty)")
    return _SPLIT_ALIASES[key]


def load_models_json(path: Path) -> dict[str, tuple[float, float]]:
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as err:
        raise DataError(f"cannot read the prices {path}: {err}; it is a JSON object {{target: "
                        "{input_cost_per_token, output_cost_per_token}}") from err
    if not isinstance(raw, dict):
        raise DataError(f"{path}: prices are a JSON object {{target: {{input_cost_per_token, "
                        f"output_cost_per_token}}}}, got {type(raw).__name__}")
    out = {}
    for name, spec in raw.items():
        try:
            out[name] = (float(spec["input_cost_per_token"]), float(spec["output_cost_per_token"]))
        except (KeyError, TypeError, ValueError) as err:
            raise DataError(f"{path}: model {name!r} needs numeric input_cost_per_token and output_cost_per_token") \
                from err
    return out


def load_jsonl(path: Path, *, require_scores: bool = True) -> list[RoutingRow]:
    needed = ("id", "prompt", "scores") if require_scores else ("id", "prompt")
    rows = []
    for n, line in numbered_lines(path):
        where = f"{path}:{n}"
        try:
            d = json.loads(line)
        except json.JSONDecodeError as err:
            raise DataError(f"{where}: not valid JSON ({err})") from err
        if not isinstance(d, dict):
            raise DataError(f"{where}: a line must be a JSON object with {', '.join(needed)}; got "
                            f"{type(d).__name__}")
        missing = [k for k in needed if k not in d]
        if missing:
            raise DataError(f"{where}: missing field(s) {missing}; each line needs {', '.join(needed)}")
        if not isinstance(d.get("scores", {}), dict):
            raise DataError(f"{where}: 'scores' must be an object {{target: score}}")
        scores = {str(k): s for k, v in d.get("scores", {}).items()
                  if (s := _score(v, f"{where} [{k}]")) is not None}
        rows.append(RoutingRow(
            id=str(d["id"]), prompt=d["prompt"], benchmark=str(d.get("benchmark") or "default"),
            split=_split(d.get("split"), where), scores=scores,
            costs={str(k): float(v) for k, v in (d.get("costs") or {}).items()},
            output_tokens={str(k): int(v) for k, v in (d.get("output_tokens") or {}).items()},
        ))
    return rows


def load_long_csv(path: Path) -> list[RoutingRow]:
    """``question, model, isCorrect[, output_tokens, benchmark, split, id]`` - one row per (prompt, model)."""
    by_q: dict[str, dict[str, Any]] = {}
    with path.open(encoding="utf-8", newline="") as f:
        reader = csv.DictReader(f)
        need = {"question", "model", "isCorrect"}
        if not need.issubset(reader.fieldnames or []):
            raise DataError(f"{path}: long CSV needs columns {sorted(need)}, has {reader.fieldnames}")
        for n, rec in enumerate(reader, 2):
            where = f"{path}:{n}"
            key = rec.get("id") or rec["question"]
            entry = by_q.setdefault(key, {"prompt": rec["question"], "scores": {}, "out": {},
                                          "benchmark": rec.get("benchmark") or "default",
                                          "split": _split(rec.get("split"), where)})
            s = _score(rec["isCorrect"], where)
            if s is not None:
                if rec["model"] in entry["scores"]:
                    raise DataError(f"{where}: duplicate label for prompt {key[:60]!r} and model {rec['model']!r}")
                entry["scores"][rec["model"]] = s
            if rec.get("output_tokens"):
                entry["out"][rec["model"]] = int(float(rec["output_tokens"]))
    return [RoutingRow(id=hashlib.sha1(k.encode()).hexdigest()[:12] if k == e["prompt"] else k, prompt=e["prompt"],
                       benchmark=e["benchmark"], split=e["split"], scores=e["scores"], output_tokens=e["out"])
            for k, e in by_q.items()]


def load_wide(path: Path, *, require_scores: bool = True) -> list[RoutingRow]:
    """Wide table: a prompt column, one ``<model>`` score column per target, optional ``<model>|total_cost``."""
    if path.suffix == ".parquet":
        try:
            import pandas as pd
        except ImportError as err:
            raise DataError(f"{path}: reading parquet needs pandas and pyarrow (pip install pandas pyarrow)") from err
        records = pd.read_parquet(path).to_dict(orient="records")
        columns = list(records[0].keys()) if records else []
    else:
        with path.open(encoding="utf-8", newline="") as f:
            reader = csv.DictReader(f)
            columns = list(reader.fieldnames or [])
            records = list(reader)
    pcol = next((c for c in ("prompt", "question", "query") if c in columns), None)
    if pcol is None:
        raise DataError(f"{path}: wide table needs a 'prompt' (or 'question'/'query') column; has {columns}")
    meta = {pcol, "id", "benchmark", "split", "eval_name", "oracle_model_to_route_to"}
    models = [c for c in columns if c not in meta and "|" not in c]
    if not models and require_scores:
        raise DataError(f"{path}: no model score columns found; add one '<model>' column per target")
    rows = []
    for n, rec in enumerate(records, 2):
        where = f"{path}:{n}"
        scores = {m: s for m in models if (s := _score(rec.get(m), f"{where} [{m}]")) is not None}
        costs = {m: float(rec[f"{m}|total_cost"]) for m in models if rec.get(f"{m}|total_cost") not in (None, "")}
        rows.append(RoutingRow(id=str(rec.get("id") or n - 2), prompt=str(rec[pcol]),
                               benchmark=str(rec.get("benchmark") or rec.get("eval_name") or "default"),
                               split=_split(rec.get("split"), where), scores=scores, costs=costs))
    return rows


def assign_splits(rows: list[RoutingRow], test_fraction: float = 0.1) -> list[RoutingRow]:
    """Deterministic split stratified by benchmark: ids ordered by hash within each benchmark."""
    by_bench: dict[str, list[RoutingRow]] = defaultdict(list)
    for r in rows:
        by_bench[r.benchmark].append(r)
    test_ids: set[str] = set()
    for group in by_bench.values():
        ordered = sorted(group, key=lambda r: hashlib.sha256(r.id.encode()).hexdigest())
        test_ids.update(r.id for r in ordered[: int(round(len(ordered) * test_fraction))])
    return [RoutingRow(r.id, r.prompt, r.benchmark, "test" if r.id in test_ids else "train", r.scores, r.costs,
                       r.output_tokens) for r in rows]


def _train_label_counts(rows: Sequence[RoutingRow], targets: Iterable[str]) -> dict[str, int]:
    return {t: sum(1 for r in rows if t in r.scores and r.split == "train") for t in targets}


def _fill_prices_from_costs(prices: dict[str, tuple[float, float]], rows: Sequence[RoutingRow],
                            targets: Iterable[str]) -> None:
    """Targets without a price get one from the rows' recorded per-call costs, if any: per-call totals only,
    spread over an assumed 1000-token call."""
    for t in targets:
        if t not in prices:
            costs = [r.costs[t] for r in rows if t in r.costs]
            if costs:
                prices[t] = (float(np.mean(costs)) / 1000.0, float(np.mean(costs)) / 1000.0)


def load_dataset(path: str | Path, *, models_json: str | Path | None = None, targets: Sequence[str] | None = None,
                 min_labels: int = 20, require_scores: bool = True) -> RoutingDataset:
    """Load a routing dataset (a file, or a directory holding routing.jsonl and models.json).

    Prices: ``models_json``, else ``models.json`` in the directory, else ``<file stem>.models.json`` beside a file.
    ``require_scores=False`` (with ``min_labels=0``) also reads prompts without labels: ``{"id", "prompt"}`` lines,
    or a table with only a prompt column - what ``prefill-router predict`` scores.
    """
    p = Path(path).expanduser()
    if p.is_dir():
        models_json = models_json or (p / "models.json" if (p / "models.json").exists() else None)
        p = p / "routing.jsonl"
    elif models_json is None and p.with_suffix(".models.json").is_file():
        models_json = p.with_suffix(".models.json")  # written beside the data by `prefill-router collect`
    if not p.is_file():
        raise DataError(f"dataset file {p} does not exist; pass --data pointing at a .jsonl/.csv/.parquet file "
                        "or at a directory containing routing.jsonl")
    if p.suffix == ".jsonl":
        rows = load_jsonl(p, require_scores=require_scores)
    elif p.suffix == ".csv":
        with p.open(encoding="utf-8", newline="") as f:
            header = next(csv.reader(f), [])
        rows = (load_long_csv(p) if {"question", "model", "isCorrect"}.issubset(header)
                else load_wide(p, require_scores=require_scores))
    elif p.suffix == ".parquet":
        rows = load_wide(p, require_scores=require_scores)
    else:
        raise DataError(f"{p}: unsupported file type {p.suffix!r}; use .jsonl, .csv or .parquet")
    if not rows:
        raise DataError(f"{p}: no rows")
    seen: set[str] = set()
    for r in rows:
        if r.id in seen:
            raise DataError(f"{p}: duplicate id {r.id!r}; ids must be unique")
        seen.add(r.id)
    assigned = all(r.split is None for r in rows)
    if assigned:
        rows = assign_splits(rows)
    elif any(r.split is None for r in rows):
        raise DataError(f"{p}: some rows have a split and some do not; give every row a split or none")
    all_targets = sorted({t for r in rows for t in r.scores})
    if targets:
        unknown = sorted(set(targets) - set(all_targets))
        if unknown:
            raise DataError(f"{p}: requested targets {unknown} have no labels; targets in the data: {all_targets}")
        all_targets = list(targets)
    few = {t: c for t, c in _train_label_counts(rows, all_targets).items() if c < min_labels}
    if few:
        raise DataError(f"{p}: targets with fewer than {min_labels} training labels: {few}; "
                        "collect more labels or leave them out with --targets")
    prices = load_models_json(Path(models_json)) if models_json else {}
    _fill_prices_from_costs(prices, rows, all_targets)
    return RoutingDataset(rows, all_targets, prices, str(p), splits_assigned=assigned)


def add_rows(ds: RoutingDataset, paths: Sequence[str | Path], *, new_targets: bool = False,
             min_labels: int = 20) -> RoutingDataset:
    """``ds`` plus the rows of extra JSONL files (collected or feedback rows; rows without a split train).

    Extra rows may label any subset of ``ds``'s targets; ids must not repeat. With ``new_targets`` they may also
    label targets the base data does not have (a model added to the fleet, labelled by ``prefill-router collect``):
    those are appended to the targets, need ``min_labels`` training labels, and take their prices from the
    ``<stem>.models.json`` that ``collect`` writes beside its output (else from the rows' per-call costs)."""
    rows = list(ds.rows)
    seen = {r.id for r in rows}
    targets, prices = list(ds.targets), dict(ds.prices)
    for path in paths:
        p = Path(path)
        if not p.is_file():
            raise DataError(f"--add file {p} does not exist")
        for r in load_jsonl(p):
            if r.id in seen:
                raise DataError(f"{p}: id {r.id!r} is already in the data; ids must be unique across --data and --add")
            extra = sorted(set(r.scores) - set(targets))
            if extra and not new_targets:
                raise DataError(f"{p}: row {r.id!r} labels targets {extra} that the base data does not have "
                                f"({targets}); add them to the base data, or add them to a trained bundle with "
                                "`prefill-router train --continue-from BUNDLE --add ...`")
            targets += [t for t in extra if t not in targets]
            seen.add(r.id)
            rows.append(RoutingRow(r.id, r.prompt, r.benchmark, r.split or "train", r.scores, r.costs,
                                   r.output_tokens))
        side = p.with_suffix(".models.json")
        if side.is_file():
            prices.update({t: v for t, v in load_models_json(side).items() if t not in prices})
    new = targets[len(ds.targets):]
    for t, n in _train_label_counts(rows, new).items():
        if n < min_labels:
            raise DataError(f"new target {t!r} has {n} training labels in {[str(x) for x in paths]}; it needs at "
                            f"least {min_labels} (collect more: `prefill-router collect --targets {t} ...`)")
    _fill_prices_from_costs(prices, rows, new)
    out = RoutingDataset(rows, targets, prices, ds.source + "".join(f" + {p}" for p in paths))
    if new:  # all right or all wrong: nothing to learn which prompts it answers (often a judge that says the same)
        require_labels(binarize(out.scores(new)), out.indices("train"), new, lambda t: (
            f"New target {t!r} comes from {[str(x) for x in paths]}: check the judge, or collect labels on more "
            "(and more varied) prompts"), min_labels=min_labels)
    return out


def require_labels(hard: np.ndarray, rows: np.ndarray, targets: Sequence[str], fix: Callable[[str], str], *,
                   min_labels: int = 10, both_outcomes: bool = True) -> None:
    """Each target's head needs labels to learn from: raise :class:`DataError` for the first target with fewer
    than ``min_labels`` binarized labels among ``rows`` or - with ``both_outcomes`` - with only one outcome;
    ``fix(target)`` says what to do about it."""
    for j, t in enumerate(targets):
        y = hard[rows, j]
        y = y[~np.isnan(y)] == 1
        if len(y) >= min_labels and (not both_outcomes or (y.any() and not y.all())):
            continue
        need = "right and wrong answers" if both_outcomes else f"at least {min_labels} labels"
        raise DataError(f"target {t!r} needs {need} among its training labels to learn from; it has "
                        f"{int(y.sum())} right of {len(y)} in the fitting rows. {fix(t)}")
