"""Calls unlike any the bundle was validated on, for ``prefill-router drift``.

PSI over whole-traffic deciles (``drift``) sees a shift of the bulk of the traffic, but dilutes a new slice: a new use
case that is a fifth of the calls can leave every decile within noise. So each call is also placed among the
reference rows: its features are every target's P(correct) (as logits) and its prompt length (log tokens), scaled by
the reference's spread, and its distance to the nearest reference row is compared with the reference's own
leave-one-out nearest-neighbour distances. A call further away than 95% of the reference rows are from their nearest
other row is *novel*; on traffic like the reference about 5% are. The share of novel calls above 5% is the new slice,
and the novel calls themselves are the ones to label first (``drift --novel-out`` writes them as ``collect`` prompts).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, model_validator

NOVEL_ABOVE = 1.0  # novelty is a distance in units of the novelty threshold: beyond it, a prompt is novel
EXPECTED_SHARE = 0.05  # novel calls on traffic like the reference: the 95th percentile's complement
Z_BOUND = 3.09  # one-sided normal bound at p = 0.001: a share within it is sampling noise
MODERATE, MAJOR = 0.05, 0.15  # novel share above the expected one: a new slice of 5% / 15% of the traffic
_EPS = 1e-4
_CHUNK = 512


class ReferenceRows(BaseModel):
    """The reference's own rows (``report.json`` ``reference.rows``): each row's P(correct) per target, its prompt's
    tokens."""

    model_config = ConfigDict(extra="ignore")

    targets: list[str]
    p_correct: list[list[float]]
    input_tokens: list[float] | None = None

    @model_validator(mode="after")
    def _rectangular(self) -> ReferenceRows:
        bad = next((i for i, r in enumerate(self.p_correct) if len(r) != len(self.targets)), None)
        if bad is not None:
            raise ValueError(f"row {bad} has {len(self.p_correct[bad])} values for {len(self.targets)} targets")
        if self.input_tokens is not None and len(self.input_tokens) != len(self.p_correct):
            raise ValueError(f"{len(self.input_tokens)} token counts for {len(self.p_correct)} rows")
        if len(self.p_correct) < 2:
            raise ValueError("needs at least 2 rows")
        return self

    @classmethod
    def of(cls, p: np.ndarray, targets: Sequence[str], tokens: np.ndarray | None) -> ReferenceRows:
        return cls(targets=list(targets), p_correct=np.round(np.asarray(p, dtype=np.float64), 6).tolist(),
                   input_tokens=None if tokens is None else np.asarray(tokens, dtype=np.float64).tolist())


def _features(p: np.ndarray, tokens: np.ndarray | None) -> np.ndarray:
    q = np.clip(p, _EPS, 1 - _EPS)
    x = np.log(q / (1 - q))
    return x if tokens is None else np.hstack([x, np.log1p(tokens)[:, None]])


def _nearest(a: np.ndarray, b: np.ndarray, *, leave_one_out: bool = False) -> np.ndarray:
    """Each row of ``a``'s distance to its nearest row of ``b`` (``leave_one_out``: a is b, a row is not its own
    neighbour)."""
    out = np.empty(len(a))
    bb = (b * b).sum(1)
    for start in range(0, len(a), _CHUNK):
        chunk = a[start : start + _CHUNK]
        d2 = (chunk * chunk).sum(1)[:, None] + bb[None, :] - 2.0 * chunk @ b.T
        if leave_one_out:
            d2[np.arange(len(chunk)), np.arange(start, start + len(chunk))] = np.inf
        out[start : start + len(chunk)] = np.sqrt(np.maximum(d2.min(1), 0.0))
    return out


class NoveltyScorer:
    """Each call's distance to its nearest reference row, over the reference ``targets`` given (every target of the
    rows by default) and the prompt length (``use_tokens``, where the rows have it), in units of the novelty
    threshold: above 1, the call is novel. Built once per bundle (a leave-one-out pass over the rows, O(rows^2));
    then a call costs one pass over the rows."""

    def __init__(self, reference: ReferenceRows, targets: Sequence[str] | None = None, use_tokens: bool = True) -> None:
        self.targets = list(targets if targets is not None else reference.targets)
        cols = [reference.targets.index(t) for t in self.targets]
        self.use_tokens = use_tokens and reference.input_tokens is not None
        ref = _features(np.asarray(reference.p_correct, dtype=np.float64)[:, cols],
                        np.asarray(reference.input_tokens) if self.use_tokens else None)
        self._mean, self._std = ref.mean(0), np.maximum(ref.std(0), 1e-6)
        self._ref = (ref - self._mean) / self._std
        self.threshold = float(np.quantile(_nearest(self._ref, self._ref, leave_one_out=True), 1 - EXPECTED_SHARE))

    @property
    def features(self) -> list[str]:
        return self.targets + (["input tokens"] if self.use_tokens else [])

    def distances(self, p: np.ndarray, tokens: np.ndarray | None) -> np.ndarray:
        """Distances of calls (``p``: calls x ``targets``; ``tokens``: their prompt tokens) to their nearest
        reference rows, in units of the threshold."""
        x = (_features(np.asarray(p, dtype=np.float64), tokens if self.use_tokens else None) - self._mean) / self._std
        return _nearest(x, self._ref) / max(self.threshold, 1e-12)

    def score(self, p: np.ndarray, tokens: int) -> float:
        """One call's distance (``p``: its P(correct) per ``targets``), in units of the threshold."""
        return float(self.distances(np.asarray(p, dtype=np.float64)[None, :], np.array([float(tokens)]))[0])


def serving_scorer(reference: object, targets: Sequence[str]) -> NoveltyScorer | None:
    """The scorer a router uses on every call, from a bundle report's ``reference`` (None: the bundle has no rows, or
    not for every one of its ``targets``)."""
    rows = reference.get("rows") if isinstance(reference, Mapping) else None
    if rows is None:
        return None
    parsed = ReferenceRows.model_validate(rows)
    if set(targets) - set(parsed.targets):
        return None
    return NoveltyScorer(parsed, targets)


def novelty(reference: ReferenceRows, calls: Sequence[Mapping[str, float]], tokens: Sequence[float | None],
            min_calls: int) -> dict[str, Any] | None:
    """The novel calls among ``calls`` (each one's P(correct) by target, and its prompt's ``tokens``) against the
    reference's rows: their share, its z-score against the 5% expected, a verdict, and each call's distance in units
    of the threshold (in ``distances``, the order of ``calls``) and whether it is novel (``novel_mask``). None when no
    target is predicted for every call."""
    targets = [t for t in reference.targets if all(t in c for c in calls)]
    if not targets or not calls:
        return None
    scorer = NoveltyScorer(reference, targets, use_tokens=all(n is not None for n in tokens))
    distances = scorer.distances(np.array([[c[t] for t in targets] for c in calls], dtype=np.float64),
                                 np.array(tokens, dtype=np.float64) if scorer.use_tokens else None)
    novel = distances > NOVEL_ABOVE
    n, share = len(calls), float(novel.mean())
    z = (share - EXPECTED_SHARE) / np.sqrt(EXPECTED_SHARE * (1 - EXPECTED_SHARE) / n)
    excess = share - EXPECTED_SHARE
    verdict = ("too few calls" if n < min_calls else "stable" if z < Z_BOUND or excess < MODERATE
               else "major shift" if excess >= MAJOR else "moderate shift")
    return {"features": scorer.features, "calls": n, "novel": int(novel.sum()), "share": share,
            "expected_share": EXPECTED_SHARE, "z": float(z), "threshold": scorer.threshold, "verdict": verdict,
            "distances": distances, "novel_mask": novel}
