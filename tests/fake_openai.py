"""An OpenAI-compatible endpoint on 127.0.0.1 for the tests - chat completions (``/chat/completions``) and the
Responses API (``/responses``) -, for the calls litellm's ``mock_response`` cannot stand in for: streams of the
Google GenAI, Anthropic messages and Responses APIs, which litellm serves through a provider's chat or Responses
endpoint but does not mock. Each answer is ``answer from <model>``, streamed as server-sent events word by word when
the request asks for a stream. Point a deployment at it with ``api_base=fake.url``."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler

from loopback import LoopbackServer

_USAGE = {"prompt_tokens": 5, "completion_tokens": 3, "total_tokens": 8}


class FakeOpenAI(LoopbackServer):
    def __init__(self, broken_streams: tuple[str, ...] = (), slow: dict[str, float] | None = None,
                 drip: dict[str, float] | None = None) -> None:
        self.requests: list[dict] = []  # the JSON body of every request, in order
        self.broken_streams = broken_streams  # models whose chat stream fails with an error event before any text
        self.slow = dict(slow or {})  # model -> seconds it waits before answering
        self.drip = dict(drip or {})  # model -> seconds between the events of its streams
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:
                pass

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)) or b"{}")
                fake.requests.append(body)
                time.sleep(fake.slow.get(str(body.get("model")), 0.0))
                if self.path.rstrip("/").endswith("/responses"):
                    fake._respond(self, body)
                else:
                    fake._answer(self, body, fake.broken_streams)

            def handle(self) -> None:
                try:
                    super().handle()
                except (BrokenPipeError, ConnectionResetError):  # the caller stopped reading: so does the answer
                    pass

        super().__init__(Handler, "/v1")
        self.server.daemon_threads, self.server.block_on_close = True, False  # a slow answer does not hold the exit
        self.server.fake = self  # type: ignore[attr-defined]

    @staticmethod
    def _answer(h: BaseHTTPRequestHandler, body: dict, broken: tuple[str, ...] = ()) -> None:
        """A chat completion, or its stream of chunks (an error event for a ``broken`` model)."""
        text = f"answer from {body.get('model')}"
        head = {"id": "chatcmpl-fake", "created": int(time.time()), "model": body.get("model")}
        if not body.get("stream"):
            _send_json(h, {**head, "object": "chat.completion", "choices": [
                {"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
                "usage": _USAGE})
            return
        event = _start_events(h, fake_of(h).drip.get(str(body.get("model")), 0.0))
        if body.get("model") in broken:
            event(json.dumps({"error": {"message": "the model is overloaded", "type": "server_error", "code": 529}}))
            h.wfile.write(b"0\r\n\r\n")
            return
        for i, word in enumerate(text.split(" ")):
            delta = {"role": "assistant", "content": (" " if i else "") + word}
            event(json.dumps({**head, "object": "chat.completion.chunk",
                              "choices": [{"index": 0, "delta": delta, "finish_reason": None}]}))
        event(json.dumps({**head, "object": "chat.completion.chunk",
                          "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}))
        if (body.get("stream_options") or {}).get("include_usage"):  # as OpenAI sends it: a last chunk, no choices
            event(json.dumps({**head, "object": "chat.completion.chunk", "choices": [], "usage": _USAGE}))
        event("[DONE]")
        h.wfile.write(b"0\r\n\r\n")

    @staticmethod
    def _respond(h: BaseHTTPRequestHandler, body: dict) -> None:
        """A Responses API response, or its stream of events (created, output text deltas, completed)."""
        text = f"answer from {body.get('model')}"
        message = {"type": "message", "id": "msg_fake", "status": "completed", "role": "assistant",
                   "content": [{"type": "output_text", "text": text, "annotations": []}]}
        done = {"id": "resp_fake", "object": "response", "created_at": int(time.time()), "status": "completed",
                "model": body.get("model"), "output": [message], "parallel_tool_calls": True, "tool_choice": "auto",
                "tools": [], "usage": {"input_tokens": 5, "output_tokens": 3, "total_tokens": 8}}
        if not body.get("stream"):
            _send_json(h, done)
            return
        event = _start_events(h, fake_of(h).drip.get(str(body.get("model")), 0.0))
        seq = iter(range(1000))
        event(json.dumps({"type": "response.created", "sequence_number": next(seq),
                          "response": {**done, "status": "in_progress", "output": [], "usage": None}}),
              "response.created")
        for i, word in enumerate(text.split(" ")):
            event(json.dumps({"type": "response.output_text.delta", "sequence_number": next(seq), "item_id": "msg_fake",
                              "output_index": 0, "content_index": 0, "delta": (" " if i else "") + word}),
                  "response.output_text.delta")
        event(json.dumps({"type": "response.completed", "sequence_number": next(seq), "response": done}),
              "response.completed")
        h.wfile.write(b"0\r\n\r\n")


def _send_json(h: BaseHTTPRequestHandler, obj: dict) -> None:
    payload = json.dumps(obj).encode()
    h.send_response(200)
    h.send_header("Content-Type", "application/json")
    h.send_header("Content-Length", str(len(payload)))
    h.end_headers()
    h.wfile.write(payload)


def fake_of(h: BaseHTTPRequestHandler) -> FakeOpenAI:
    return h.server.fake  # type: ignore[attr-defined, no-any-return]


def _start_events(h: BaseHTTPRequestHandler, gap: float = 0.0) -> Callable[..., None]:
    """Start a chunked ``text/event-stream`` answer; returns ``event(data, name=None)``, which sends one event
    (``gap`` seconds after the one before)."""
    h.send_response(200)
    h.send_header("Content-Type", "text/event-stream")
    h.send_header("Transfer-Encoding", "chunked")
    h.end_headers()
    sent = [0]

    def event(data: str, name: str | None = None) -> None:
        if gap and sent[0]:
            time.sleep(gap)
        sent[0] += 1
        chunk = ((f"event: {name}\n" if name else "") + f"data: {data}\n\n").encode()
        h.wfile.write(f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n")
        h.wfile.flush()
    return event
