"""A WSGI app for tests/test_gunicorn.py: each request's body is a prompt, routed by a router that gunicorn's
master builds and warms once (``--preload``) and its forked workers serve."""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterable
from typing import Any

from conftest import model_list
from litellm_prefill_router import PrefillRouter

router = PrefillRouter(model_list=model_list(), routing_strategy="prefill",
                       routing_strategy_args={"bundle": os.environ["PREFILL_APP_BUNDLE"], "preset": "max-quality",
                                              "decision_log": os.environ["PREFILL_APP_LOG"]})
router.prefill_strategy.predictor.predict_one("warm-up in the master")  # not a completion: see docs/litellm.md


def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    prompt = environ["wsgi.input"].read(int(environ.get("CONTENT_LENGTH") or 0)).decode()
    resp = router.completion(model="auto", messages=[{"role": "user", "content": prompt}])
    body = json.dumps({"pid": os.getpid(), "answer": resp.choices[0].message.content}).encode()
    start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
    return [body]
