"""WSGI and ASGI apps for tests/test_gunicorn.py: each request's body is a prompt, routed by a router that
gunicorn's master builds and warms once (``--preload``) and its forked workers serve (sync workers call ``app`` - the
LiteLLM router - or ``langchain_app`` - a LangChain runnable -, uvicorn's workers ``asgi_app``)."""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterable
from typing import Any

from langchain_core.language_models.fake_chat_models import FakeListChatModel

from conftest import model_list
from langchain_integration import PrefillRouterRunnable
from litellm_prefill_router import PrefillRouter

router = PrefillRouter(model_list=model_list(), routing_strategy="prefill",
                       routing_strategy_args={"bundle": os.environ["PREFILL_APP_BUNDLE"], "preset": "max-quality",
                                              "decision_log": os.environ["PREFILL_APP_LOG"]})
router.prefill_strategy.predictor.predict_one("warm-up in the master")  # not a completion: see docs/litellm.md
# the LangChain runnable's own decision log; the master's warm-up call is its first line
runnable = PrefillRouterRunnable(
    runnables={t: FakeListChatModel(responses=[f"answer from {t}"]) for t in ("math-model", "history-model",
                                                                             "generalist")},
    bundle=os.environ["PREFILL_APP_BUNDLE"], preset="max-quality", decision_log=os.environ["PREFILL_APP_LOG"])
runnable.invoke("warm-up in the master")


def _answer(text: str) -> bytes:
    return json.dumps({"pid": os.getpid(), "answer": text}).encode()


def _wsgi(answer: Callable[[str], str]) -> Callable[..., Iterable[bytes]]:
    def wsgi_app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        body = _answer(answer(environ["wsgi.input"].read(int(environ.get("CONTENT_LENGTH") or 0)).decode()))
        start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
        return [body]
    return wsgi_app


app = _wsgi(lambda prompt: router.completion(
    model="auto", messages=[{"role": "user", "content": prompt}]).choices[0].message.content)
langchain_app = _wsgi(lambda prompt: str(runnable.invoke(prompt).content))


async def asgi_app(scope: dict[str, Any], receive: Callable[..., Any], send: Callable[..., Any]) -> None:
    if scope["type"] == "lifespan":
        while (await receive())["type"] != "lifespan.shutdown":
            await send({"type": "lifespan.startup.complete"})
        await send({"type": "lifespan.shutdown.complete"})
        return
    prompt, more = b"", True
    while more:
        message = await receive()
        prompt, more = prompt + message.get("body", b""), message.get("more_body", False)
    resp = await router.acompletion(model="auto", messages=[{"role": "user", "content": prompt.decode()}])
    body = _answer(resp.choices[0].message.content)
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})
