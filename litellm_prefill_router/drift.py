"""``prefill-router drift``: does the traffic a router serves still look like what its bundle was trained on?

A bundle's P(correct) is only as good as its training data is like the prompts it routes. Labels come late (feedback,
judges), but the bundle's own predictions are logged for every call, and they move when the traffic moves: more code
questions than in the training data, longer prompts, another language. So each bundle carries a *reference
distribution* (``report.json`` ``reference``: every target's P(correct) on its validation split and the prompts' token
counts, each as the share of rows between its deciles, and the rows themselves), and this module compares a decision
log against it - or against an earlier log (``reference_log``: last month's traffic against this week's, for a bundle
trained before references existed).

The measure is the population stability index over the reference's decile bins:
``PSI = sum_bins (logged - reference) * ln(logged / reference)``, the usual reading being < 0.1 stable, 0.1-0.25 a
moderate shift, >= 0.25 a major one. Finite samples give PSI > 0 with no shift at all: about ``(bins - 1) * (1 / n +
1 / N)`` for n logged calls and N reference rows (PSI * nN / (n + N) is then about chi-square with bins - 1 degrees of
freedom). So that *noise level* is subtracted before the thresholds are applied, and a PSI that sampling alone
reaches 1% of the time (``bound_99``) is no shift at all, whatever its size - which matters for a small reference; a
target seen in fewer than ``min_calls`` calls gets no verdict. PSI sees the bulk of the traffic move; a new kind of
prompt that is a minority of it is found by :mod:`.novelty` (the share of calls unlike any reference row).

Calls counted: each request once (a retry repeats its first attempt's prediction), every call the policy decided on a
prediction; not pinned calls (no prediction) nor fallbacks (none, or one of a prompt without text); with a bundle as
the reference, only calls that bundle's version decided (other versions' predictions come from other weights).
"""

from __future__ import annotations

import functools
from collections import Counter
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from .bundle import Bundle, load_bundle
from .errors import PrefillRouterError
from .novelty import ReferenceRows, novelty
from .records import answered_by, feedback_score, logged_call_id

BINS = 10  # PSI over the reference's deciles
DECILES = tuple(round(0.1 * i, 1) for i in range(1, BINS))
MODERATE, MAJOR = 0.1, 0.25
_FLOOR = 1e-4  # a bin's share is at least this in PSI (an empty bin would give infinity)
_ORDER = ("stable", "moderate shift", "major shift")


class DriftError(PrefillRouterError):
    """The drift of a log cannot be measured (no reference, no usable call); the message names why and the fix."""


class Histogram(BaseModel):
    """A variable's distribution in the reference: the bins at its deciles (``edges``, distinct values, so tied
    deciles - a point mass, e.g. a saturated P(correct) or a common prompt length - share one bin), the share of the
    reference rows in each bin (``(-inf, edges[0]], (edges[0], edges[1]], ..., (edges[-1], inf)``), its mean and median.
    """

    model_config = ConfigDict(extra="ignore")

    edges: list[float]
    shares: list[float]
    mean: float
    median: float

    @model_validator(mode="after")
    def _one_share_per_bin(self) -> Histogram:
        if len(self.shares) != len(self.edges) + 1 or any(b <= a for a, b in zip(self.edges, self.edges[1:])):
            raise ValueError(f"{len(self.edges)} ascending distinct edges need {len(self.edges) + 1} shares, got "
                             f"{len(self.shares)} shares")
        return self

    @classmethod
    def of(cls, values: np.ndarray) -> Histogram:
        x = np.asarray(values, dtype=np.float64)
        edges = np.unique(np.quantile(x, DECILES, method="inverted_cdf"))  # values the data takes
        shares = np.bincount(np.searchsorted(edges, x, side="left"), minlength=len(edges) + 1) / len(x)
        return cls(edges=edges.tolist(), shares=shares.tolist(), mean=float(x.mean()), median=float(np.median(x)))

    def psi(self, values: np.ndarray) -> float:
        """PSI of ``values`` over these bins."""
        x = np.asarray(values, dtype=np.float64)
        observed = np.bincount(np.searchsorted(self.edges, x, side="left"), minlength=len(self.shares)) / max(len(x), 1)
        e, o = np.maximum(self.shares, _FLOOR), np.maximum(observed, _FLOOR)
        return float(np.sum((o - e) * np.log(o / e)))


class ReferenceDistribution(BaseModel):
    """What a bundle's predictions looked like on data like its training data (``report.json`` ``reference``)."""

    model_config = ConfigDict(extra="ignore")

    source: str
    n: int = Field(gt=0)
    p_correct: dict[str, Histogram]  # per target
    input_tokens: Histogram | None = None  # prompt tokens, before truncation to the encoder's window
    truncated_share: float | None = None
    rows: ReferenceRows | None = None  # the rows themselves, for the novelty of each call

    @classmethod
    def of(cls, p: Mapping[str, np.ndarray], n_tokens: np.ndarray | None, truncated: np.ndarray | None,
           source: str, n: int, rows: ReferenceRows | None) -> ReferenceDistribution:
        return cls(source=source, n=n, p_correct={t: Histogram.of(v) for t, v in p.items() if len(v)},
                   input_tokens=Histogram.of(n_tokens) if n_tokens is not None and len(n_tokens) else None,
                   truncated_share=float(np.mean(truncated)) if truncated is not None and len(truncated) else None,
                   rows=rows)


def reference_distribution(p: np.ndarray, targets: list[str], n_tokens: np.ndarray, max_tokens: int,
                           source: str = "validation split") -> dict[str, Any]:
    """The reference of predictions ``p`` (rows x targets) and prompt lengths ``n_tokens`` (see
    :class:`ReferenceDistribution`), as ``report.json`` stores it."""
    n_tokens = np.asarray(n_tokens, dtype=np.float64)
    ref = ReferenceDistribution.of({t: p[:, j] for j, t in enumerate(targets)}, n_tokens, n_tokens > max_tokens,
                                   source, len(p), ReferenceRows.of(p, targets, n_tokens) if len(p) > 1 else None)
    return ref.model_dump()


def bundle_reference(report: Mapping[str, Any], where: str) -> ReferenceDistribution:
    """The reference in a bundle's report; a bundle trained before references existed is a :class:`DriftError`
    naming the ways out."""
    raw = report.get("reference")
    if raw is None:
        raise DriftError(f"bundle {where} has no reference distribution (report.json 'reference': bundles trained "
                         "before litellm-prefill-router 0.1.0's drift check lack it). Retrain it (with cached "
                         "features this takes a minute), or compare with an earlier log: --reference-log OLD.jsonl")
    try:
        return ReferenceDistribution.model_validate(raw)
    except ValidationError as err:
        raise DriftError(f"bundle {where}: report.json 'reference' is malformed ({err.error_count()} errors: "
                         f"{err.errors()[0]['loc']}: {err.errors()[0]['msg']}); retrain the bundle") from err


class _Traffic:
    """The calls of a log that count (see the module's docstring), each with its P(correct) per target, prompt tokens
    (None: not logged), truncation, call id and messages (for --novel-out); with scores, per answering target its
    P(correct) and score. ``p``, ``tokens`` and ``truncated`` regroup the calls' values by variable."""

    def __init__(self, records: Iterable[Mapping[str, Any]], *, version: str | None, model_group: str | None,
                 scores: Mapping[str, float] | None) -> None:
        self.vectors: list[dict[str, float]] = []
        self.call_tokens: list[float | None] = []
        self.call_truncated: list[bool] = []
        self.ids: list[str | None] = []
        self.messages: list[Any] = []
        self.scored: dict[str, list[tuple[float, float]]] = {}
        self.skipped: Counter[str] = Counter()
        self.versions: Counter[str] = Counter()
        seen: set[str] = set()
        for rec in records:
            d = rec.get("decision") or {}
            p = d.get("p_correct") or {}
            if not d.get("target"):
                continue
            if model_group is not None and d.get("model_group") != model_group:
                self.skipped["another model group"] += 1
                continue
            if not p or str(d.get("reason", "")).startswith("fallback"):
                self.skipped["pinned or fallback (no prediction to compare)"] += 1
                continue
            logged_version = d.get("bundle_version")
            if logged_version:
                self.versions[str(logged_version)] += 1
            if version and logged_version and logged_version != version:
                self.skipped["decided by another bundle version"] += 1
                continue
            request = d.get("trace_id")
            # a retry repeats its request's prediction (LangChain reroutes log no trace id: their reason says it)
            if (request and request in seen) or str(d.get("reason", "")).startswith("retry:"):
                self.skipped["another attempt of a request counted already"] += 1
                continue
            if request:
                seen.add(str(request))
            n = d.get("input_tokens")
            self.vectors.append({t: float(v) for t, v in p.items() if isinstance(v, (int, float))})
            self.call_tokens.append(float(n) if isinstance(n, (int, float)) else None)
            self.call_truncated.append(bool(d.get("truncated")))
            self.ids.append(logged_call_id(rec))
            self.messages.append(rec.get("messages"))
            served = answered_by(d)
            score = feedback_score(rec, scores)
            if served and score is not None and isinstance(p.get(served), (int, float)):
                self.scored.setdefault(served, []).append((float(p[served]), float(score)))

    @property
    def calls(self) -> int:
        return len(self.vectors)

    @functools.cached_property
    def p(self) -> dict[str, list[float]]:
        """Each target's P(correct) over the calls that have one."""
        out: dict[str, list[float]] = {}
        for vector in self.vectors:
            for t, v in vector.items():
                out.setdefault(t, []).append(v)
        return out

    @functools.cached_property
    def tokens(self) -> list[float]:
        """The prompt tokens of the calls that logged them."""
        return [n for n in self.call_tokens if n is not None]

    @functools.cached_property
    def truncated(self) -> list[bool]:
        """Whether each of those (the calls in ``tokens``) was cut to the encoder's window."""
        return [cut for n, cut in zip(self.call_tokens, self.call_truncated) if n is not None]


def _reference_from_log(traffic: _Traffic, where: str) -> ReferenceDistribution:
    if not traffic.calls:
        raise DriftError(f"the reference log {where} has no call with predictions logged "
                         f"({dict(traffic.skipped) or 'it is empty'})")
    targets = [t for t in traffic.p if all(t in v for v in traffic.vectors)]
    tokens = np.array(traffic.call_tokens, dtype=np.float64) if None not in traffic.call_tokens else None
    rows = ReferenceRows.of(np.array([[v[t] for t in targets] for v in traffic.vectors]), targets, tokens) \
        if targets and traffic.calls > 1 else None
    return ReferenceDistribution.of({t: np.array(v) for t, v in traffic.p.items()}, np.array(traffic.tokens),
                                    np.array(traffic.truncated), f"log {where}", traffic.calls, rows)


# the chi-square distribution's 99th percentile by degrees of freedom (bins - 1): PSI * n N / (n + N) follows it
# when nothing moved, so a PSI under CHI2_99[bins - 1] * (1 / n + 1 / N) is within sampling noise
CHI2_99 = {1: 6.635, 2: 9.210, 3: 11.345, 4: 13.277, 5: 15.086, 6: 16.812, 7: 18.475, 8: 20.090, 9: 21.666}


def _compare(reference: Histogram, values: list[float], n_ref: int, min_calls: int) -> dict[str, Any]:
    """PSI of ``values`` against a reference of ``n_ref`` rows, its noise level (the PSI expected with no shift),
    the PSI that sampling alone exceeds 1% of the time, and the verdict: a PSI past that bound is a shift, graded by
    how far it is above the noise level (``MODERATE`` / ``MAJOR``)."""
    x = np.asarray(values, dtype=np.float64)
    value, bins = reference.psi(x), len(reference.shares)
    scale = 1.0 / max(len(x), 1) + 1.0 / n_ref
    noise, bound = (bins - 1) * scale, CHI2_99.get(bins - 1, 0.0) * scale
    excess = value - noise
    verdict = ("too few calls" if len(x) < min_calls else "stable" if value <= bound or excess < MODERATE
               else "major shift" if excess >= MAJOR else "moderate shift")
    return {"calls": len(x), "psi": value, "noise": noise, "bound_99": bound, "verdict": verdict}


def drift(records: Iterable[Mapping[str, Any]], reference: ReferenceDistribution | Iterable[Mapping[str, Any]], *,
          bundle_version: str | None = None, reference_name: str = "reference", model_group: str | None = None,
          scores: Mapping[str, float] | None = None, min_calls: int = 200) -> dict[str, Any]:
    """The drift of the calls in ``records`` (a decision log) from ``reference``: a bundle's
    :class:`ReferenceDistribution` (``bundle_version``: only calls that version decided), or another decision log's
    records. Per target: PSI of its P(correct), the noise level, the means and a verdict; the same for the prompts'
    token counts; the share of novel calls (:func:`.novelty.novelty`) and those calls, furthest first (``id``,
    ``distance`` in units of the novelty threshold, ``messages``); with ``scores`` (feedback / judge scores by call
    id), per answering target its mean P(correct) against its mean score on this traffic; and the worst verdict of
    all, with the advice that goes with it."""
    if not isinstance(reference, ReferenceDistribution):
        reference = _reference_from_log(_Traffic(reference, version=None, model_group=model_group, scores=None),
                                        reference_name)
    traffic = _Traffic(records, version=bundle_version, model_group=model_group, scores=scores)
    if not traffic.calls:
        why = dict(traffic.skipped) or "the log is empty"
        hint = (f"; the log's calls were decided by bundle versions {sorted(traffic.versions)}, not {bundle_version}: "
                "pass the bundle that decided them (or --reference-log)") if bundle_version and traffic.versions \
            else "; point --log at a prefill router's decision_log"
        raise DriftError(f"no call of the decision log can be compared ({why}){hint}")
    targets: dict[str, Any] = {}
    for t, hist in reference.p_correct.items():
        logged = traffic.p.get(t, [])
        if not logged:
            targets[t] = {"calls": 0, "verdict": "too few calls"}
            continue
        targets[t] = {**_compare(hist, logged, reference.n, min_calls), "mean_p_correct": float(np.mean(logged)),
                      "reference_mean_p_correct": hist.mean}
    unknown = sorted(set(traffic.p) - set(reference.p_correct))
    tokens: dict[str, Any] | None = None
    if reference.input_tokens is not None and traffic.tokens:
        tokens = {**_compare(reference.input_tokens, traffic.tokens, reference.n, min_calls),
                  "median": float(np.median(traffic.tokens)), "reference_median": reference.input_tokens.median,
                  "truncated_share": float(np.mean(traffic.truncated)),
                  "reference_truncated_share": reference.truncated_share}
    novel = novelty(reference.rows, traffic.vectors, traffic.call_tokens, min_calls) if reference.rows else None
    novel_calls: list[dict[str, Any]] = []
    if novel is not None:
        distances, mask = novel.pop("distances"), novel.pop("novel_mask")
        novel_calls = [{"id": traffic.ids[i], "distance": float(distances[i]), "messages": traffic.messages[i]}
                       for i in np.argsort(-distances) if mask[i]]
    verdicts = [v["verdict"] for v in targets.values()] + ([tokens["verdict"]] if tokens else []) \
        + ([novel["verdict"]] if novel else [])
    judged = [v for v in verdicts if v in _ORDER]
    overall = max(judged, key=_ORDER.index) if judged else "too few calls"
    shifted = sorted(t for t, v in targets.items() if v["verdict"] in _ORDER[1:])
    calibration = None
    if scores is not None:
        calibration = {t: {"scored": len(v), "mean_p_correct": float(np.mean([p for p, _ in v])),
                           "mean_score": float(np.mean([s for _, s in v]))}
                       for t, v in sorted(traffic.scored.items())}
    return {"reference": {"source": reference.source, "n": reference.n, "bundle_version": bundle_version},
            "calls": traffic.calls, "skipped": dict(traffic.skipped), "model_group": model_group,
            "min_calls": min_calls, "targets": targets, "targets_not_in_reference": unknown,
            "input_tokens": tokens, "novelty": novel, "novel_calls": novel_calls, "calibration": calibration,
            "verdict": overall, "shifted_targets": shifted,
            "advice": _advice(overall, shifted, tokens, novel, min_calls)}


def drift_from_bundle(records: Iterable[Mapping[str, Any]], bundle: str | Path | Bundle,
                      **options: Any) -> dict[str, Any]:
    """:func:`drift` of a decision log's ``records`` against ``bundle``'s reference (a directory, ``hf://...`` or a
    loaded :class:`~.bundle.Bundle`), counting only the calls that bundle's version decided; ``options``: those of
    :func:`drift` (``model_group``, ``scores``, ``min_calls``)."""
    loaded = bundle if isinstance(bundle, Bundle) else load_bundle(bundle)
    return drift(records, bundle_reference(loaded.report(), loaded.source), bundle_version=loaded.version, **options)


def _advice(overall: str, shifted: list[str], tokens: Mapping[str, Any] | None, novel: Mapping[str, Any] | None,
            min_calls: int) -> str:
    if overall == "too few calls":
        return f"log at least {min_calls} calls (--min-calls sets the bar) for a verdict"
    if overall == "stable":
        return "the traffic looks like the reference: no action"
    what = ([f"the predictions for {', '.join(shifted)}"] if shifted else []) \
        + (["the prompts' lengths"] if tokens and tokens["verdict"] in _ORDER[1:] else [])
    parts = [f"{' and '.join(what)} moved away from the reference"] if what else []
    if novel and novel["verdict"] in _ORDER[1:]:
        parts.append(f"{novel['share']:.0%} of the calls are unlike any reference row (about 5% are on traffic "
                     "like it)")
    return (f"{'; '.join(parts)} ({overall}): the bundle is routing prompts unlike its training data. Label some of "
            "this traffic - the novel calls first: --novel-out writes them as `collect` prompts - (`prefill-router "
            "collect`, `judge`, or users' scores through `feedback`) and retrain with it (`train --add ...` / "
            "`--continue-from`); `replay` the log with the new bundle before deploying it")
