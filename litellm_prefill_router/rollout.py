"""Canary rollout arms: which calls the router serves ("router") and which are served as before ("control")."""

from __future__ import annotations

import hashlib
import numbers
import random

from .errors import ConfigurationError


def rollout_arm(share: float, user: str | None = None) -> str | None:
    """``"router"`` with probability ``share``, else ``"control"``; None when ``share`` is 1 (no rollout). With a
    ``user`` (or any key that should keep its arm, e.g. a request id shared by its retries) the draw is a hash of
    it; without, it is random."""
    if share >= 1.0:
        return None
    if user:
        draw = int.from_bytes(hashlib.blake2b(user.encode(), digest_size=8).digest(), "big") / 2.0 ** 64
    else:
        draw = random.random()
    return "router" if draw < share else "control"


def request_arm_of(share: float, user: str | None, trace_id: object) -> str | None:
    """The rollout arm of one request: by its end ``user`` where it names one (each user stays in one arm), else by
    its trace id (kept across its retries and fallbacks), else at random; None without a rollout."""
    return rollout_arm(share, user if user is not None else str(trace_id) if trace_id else None)


def user_key(value: object) -> str | None:
    """A request's OpenAI ``user`` field as a rollout key: a non-empty string or an integer; None otherwise."""
    return str(value) if isinstance(value, (str, int)) and not isinstance(value, bool) and value != "" else None


def checked_serving(shadow: bool, rollout: object, as_before_field: str, as_before: object) -> float:
    """The share ``rollout`` of a router that may also run in shadow mode, checked: a number in [0, 1], not with
    ``shadow`` (which serves everything as before), and ``as_before`` (the setting named ``as_before_field`` that
    says what serves calls as before: ``shadow_target``, ``shadow_tier``, ``shadow_route``) only where something is
    served as before. Raises :class:`~.errors.ConfigurationError` naming the fix."""
    if isinstance(rollout, bool) or not isinstance(rollout, numbers.Real) or not 0.0 <= float(rollout) <= 1.0:
        raise ConfigurationError(f"rollout is the share of calls served by the router's choice, in [0, 1]; got "
                                 f"{rollout!r}")
    if shadow and rollout != 1.0:
        raise ConfigurationError("shadow=True serves every call as before; rollout applies without it - set one")
    if as_before is not None and not shadow and rollout == 1.0:
        raise ConfigurationError(f"{as_before_field} is only used in shadow mode or for the control arm of a rollout: "
                                 "add shadow=True or rollout=<share below 1>")
    return float(rollout)
