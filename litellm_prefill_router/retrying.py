"""Retrying a call that failed for a reason worth retrying (rate limit, timeout, 5xx): Retry-After honoured, else
exponential back-off with jitter. Used by ``collect`` (the targets' calls) and ``judge`` (the judge's)."""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar, cast

logger = logging.getLogger(__name__)
T = TypeVar("T")


@dataclass(frozen=True)
class RetryPolicy:
    """How a call that failed for a reason worth retrying (rate limit, timeout, 5xx) is tried again: up to
    ``max_retries`` more times, after the server's Retry-After or an exponential back-off with jitter."""

    max_retries: int = 5
    backoff_base_s: float = 1.0
    backoff_max_s: float = 60.0


async def with_retries(call: Callable[[], Awaitable[T]], retry_after: Callable[[BaseException], float | None],
                       policy: RetryPolicy, what: str, on_attempt: Callable[[], None] | None = None
                       ) -> tuple[T | None, BaseException | None, int]:
    """(result, None, attempts) or (None, the last error, attempts). ``retry_after(err)``: None when ``err`` is
    not worth retrying, else the seconds the server asked to wait (0.0: none given)."""
    err: BaseException | None = None
    for attempt in range(policy.max_retries + 1):
        if on_attempt is not None:
            on_attempt()
        try:
            return await call(), None, attempt + 1
        except Exception as e:  # noqa: BLE001 - classified below, recorded by the caller, never lost silently
            err = e
            wait = retry_after(e)
            if wait is None or attempt == policy.max_retries:
                return None, err, attempt + 1
            delay = min(policy.backoff_max_s, max(wait, policy.backoff_base_s * 2 ** attempt)) * (0.5 + random.random())
            logger.info("%s: %s; retry %d/%d in %.1fs", what, type(e).__name__, attempt + 1, policy.max_retries, delay)
            await asyncio.sleep(delay)
    return None, err, policy.max_retries + 1


async def retried(call: Callable[[], Awaitable[T]], retry_after: Callable[[BaseException], float | None],
                  policy: RetryPolicy, what: str, on_attempt: Callable[[], None] | None = None) -> T:
    """:func:`with_retries` for a caller that wants the result or the last error raised (e.g. a judge's call)."""
    result, err, _ = await with_retries(call, retry_after, policy, what, on_attempt)
    if err is not None:
        raise err
    return cast(T, result)
