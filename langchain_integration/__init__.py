"""LangChain integration: :class:`PrefillRouterRunnable` (needs the ``langchain`` extra)."""

from __future__ import annotations

from .inputs import prompt_from_input
from .runnable import PrefillRouterRunnable

__all__ = ["PrefillRouterRunnable", "prompt_from_input"]
