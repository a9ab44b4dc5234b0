"""Canary rollout arms: which calls the router serves ("router") and which are served as before ("control")."""

from __future__ import annotations

import hashlib
import random


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


def user_key(value: object) -> str | None:
    """A request's OpenAI ``user`` field as a rollout key: a non-empty string or an integer; None otherwise."""
    return str(value) if isinstance(value, (str, int)) and not isinstance(value, bool) and value != "" else None
