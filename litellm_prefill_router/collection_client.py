"""The client ``prefill-router collect`` and ``judge`` call model groups through: a plain ``litellm.Router``
without a routing strategy or retries of its own. One of the litellm-facing modules (see ``router``)."""

from __future__ import annotations

import functools
import logging
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, cast

import litellm

from .costs import Price
from .decision_logger import flush_logging
from .deployments import deployment_model, deployment_price

logger = logging.getLogger("litellm_prefill_router")


# -- data collection (``prefill-router collect``) -----------------------------
_RETRYABLE = (litellm.RateLimitError, litellm.Timeout, litellm.APIConnectionError, litellm.InternalServerError,
              litellm.ServiceUnavailableError, litellm.BadGatewayError)


@dataclass(frozen=True)
class CallResult:
    text: str
    input_tokens: int
    output_tokens: int
    cost: float | None  # USD as litellm computed it; None when litellm does not know the price


class CollectionClient:
    """Sends one prompt to one model group through a plain ``litellm.Router`` (no routing strategy, no
    retries of its own: the collector retries with back-off and keeps the books)."""

    def __init__(self, model_list: list[dict], timeout: float | None = None) -> None:
        self.model_list = model_list
        self.router = litellm.Router(model_list=model_list, num_retries=0, timeout=timeout)

    def groups(self) -> list[str]:
        return sorted({str(d.get("model_name")) for d in self.model_list})

    def prices(self, group: str) -> list[Price]:
        """The prices of the group's deployments that have one (see :func:`deployment_price`), in config order."""
        out = []
        for dep in self.model_list:
            if dep.get("model_name") == group:
                model = deployment_model(dep)
                price = deployment_price(dep, functools.partial(litellm.get_model_info, model))
                if price is not None:
                    out.append(price)
        return out

    def count_tokens(self, group: str, messages: list[dict]) -> int:
        model = next((deployment_model(d) for d in self.model_list if d.get("model_name") == group), "")
        try:
            return int(litellm.token_counter(model=model, messages=messages))
        except Exception:  # noqa: BLE001 - fall back to ~4 characters per token
            return max(1, sum(len(str(m.get("content") or "")) for m in messages) // 4)

    async def complete(self, group: str, messages: list[dict], **params: Any) -> CallResult:
        resp: Any = await self.router.acompletion(model=group, messages=cast(Any, messages), **params)
        text = (resp.choices[0].message.content or "") if resp.choices else ""
        usage = getattr(resp, "usage", None)
        cost = (getattr(resp, "_hidden_params", None) or {}).get("response_cost")
        return CallResult(str(text), int(getattr(usage, "prompt_tokens", 0) or 0),
                          int(getattr(usage, "completion_tokens", 0) or 0), None if cost is None else float(cost))

    async def complete_text(self, group: str, messages: list[dict], max_tokens: int | None = None) -> str:
        return (await self.complete(group, messages, **({} if max_tokens is None else {"max_tokens": max_tokens}))).text

    async def aclose(self) -> None:
        await flush_logging()

    @staticmethod
    def retry_after(err: BaseException) -> float | None:
        """None when ``err`` is not worth retrying (bad request, auth, ...); else the server's Retry-After in
        seconds (0.0 when it gave none: the caller backs off exponentially)."""
        if not isinstance(err, _RETRYABLE):
            return None
        headers = getattr(getattr(err, "response", None), "headers", None) or getattr(err, "litellm_response_headers",
                                                                                       None)
        try:
            value = headers.get("retry-after") if headers is not None else None
        except AttributeError:
            return 0.0
        if value is None:
            return 0.0
        try:
            return max(0.0, float(value))
        except (TypeError, ValueError):
            pass
        try:  # the HTTP-date form: "Wed, 21 Oct 2026 07:28:00 GMT"
            from email.utils import parsedate_to_datetime

            return max(0.0, (parsedate_to_datetime(str(value)) - datetime.now(timezone.utc)).total_seconds())
        except (TypeError, ValueError):
            return 0.0
