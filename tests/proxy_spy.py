"""For the LiteLLM proxy in tests: a callback that appends what litellm's standard logging payload says about each
call (its routing_decision and litellm's own savings figure) to the file named by $PROXY_SPY_LOG, and a custom auth
that stands in for litellm's database-backed virtual keys (a key's ``router_settings``), and a callback that holds one
worker's event loop so that a test knows which worker the kernel hands the next connections to."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

from litellm.integrations.custom_logger import CustomLogger
from litellm.proxy._types import UserAPIKeyAuth

#: virtual keys and what an admin set on them (/key/generate on a proxy with a database): router_settings, the key's
#: and its team's metadata
KEYS: dict[str, dict] = {
    "sk-cost-routed": {"router_settings": {"routing_strategy": "cost-based-routing"}},
    "sk-prefill-routed": {"router_settings": {"routing_strategy": "prefill"}},
    "sk-budget-policy": {"metadata": {"prefill": {"tolerance": 1.0}}},
    "sk-team-candidates": {"team_id": "research", "team_metadata": {"prefill": {"candidates": ["generalist"]}}},
    "sk-free-tier": {"metadata": {"prefill": {"max_cost_usd": 6e-5}}},  # a ceiling on each request's estimated cost
}


class Spy(CustomLogger):
    async def async_log_success_event(self, kwargs: dict, response_obj: Any, start_time: Any, end_time: Any) -> None:
        slo = kwargs.get("standard_logging_object") or {}
        row = {"routing_decision": (slo.get("metadata") or {}).get("routing_decision"),
               "autorouter_savings": slo.get("autorouter_savings"), "response_cost": slo.get("response_cost"),
               "prompt_tokens": slo.get("prompt_tokens"), "completion_tokens": slo.get("completion_tokens")}
        with open(os.environ["PROXY_SPY_LOG"], "a", encoding="utf-8") as f:
            f.write(json.dumps(row) + "\n")


spy = Spy()


class Stall(CustomLogger):
    """A request with ``"stall": "<dir>"`` in its body blocks the worker that accepted it (a synchronous wait, as a
    CPU-bound handler would): it writes ``<dir>/stalled`` and returns when ``<dir>/release`` exists (at most 60 s).
    While it waits, that worker's event loop accepts no connection, so every other request goes to another worker."""

    async def async_pre_call_hook(self, user_api_key_dict: Any, cache: Any, data: dict, call_type: Any) -> dict:
        where = data.pop("stall", None)
        if where:
            (Path(where) / "stalled").write_text(str(os.getpid()))
            deadline = time.time() + 60
            while not (Path(where) / "release").exists() and time.time() < deadline:
                time.sleep(0.05)
        return data


stall = Stall()


async def key_auth(request: Any, api_key: str) -> UserAPIKeyAuth:
    """general_settings.custom_auth: every key is let in; the keys above carry their settings."""
    return UserAPIKeyAuth(api_key=api_key or "anonymous", **KEYS.get(api_key, {}))
