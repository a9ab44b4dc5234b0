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
