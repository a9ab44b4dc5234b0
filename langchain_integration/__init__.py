"""LangChain integration: :class:`PrefillRouterRunnable` (needs the ``langchain`` extra)."""

from __future__ import annotations

from .runnable import PrefillRouterRunnable, prompt_from_input

__all__ = ["PrefillRouterRunnable", "prompt_from_input"]
