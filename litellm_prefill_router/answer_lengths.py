"""Answer lengths learned from the answers (``learn_output_tokens``): each target's expected output tokens.

A decision's cost estimate for a target is its input price x the prompt's tokens + its output price x the target's
expected answer length. The bundle carries the mean answer length of its training data per target (256 tokens where
the data has none); the answers a deployment gives in production may be far longer or shorter - and output tokens
usually cost several times input tokens - so estimates, the policy's cost trade-off and an ``autotune`` budget in
USD can be off by that factor (``prefill-router stats`` shows the ratio of estimated to actual cost per target).

With ``learn_output_tokens`` the router keeps, per model group, the completion tokens of each target's latest
:data:`WINDOW` successful answers (litellm's usage, as the decision log records it) and estimates a target's answer
length as their mean once it has :data:`MIN_ANSWERS` of them. A target with fewer answers (one the policy seldom picks)
gets its bundle length scaled by the group's ratio of observed to bundle lengths over the targets that did answer -
the traffic's answers tend to be longer or shorter for every model alike - and its bundle length before the group has
:data:`MIN_ANSWERS` answers in all. A request's own ``max_tokens`` still caps the estimate. At start the router reads
the latest answers from its decision log, so a restart keeps what it learned.
"""

from __future__ import annotations

import logging
import threading
import uuid
import weakref
from collections import deque
from collections.abc import Collection, Iterable, Mapping
from typing import Any

from .forking import unheld_in_child
from .jsonl import logs_of, records_from_end
from .records import answered_by

logger = logging.getLogger("litellm_prefill_router")

#: answers remembered per model group and target
WINDOW = 500
#: answers a target (or, for the scaling of the others, its model group) needs before its length is used
MIN_ANSWERS = 20

_LEARNERS: weakref.WeakValueDictionary[str, AnswerLengths] = weakref.WeakValueDictionary()


def _token_count(value: object) -> int | None:
    """A completion-token count as usage reports it (an int > 0); None for anything else - 0 included: an answer has
    tokens, so 0 is usage that was not reported (litellm 1.108 reports a streamed chat call that did not ask for
    ``stream_options.include_usage`` as 0 tokens; the decision logger counts those itself), which would teach the
    target's answers cost nothing to write."""
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else None


def learner(key: object) -> AnswerLengths | None:
    """The live :class:`AnswerLengths` a decision-log target names (None: gone, or never registered)."""
    return _LEARNERS.get(str(key)) if key else None


class AnswerLengths:
    """Each (model group, target)'s latest answer lengths and the expected lengths they give (module docstring)."""

    def __init__(self, window: int = WINDOW, min_answers: int = MIN_ANSWERS) -> None:
        self.window, self.min_answers = window, min_answers
        self.key = uuid.uuid4().hex  # how a finished call's decision-log row finds this learner
        _LEARNERS[self.key] = self
        self._lock = unheld_in_child(threading.Lock())
        self._answers: dict[tuple[str | None, str], deque[int]] = {}
        self._sums: dict[tuple[str | None, str], int] = {}

    def observe(self, model_group: str | None, target: str, completion_tokens: object) -> None:
        """One successful answer of ``target`` in ``model_group`` and its completion tokens (ignored unless an int)."""
        tokens = _token_count(completion_tokens)
        if tokens is None:
            return
        key = (model_group, target)
        with self._lock:
            answers = self._answers.get(key)
            if answers is None:
                answers = self._answers[key] = deque(maxlen=self.window)
                self._sums[key] = 0
            if len(answers) == self.window:
                self._sums[key] -= answers[0]
            answers.append(tokens)
            self._sums[key] += tokens

    def lengths_for(self, model_group: str | None, bundle_lengths: Mapping[str, float]) -> dict[str, float]:
        """Each target's expected answer length in ``model_group``: the mean of its latest answers, else its bundle
        length scaled by the group's observed-to-bundle ratio, else its bundle length."""
        with self._lock:
            seen = {t: (self._sums[(g, t)], len(a)) for (g, t), a in self._answers.items()
                    if g == model_group and t in bundle_lengths and a}
        n = sum(k for _, k in seen.values())
        bundle_total = sum(k * bundle_lengths[t] for t, (_, k) in seen.items())
        ratio = sum(s for s, _ in seen.values()) / bundle_total if n >= self.min_answers and bundle_total > 0 else 1.0
        return {t: seen[t][0] / seen[t][1] if t in seen and seen[t][1] >= self.min_answers else length * ratio
                for t, length in bundle_lengths.items()}

    def status(self) -> dict[str, dict[str, dict[str, float]]]:
        """Per model group and target: answers remembered and their mean length."""
        out: dict[str, dict[str, dict[str, float]]] = {}
        with self._lock:
            for (g, t), a in self._answers.items():
                out.setdefault(str(g), {})[t] = {"answers": len(a), "mean_tokens": self._sums[(g, t)] / len(a)}
        return out

    def seed(self, records: Iterable[Mapping[str, Any]], model_groups: Collection[str] | None) -> int:
        """Fill the windows from logged calls, the newest first (:func:`~.jsonl.records_from_end`): the successful
        answers in ``model_groups`` (None: every group) with their completion tokens, each for the target that
        answered it (``records.answered_by``: none for a declined call whose answering model is not known). Returns
        how many answers were taken."""
        found: dict[tuple[str, str], list[int]] = {}
        taken = 0
        for read, rec in enumerate(records):
            if read >= 20 * self.window * max(1, len(model_groups or ())):
                break  # as far back as is worth reading
            d, outcome = rec.get("decision"), rec.get("outcome")
            if not isinstance(d, Mapping) or not isinstance(outcome, Mapping) or not outcome.get("success") or \
                    (model_groups is not None and str(d.get("model_group")) not in model_groups):
                continue
            target, tokens = answered_by(d), _token_count(outcome.get("completion_tokens"))
            if not target or tokens is None:
                continue
            answers = found.setdefault((str(d.get("model_group")), str(target)), [])
            if len(answers) < self.window:
                answers.append(tokens)
                taken += 1
        for (group, target), answers in found.items():
            for tokens in reversed(answers):  # oldest first, as they were observed
                self.observe(group, target, tokens)
        return taken

    def seed_from_log(self, template: str | None, model_groups: Collection[str] | None) -> int:
        """:meth:`seed` from the files a ``decision_log`` template has written (all days and processes); a file that
        cannot be read is skipped with a warning."""
        taken = self.seed(records_from_end(logs_of(template)), model_groups) if template else 0
        if taken:
            logger.info("prefill router: answer lengths seeded from the decision log: %s", self.status())
        return taken
