"""A LiteLLM proxy callback for tests: appends what litellm's standard logging payload says about each call
(its routing_decision and litellm's own savings figure) to the file named by $PROXY_SPY_LOG."""

from __future__ import annotations

import json
import os
from typing import Any

from litellm.integrations.custom_logger import CustomLogger


class Spy(CustomLogger):
    async def async_log_success_event(self, kwargs: dict, response_obj: Any, start_time: Any, end_time: Any) -> None:
        slo = kwargs.get("standard_logging_object") or {}
        row = {"routing_decision": (slo.get("metadata") or {}).get("routing_decision"),
               "autorouter_savings": slo.get("autorouter_savings"), "response_cost": slo.get("response_cost"),
               "prompt_tokens": slo.get("prompt_tokens"), "completion_tokens": slo.get("completion_tokens")}
        with open(os.environ["PROXY_SPY_LOG"], "a", encoding="utf-8") as f:
            f.write(json.dumps(row) + "\n")


spy = Spy()
