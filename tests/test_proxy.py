"""The LiteLLM proxy path: config.yaml with routing_strategy: prefill, served on 127.0.0.1."""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from packaging.version import Version

from conftest import (
    COMPLEX_PROMPT,
    HIST_PROMPT,
    MATH_PROMPT,
    SIMPLE_PROMPT,
    always_cheapest,
    cheap_group,
    complexity_router,
    free_port,
    live_model_list,
    model_list,
    rewrite_bundle,
    tier_router,
)

ROOT = Path(__file__).resolve().parents[1]


def _write_config(path: Path, bundle: Path) -> None:
    """The shipped example config (examples/litellm_proxy/config.yaml) with the test bundle's deployments."""
    import yaml

    cfg = yaml.safe_load((ROOT / "examples" / "litellm_proxy" / "config.yaml").read_text())
    cfg["model_list"] = [*model_list(), *model_list(group="budget"), cheap_group(), complexity_router("cheap", "auto"),
                         *model_list(group="flaky", **{"math-model": {"mock_response": "litellm.InternalServerError"}}),
                         *model_list(group="canary"), *tier_groups()]
    cfg["router_settings"]["routing_strategy_args"].update({"bundle": "os.environ/PREFILL_BUNDLE",
                                                            "preset": "max-quality", "reload_interval_s": 0.2})
    # a second bundle-routed group with its own policy (always the cheapest target), through litellm's routing_groups
    cfg["router_settings"]["routing_groups"] = [
        {"group_name": "budget-routing", "models": ["budget"], "routing_strategy": "prefill",
         "routing_strategy_args": {"bundle": str(bundle), "tolerance": 1.0, "learn_output_tokens": True,
                                   "autotune": {"savings": 0.5}}},
        {"group_name": "canary-routing", "models": ["canary"], "routing_strategy": "prefill",  # a canary rollout
         "routing_strategy_args": {"bundle": str(bundle), "preset": "max-quality", "rollout": 0.5,
                                   "shadow_target": "generalist"}}]
    cfg["litellm_settings"]["callbacks"] = [cfg["litellm_settings"]["callbacks"], "proxy_spy.spy"]
    cfg["general_settings"]["custom_auth"] = "proxy_spy.key_auth"  # virtual keys with router_settings
    path.write_text(yaml.safe_dump(cfg))


TIERS = {"SIMPLE": "history-model", "MEDIUM": "math-model", "COMPLEX": "generalist"}


def tier_groups() -> list[dict]:
    """A complexity router ("tiered") whose classifier is the bundle (tests/proxy_tiers.py), and a model group per
    tier answering as its target (the classifier's tiers: TIERS there)."""
    groups = {**{t: f"tier-{t}" for t in TIERS}, "REASONING": "tier-COMPLEX"}
    tiered = tier_router("tiered", "proxy_tiers.classifier", groups)
    canary = tier_router("tiered-canary", "proxy_tiers.canary", groups)  # half the users; the rest by COMPLEX
    down = tier_router("tiered-down", "proxy_tiers.classifier", {t: "tier-down" for t in groups})  # every tier fails
    # litellm's heuristic picks the tier, whose pool is every tier group; the bundle, as a routing plugin, the group
    pooled = tier_router("pooled", None, {t: [f"tier-{x}" for x in TIERS] for t in groups},
                         classifier_type="heuristic", plugins=["proxy_tiers.pool_plugin"])
    # each tier's group serves its bundle target: the router-wide prefill strategy leaves a group the classifier
    # sent the request to as the classifier decided
    tier_deployments = [dep for tier, target in TIERS.items() for dep in model_list(targets=(target,),
                                                                                      group=f"tier-{tier}")]
    return [tiered, canary, down, pooled, *tier_deployments, {"model_name": "tier-down", "litellm_params": {
        "model": "openai/tier-down", "api_key": "sk-test", "mock_response": "litellm.InternalServerError"}}]


def _post(port: int, prompt: str, path: str = "/chat/completions", model: str = "auto",
          key: str = "sk-anything", **params: object) -> tuple[dict, dict[str, str]]:
    """(JSON body, lower-cased response headers) of one request to the proxy, made with virtual key ``key``."""
    payload: dict = {"model": model, "messages": [{"role": "user", "content": prompt}], **params}
    if path == "/v1/responses":
        payload = {"model": "auto", "input": prompt, **params}
    elif path == "/v1/messages":  # Anthropic format (Claude Code and other Anthropic clients)
        payload["max_tokens"] = 64
    elif path.endswith(":generateContent"):  # Google GenAI format (Gemini CLI and other google-genai clients)
        payload = {"contents": [{"role": "user", "parts": [{"text": prompt}]}], **params}
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", data=json.dumps(payload).encode(),
                                 headers={"Content-Type": "application/json", "Authorization": f"Bearer {key}"})
    with urllib.request.urlopen(req, timeout=30) as r:
        return json.loads(r.read()), {k.lower(): v for k, v in r.headers.items()}


def _post_stream(port: int, prompt: str) -> tuple[str, dict[str, str]]:
    """(the streamed answer text, lower-cased response headers) of one streamed chat request."""
    payload = {"model": "auto", "stream": True, "messages": [{"role": "user", "content": prompt}]}
    req = urllib.request.Request(f"http://127.0.0.1:{port}/chat/completions", data=json.dumps(payload).encode(),
                                 headers={"Content-Type": "application/json", "Authorization": "Bearer sk-anything"})
    with urllib.request.urlopen(req, timeout=30) as r:
        chunks = [json.loads(line[6:]) for line in r.read().decode().splitlines()
                  if line.startswith("data: {")]
        headers = {k.lower(): v for k, v in r.headers.items()}
    return "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c.get("choices")), headers


def _post_sse(port: int, prompt: str, path: str) -> tuple[str, dict[str, str]]:
    """(the streamed answer text, lower-cased response headers) of one streamed request of the model group "live" to
    the Anthropic messages, Responses or Google GenAI (``:streamGenerateContent``) endpoint ``path``."""
    payload: dict = {"model": "live", "stream": True, "max_tokens": 32,
                     "messages": [{"role": "user", "content": prompt}]}
    if path == "/v1/responses":
        payload = {"model": "live", "stream": True, "input": prompt}
    elif "GenerateContent" in path:
        payload = {"contents": [{"role": "user", "parts": [{"text": prompt}]}]}
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", data=json.dumps(payload).encode(),
                                 headers={"Content-Type": "application/json", "Authorization": "Bearer sk-anything"})
    with urllib.request.urlopen(req, timeout=30) as r:
        events = [json.loads(line[6:]) for line in r.read().decode().splitlines() if line.startswith("data: {")]
        headers = {k.lower(): v for k, v in r.headers.items()}
    if path == "/v1/responses":
        return "".join(e["delta"] for e in events if e.get("type") == "response.output_text.delta"), headers
    if path == "/v1/messages":
        return "".join(e["delta"].get("text", "") for e in events if e.get("type") == "content_block_delta"), headers
    return "".join(p["text"] for e in events for p in e["candidates"][0]["content"]["parts"]), headers


def test_proxy_hook_module_installs_the_strategy_on_import() -> None:
    import litellm

    import litellm_prefill_router.proxy_hook as hook

    assert getattr(litellm.Router, "_prefill_installed", False)
    assert hook.proxy_handler_instance is not None


def _litellm_exe() -> str:
    """The litellm proxy's CLI, or skip where litellm[proxy] is not installed."""
    exe = shutil.which("litellm", path=str(Path(sys.executable).parent)) or shutil.which("litellm")
    try:
        import fastapi  # noqa: F401
        import uvicorn  # noqa: F401
    except ImportError:
        exe = None
    if exe is None:
        pytest.skip("litellm[proxy] is not installed; the config-loading path is covered by the hook test")
    return exe


@contextlib.contextmanager
def _proxy(cfg: Path, tmp_path: Path, env: dict[str, str], *args: str) -> Iterator[int]:
    """A litellm proxy serving ``cfg`` on a free 127.0.0.1 port (yielded) until the block ends; its workers too."""
    port = free_port()
    env = {**os.environ, "LITELLM_LOCAL_MODEL_COST_MAP": "True", "DISABLE_SCHEMA_UPDATE": "true",
           "LITELLM_LOG": "ERROR", "LITELLM_MASTER_KEY": f"sk-{secrets.token_hex(32)}", **env,
           "PYTHONPATH": os.pathsep.join([str(Path(__file__).parent), os.environ.get("PYTHONPATH", "")])}
    env.pop("DATABASE_URL", None)
    out = tmp_path / "proxy.log"
    with out.open("w") as log:
        proc = subprocess.Popen([_litellm_exe(), "--config", str(cfg), "--host", "127.0.0.1", "--port", str(port),
                                 *args], stdout=log, stderr=subprocess.STDOUT, env=env, cwd=tmp_path,
                                start_new_session=True)
        try:
            deadline = time.time() + 120
            while True:
                try:
                    urllib.request.urlopen(f"http://127.0.0.1:{port}/health/liveliness", timeout=2)
                    break
                except OSError:
                    if proc.poll() is not None or time.time() > deadline:
                        pytest.fail(f"proxy did not start: {out.read_text()[-3000:]}")
                    time.sleep(0.5)
            yield port
        finally:
            with contextlib.suppress(ProcessLookupError):  # a proxy that failed to start has exited already
                os.killpg(proc.pid, signal.SIGTERM)  # the proxy and its worker processes
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)


def test_the_shipped_proxy_config_routes_by_the_bundle_and_says_where_in_headers_on_loopback(
        bundle_dir: Path, tmp_path: Path) -> None:
    """The example config as shipped - the router-wide strategy, no routing groups - with the test bundle's
    deployments and a complexity router whose classifier is the bundle, on every supported litellm (1.110+ included:
    the proxy builds its Router with Router.from_config)."""
    import yaml
    from fake_openai import FakeOpenAI

    fake = FakeOpenAI()  # "live": the same targets answered by a local endpoint (litellm mocks none of these streams)
    live = live_model_list(fake.url, group="live")
    cfg = yaml.safe_load((ROOT / "examples" / "litellm_proxy" / "config.yaml").read_text())
    cfg["model_list"] = [*model_list(), *live, *tier_groups(), cheap_group()]
    cfg["router_settings"]["routing_strategy_args"]["preset"] = "max-quality"
    cfg["general_settings"]["custom_auth"] = "proxy_spy.key_auth"  # the test's keys (no database here)
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(cfg))
    with fake, _proxy(tmp_path / "config.yaml", tmp_path, {"PREFILL_BUNDLE": str(bundle_dir)}) as port:
        for prompt, target in ((MATH_PROMPT, "math-model"), (HIST_PROMPT, "history-model")):
            body, headers = _post(port, prompt)
            assert body["choices"][0]["message"]["content"] == f"answer from {target}"
            assert (headers["x-prefill-target"], headers["x-prefill-reason"]) == (target, "policy")
            assert headers["x-prefill-policy"] == "preset=max-quality"
            resp, resp_headers = _post(port, prompt, "/v1/responses")
            assert resp["output"][0]["content"][0]["text"] == f"answer from {target}"
            assert resp_headers["x-prefill-target"] == target
            msg, msg_headers = _post(port, prompt, "/v1/messages")
            assert msg["content"][0]["text"] == f"answer from {target}" and msg_headers["x-prefill-target"] == target
            gen, gen_headers = _post(port, prompt, "/v1beta/models/auto:generateContent")
            assert gen["text"] == f"answer from {target}" and gen_headers["x-prefill-target"] == target
            streamed, stream_headers = _post_stream(port, prompt)
            assert streamed == f"answer from {target}" and stream_headers["x-prefill-target"] == target
            for path in ("/v1/messages", "/v1/responses", "/v1beta/models/live:streamGenerateContent?alt=sse"):
                text, sse_headers = _post_sse(port, prompt, path)  # streams of the other APIs, as Claude Code sends
                assert (text, sse_headers["x-prefill-target"]) == (f"answer from {target}", target), path
        tier_body, tier_headers = _post(port, MATH_PROMPT, model="tiered")  # the bundle picks the tier
        assert tier_body["choices"][0]["message"]["content"] == "answer from math-model"
        assert (tier_headers["x-prefill-tier"], tier_headers["x-prefill-target"]) == ("MEDIUM", "math-model")
        assert tier_headers["x-litellm-complexity-router-cause"] == "classifier_plugin"
        # every tier failed: litellm's fallback answers from a group the bundle does not route - no decision headers
        plain, plain_headers = _post(port, MATH_PROMPT, model="tiered-down", num_retries=0, fallbacks=["cheap"])
        assert plain["choices"][0]["message"]["content"] == "answer from cheap"
        assert not any(h.startswith("x-prefill-") for h in plain_headers), plain_headers
        for prompt, target in ((MATH_PROMPT, "math-model"), (HIST_PROMPT, "history-model")):
            pooled, pooled_headers = _post(port, prompt, model="pooled")  # the bundle as a tier pool's plugin
            assert pooled["choices"][0]["message"]["content"] == f"answer from {target}"
            assert pooled_headers["x-prefill-target"] == target
        # a virtual key's router_settings.routing_strategy takes precedence (litellm's per-key override, applied by
        # the core's cost-based selector on 1.110+): the cheapest deployment, unrouted; "prefill" routes as configured
        cost, cost_headers = _post(port, HIST_PROMPT, key="sk-cost-routed")
        assert cost["choices"][0]["message"]["content"] == "answer from math-model"
        assert not any(h.startswith("x-prefill-") for h in cost_headers), cost_headers
        _, prefill_headers = _post(port, HIST_PROMPT, key="sk-prefill-routed")
        assert prefill_headers["x-prefill-target"] == "history-model"


def _read_a_little(port: int, path: str, payload: dict) -> str | None:
    """Send a streamed request, read its first bytes, and hang up (a chat UI's stop button); the decision header."""
    import http.client

    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    conn.request("POST", path, json.dumps(payload), {"Content-Type": "application/json",
                                                     "Authorization": "Bearer sk-anything"})
    response = conn.getresponse()
    assert response.status == 200 and response.fp.readline()
    target = response.getheader("x-prefill-target")
    assert conn.sock is not None
    conn.sock.close()
    conn.close()
    return target


def test_a_proxy_stream_whose_client_hangs_up_is_logged_once_as_abandoned_for_every_api(bundle_dir: Path,
                                                                                       tmp_path: Path) -> None:
    """Before, litellm's proxy (1.108+) logged a chat or Responses stream its client left as a success with its
    partial answer, and an Anthropic or Google GenAI one not at all (1.102: none of them)."""
    import yaml
    from fake_openai import FakeOpenAI

    from litellm_prefill_router.litellm_support import installed_litellm

    fake = FakeOpenAI(drip={"math-model": 0.5})  # the math target writes slowly: the client leaves mid-answer
    cfg = yaml.safe_load((ROOT / "examples" / "litellm_proxy" / "config.yaml").read_text())
    cfg["model_list"] = live_model_list(fake.url, group="live")
    log = tmp_path / "decisions.jsonl"
    cfg["router_settings"]["routing_strategy_args"].update(preset="max-quality", decision_log=str(log))
    cfg["general_settings"]["custom_auth"] = "proxy_spy.key_auth"
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(cfg))
    messages = [{"role": "user", "content": MATH_PROMPT}]
    requests = {"/chat/completions": {"model": "live", "stream": True, "messages": messages},
                "/v1/responses": {"model": "live", "stream": True, "input": MATH_PROMPT},
                "/v1/messages": {"model": "live", "stream": True, "max_tokens": 32, "messages": messages}}
    if Version(installed_litellm()) >= Version("1.108"):  # 1.102 logs no generate_content call
        requests["/v1beta/models/live:streamGenerateContent?alt=sse"] = {
            "contents": [{"role": "user", "parts": [{"text": MATH_PROMPT}]}]}
    with fake, _proxy(tmp_path / "config.yaml", tmp_path, {"PREFILL_BUNDLE": str(bundle_dir)}) as port:
        for path, payload in requests.items():
            assert _read_a_little(port, path, payload) == "math-model", path
        text, headers = _post_sse(port, HIST_PROMPT, "/v1/messages")  # read to its end
        deadline = time.time() + 30
        while time.time() < deadline and len(log.read_text().splitlines() if log.exists() else []) < len(requests) + 1:
            time.sleep(0.2)
        time.sleep(3)  # past the grace: no second line for any call
    rows = [json.loads(line) for line in log.read_text().splitlines()]
    assert text == "answer from history-model" and headers["x-prefill-target"] == "history-model"
    whole = [r for r in rows if r["decision"]["target"] == "history-model"]
    assert [r["outcome"]["success"] for r in whole] == [True] and "abandoned" not in whole[0]["outcome"]
    left = [r for r in rows if r["decision"]["target"] == "math-model"]
    assert len(left) == len(requests) and len({r["litellm_call_id"] for r in left}) == len(requests)
    assert all(r["outcome"]["abandoned"] is True and r["outcome"]["success"] is False and r["litellm_call_id"]
               for r in left), left


def test_the_example_proxy_config_routes_with_routing_strategy_prefill_on_loopback(bundle_copy: Path,
                                                                                  tmp_path: Path) -> None:
    bundle_dir = bundle_copy  # a private copy: the test rewrites it to check that the running proxy reloads it
    cfg = tmp_path / "config.yaml"
    _write_config(cfg, bundle_dir)
    spy_log = tmp_path / "spy.jsonl"
    with _proxy(cfg, tmp_path, {"PREFILL_BUNDLE": str(bundle_dir), "PROXY_SPY_LOG": str(spy_log)}) as port:
        math, math_headers = _post(port, MATH_PROMPT)
        hist, hist_headers = _post(port, HIST_PROMPT)
        assert math["choices"][0]["message"]["content"] == "answer from math-model"
        assert hist["choices"][0]["message"]["content"] == "answer from history-model"
        # the client sees where each request went and why
        assert math_headers["x-prefill-target"] == "math-model"
        assert hist_headers["x-prefill-target"] == "history-model"
        assert hist_headers["x-prefill-reason"] == "policy"
        assert hist_headers["x-prefill-policy"] == "preset=max-quality"
        assert 0.0 <= float(hist_headers["x-prefill-p-correct"]) <= 1.0
        assert float(hist_headers["x-prefill-latency-ms"]) > 0
        assert 0.0 <= float(hist_headers["x-prefill-novelty"]) < 1.0  # a prompt like the training data's
        # the Responses API endpoint routes too
        resp, resp_headers = _post(port, MATH_PROMPT, "/v1/responses")
        assert resp["output"][0]["content"][0]["text"] == "answer from math-model"
        assert resp_headers["x-prefill-target"] == "math-model"
        # a history question continuing that response stays with the deployment that has the conversation
        follow, follow_headers = _post(port, HIST_PROMPT, "/v1/responses", previous_response_id=resp["id"])
        assert follow["output"][0]["content"][0]["text"] == "answer from math-model"
        assert follow_headers["x-prefill-reason"] == "pinned: continues a response of math-model (previous_response_id)"
        streamed, stream_headers = _post_stream(port, HIST_PROMPT)  # headers go out before the first chunk
        assert streamed == "answer from history-model" and stream_headers["x-prefill-target"] == "history-model"
        msg, msg_headers = _post(port, HIST_PROMPT, "/v1/messages")
        assert msg["content"][0]["text"] == "answer from history-model"
        assert msg_headers["x-prefill-target"] == "history-model"
        # litellm's own routing composes: a routing_groups entry with its own bundle policy, a complexity router
        # whose hard tier is the bundle-routed group and whose easy tier is a plain group
        budget, budget_headers = _post(port, HIST_PROMPT, model="budget")
        assert budget["choices"][0]["message"]["content"] == "answer from math-model"
        assert budget_headers["x-prefill-policy"] == "tolerance=1"
        easy, easy_headers = _post(port, SIMPLE_PROMPT, model="smart")
        assert easy["choices"][0]["message"]["content"] == "answer from cheap"
        assert "x-prefill-target" not in easy_headers
        hard, hard_headers = _post(port, COMPLEX_PROMPT, model="smart")
        assert hard["choices"][0]["message"]["content"] == f"answer from {hard_headers['x-prefill-target']}"
        # the bundle as the complexity router's classifier (classifier_type: custom): it picks the tier
        tier_body, tier_headers = _post(port, MATH_PROMPT, model="tiered")
        assert tier_body["choices"][0]["message"]["content"] == "answer from math-model"
        assert (tier_headers["x-prefill-tier"], tier_headers["x-prefill-target"]) == ("MEDIUM", "math-model")
        assert tier_headers["x-litellm-complexity-router-cause"] == "classifier_plugin"
        # litellm's escalation keyword moves the classifier's tier up one: the headers name who answered
        up_body, up_headers = _post(port, f"{MATH_PROMPT} LITELLM ESCALATE", model="tiered",
                                    metadata={"prefill": {"pin_model": "math-model"}})
        assert up_body["choices"][0]["message"]["content"] == "answer from generalist"
        assert (up_headers["x-prefill-tier"], up_headers["x-prefill-target"]) == ("MEDIUM", "math-model")
        assert (up_headers["x-prefill-served-tier"], up_headers["x-prefill-served-target"]) == ("COMPLEX", "generalist")
        # litellm's fallbacks move a request whose routed attempt failed to another model group: the headers are
        # that group's decision (its own bundle policy; none for a group the bundle does not route), not the
        # failed attempt's
        for model in ("tiered-down", "flaky"):
            moved, moved_headers = _post(port, MATH_PROMPT, model=model, num_retries=0, fallbacks=["budget"])
            assert moved["choices"][0]["message"]["content"] == "answer from math-model"
            assert moved_headers["x-prefill-policy"] == "tolerance=1" and "x-prefill-tier" not in moved_headers
            assert moved_headers["x-litellm-attempted-fallbacks"] == "1"
            plain, plain_headers = _post(port, MATH_PROMPT, model=model, num_retries=0, fallbacks=["cheap"])
            assert plain["choices"][0]["message"]["content"] == "answer from cheap"
            assert not any(h.startswith("x-prefill-") for h in plain_headers), plain_headers
            msg, msg_headers = _post(port, MATH_PROMPT, "/v1/messages", model=model, num_retries=0,
                                     fallbacks=["cheap"])  # an Anthropic message names no deployment in its own
            assert msg["content"][0]["text"] == "answer from cheap" and "_hidden_params" not in msg
            assert not any(h.startswith("x-prefill-") for h in msg_headers), msg_headers
        # the bundle as a routing plugin in a complexity router's tier pool: it narrows the pool to its target's group
        for prompt, target in ((MATH_PROMPT, "math-model"), (HIST_PROMPT, "history-model")) * 2:
            pooled, pooled_headers = _post(port, prompt, model="pooled")
            assert pooled["choices"][0]["message"]["content"] == f"answer from {target}"
            assert pooled_headers["x-prefill-target"] == target and "x-prefill-tier" not in pooled_headers
        # a canary classifier: the request body's user keeps one arm; the control arm is served by the shadow tier
        arms: dict[str, set[str]] = {}
        for u in [f"user-{i}" for i in range(6)] * 2:
            body, headers = _post(port, MATH_PROMPT, model="tiered-canary", user=u)
            arms.setdefault(u, set()).add(headers["x-prefill-arm"])
            assert body["choices"][0]["message"]["content"] == \
                ("answer from generalist" if headers["x-prefill-arm"] == "control" else "answer from math-model")
        assert all(len(a) == 1 for a in arms.values()) and set.union(*arms.values()) == {"router", "control"}
        # a virtual key's router_settings.routing_strategy takes precedence (litellm's per-key override): cost-based
        # serves the cheapest deployment, unrouted by the bundle; "prefill" there routes as configured
        cost, cost_headers = _post(port, HIST_PROMPT, key="sk-cost-routed")
        assert cost["choices"][0]["message"]["content"] == "answer from math-model"
        assert "x-prefill-target" not in cost_headers
        _, prefill_headers = _post(port, HIST_PROMPT, key="sk-prefill-routed")
        assert prefill_headers["x-prefill-target"] == "history-model"
        # a key's metadata.prefill policy replaces the request's; a team's candidates restrict its keys' routes
        _, budget_key_headers = _post(port, HIST_PROMPT, key="sk-budget-policy")
        assert budget_key_headers["x-prefill-policy"] == "tolerance=1"
        assert budget_key_headers["x-prefill-target"] == "math-model"
        _, team_headers = _post(port, MATH_PROMPT, key="sk-team-candidates")
        assert team_headers["x-prefill-target"] == "generalist"
        # a key's cost ceiling: history-model (8e-5 USD for this prompt) is over it, math-model (5.5e-5) within; a
        # request asking for more gets the key's ceiling, one asking for less than anything costs goes to the cheapest
        free = [_post(port, HIST_PROMPT, key="sk-free-tier", metadata={"prefill": {"max_cost_usd": cap}})[1]
                for cap in (1.0, 1e-9)]
        assert [(h["x-prefill-target"], h["x-prefill-reason"].split(":")[0]) for h in free] == \
            [("math-model", "policy"), ("math-model", "over budget")]
        # a request's bad routing settings are its own error: 400 naming the setting, not a 500, and not retried
        for bad, said in (({"tolerence": 0.1}, "did you mean 'tolerance'"), ({"preset": "cheapest"}, "unknown policy "
                          "preset 'cheapest'"), ({"candidates": ["gpt-9"]}, "unknown targets ['gpt-9']")):
            with pytest.raises(urllib.error.HTTPError) as refused:
                _post(port, HIST_PROMPT, metadata={"prefill": bad})
            assert refused.value.code == 400, bad
            assert said in json.loads(refused.value.read())["error"]["message"], bad
        # a retry of a request whose chosen target failed goes to the next-best target, not the same one again
        flaky, flaky_headers = _post(port, MATH_PROMPT, model="flaky", num_retries=1)
        assert flaky_headers["x-prefill-reason"] == "retry: math-model failed this request"
        assert flaky["choices"][0]["message"]["content"] == f"answer from {flaky_headers['x-prefill-target']}"
        assert flaky_headers["x-prefill-target"] != "math-model"
        # a canary rollout: the OpenAI `user` field puts each end user in one arm, named in x-prefill-arm
        served = {}
        for u in [f"user-{i}" for i in range(10)] + ["user-0", "user-1"]:
            body, headers = _post(port, MATH_PROMPT, model="canary", user=u)
            served.setdefault(u, set()).add((headers["x-prefill-arm"], body["choices"][0]["message"]["content"]))
        assert all(len(arms) == 1 for arms in served.values())  # a returning user is served the same way
        assert {a for arms in served.values() for a in arms} == {("router", "answer from math-model"),
                                                                  ("control", "answer from generalist")}
        # a retrained bundle written over the served one is picked up by the running proxy (reload_interval_s)
        rewrite_bundle(bundle_dir, always_cheapest)
        deadline, target = time.time() + 30, ""
        while time.time() < deadline and target != "math-model":
            body, headers = _post(port, HIST_PROMPT)
            target = headers["x-prefill-target"]
            assert body["choices"][0]["message"]["content"] == f"answer from {target}"
            time.sleep(0.1)
        assert target == "math-model"
        # litellm's spend logging sees each decision, and prices its savings against the dearest candidate
        # (generalist, 9e-7/token) with the deployments' own prices
        deadline = time.time() + 30
        while time.time() < deadline and (not spy_log.exists() or len(spy_log.read_text().splitlines()) < 2):
            time.sleep(0.2)
        logged = [json.loads(x) for x in spy_log.read_text().splitlines()]
        first = logged[0]
        assert first["routing_decision"]["routed_model"] == "math-model"
        assert first["routing_decision"]["savings_baseline_model"] == "openai/generalist"
        expected = 9e-7 * (first["prompt_tokens"] + first["completion_tokens"]) - first["response_cost"]
        assert first["autorouter_savings"] == pytest.approx(expected) and expected > 0


def test_the_example_routing_plugin_config_narrows_each_request_under_the_proxys_own_strategy(bundle_dir: Path,
                                                                                               tmp_path: Path) -> None:
    """examples/litellm_routing_plugin: router_settings.plugins names the plugin (imported from the config's
    directory); latency-based routing picks among the deployments of the bundle's pick."""
    import yaml

    here = ROOT / "examples" / "litellm_routing_plugin"
    cfg = yaml.safe_load((here / "config.yaml").read_text())
    assert cfg["router_settings"] == {"routing_strategy": "latency-based-routing", "plugins": ["prefill_plugin.plugin"]}
    cfg["model_list"] = model_list()  # the test bundle's targets
    cfg["general_settings"]["custom_auth"] = "proxy_spy.key_auth"  # any key is let in
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(cfg))
    shutil.copy(here / "prefill_plugin.py", tmp_path / "prefill_plugin.py")
    log = tmp_path / "logs" / "plugin.jsonl"
    with _proxy(tmp_path / "config.yaml", tmp_path, {"PREFILL_BUNDLE": str(bundle_dir),
                                                     "PREFILL_DECISION_LOG": str(log)}) as port:
        for prompt in (MATH_PROMPT, HIST_PROMPT, MATH_PROMPT):
            body, headers = _post(port, prompt)
            assert body["choices"][0]["message"]["content"] == f"answer from {headers['x-prefill-target']}"
            assert headers["x-prefill-policy"] == "preset=balanced" and headers["x-prefill-reason"] == "policy"
        deadline = time.time() + 30
        while time.time() < deadline and (not log.exists() or len(log.read_text().splitlines()) < 3):
            time.sleep(0.2)
    rows = [json.loads(line) for line in log.read_text().splitlines()]
    assert len(rows) == 3 and all(r["outcome"]["success"] and r["decision"]["plugin_models"] for r in rows)


def _metric_sums(exposition: str) -> dict[str, dict[tuple[str, ...], float]]:
    """Prometheus text exposition -> {metric: {(target, reason or outcome): value}} for prefill_router_* totals."""
    out: dict[str, dict[tuple[str, ...], float]] = {}
    for line in exposition.splitlines():
        if not line.startswith("prefill_router_") or "{" not in line:
            continue
        name, rest = line.split("{", 1)
        labels, value = rest.rsplit("} ", 1)
        named = dict((k, v.strip('"')) for k, v in (kv.split("=", 1) for kv in labels.split(",") if kv))
        key = (named.get("target", ""), named.get("reason") or named.get("outcome") or "")
        out.setdefault(name, {})[key] = out.get(name, {}).get(key, 0.0) + float(value)
    return out


def test_a_multi_worker_proxy_routes_in_every_worker_logs_a_file_per_process_and_sums_their_metrics(bundle_dir: Path,
                                                                                 tmp_path: Path) -> None:
    import yaml

    from litellm_prefill_router.log_stats import summarize

    pytest.importorskip("prometheus_client", reason="the `metrics` extra is not installed")
    cfg = yaml.safe_load((ROOT / "examples" / "litellm_proxy" / "config.yaml").read_text())
    cfg["model_list"] = model_list()
    cfg["general_settings"]["custom_auth"] = "proxy_spy.key_auth"  # any key is let in
    cfg["router_settings"]["routing_strategy_args"] = {"bundle": str(bundle_dir), "preset": "max-quality",
                                                       "decision_log": str(tmp_path / "logs" / "d-{pid}.jsonl"),
                                                       "metrics": True}
    # litellm's prometheus callback serves /metrics; with workers, prometheus_client's multiprocess mode sums them
    cfg["litellm_settings"]["callbacks"] = [cfg["litellm_settings"]["callbacks"], "proxy_spy.stall", "prometheus"]
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(cfg))
    logs, stall, prom = tmp_path / "logs", tmp_path / "stall", tmp_path / "prometheus"
    stall.mkdir()
    prom.mkdir()

    def logged() -> list[dict]:
        return [json.loads(x) for f in logs.glob("d-*.jsonl") for x in f.read_text().splitlines()]

    prompts = [MATH_PROMPT, HIST_PROMPT] * 8
    with _proxy(tmp_path / "config.yaml", tmp_path, {"PROMETHEUS_MULTIPROC_DIR": str(prom)}, "--num_workers", "2") \
            as port, ThreadPoolExecutor(9) as pool:
        # the kernel hands a connection to whichever worker accepts first, and one worker may well take them all; so
        # one request holds the worker that accepted it, and the batch sent meanwhile can only go to the other one
        held = pool.submit(_post, port, MATH_PROMPT, stall=str(stall))
        deadline = time.time() + 60
        while not (stall / "stalled").exists():
            assert time.time() < deadline and not held.done(), "the held request never reached a worker"
            time.sleep(0.05)
        held_pid = int((stall / "stalled").read_text())
        answers = list(pool.map(lambda p: _post(port, p), prompts))
        (stall / "release").touch()
        answers.append(held.result(timeout=60))
        for prompt, (body, headers) in zip([*prompts, MATH_PROMPT], answers):
            want = "math-model" if prompt == MATH_PROMPT else "history-model"
            assert headers["x-prefill-target"] == want
            assert body["choices"][0]["message"]["content"] == f"answer from {want}"
        deadline = time.time() + 30
        while time.time() < deadline and len(logged()) < len(answers):
            time.sleep(0.2)
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics/", timeout=30) as r:
            exposition = r.read().decode()
    # the routing metrics of both workers on litellm's /metrics: every decision and call counted once
    counted = _metric_sums(exposition)
    assert counted["prefill_router_decisions_total"] == {("math-model", "policy"): 9, ("history-model", "policy"): 8}
    assert counted["prefill_router_calls_total"] == {("math-model", "success"): 9, ("history-model", "success"): 8}
    # every call logged once, in the file of the worker that served it: the held one by its worker, the batch by the
    # other
    by_pid = {int(f.stem[2:]): len(f.read_text().splitlines()) for f in logs.glob("d-*.jsonl")}
    assert len(by_pid) == 2 and by_pid[held_pid] == 1 and os.getpid() not in by_pid
    assert sorted(by_pid.values()) == [1, len(prompts)]
    assert summarize(logged())["calls"] == len(answers)



def test_a_proxy_run_with_gunicorn_routes_through_workers_it_recycles(bundle_dir: Path, tmp_path: Path) -> None:
    """``litellm --run_gunicorn`` (its master preloads the app and forks the workers) with
    ``--max_requests_before_restart``, as litellm suggests against memory growth: every request is routed by the
    bundle, also by the workers started in place of recycled ones, and logged once by the worker that served it."""
    pytest.importorskip("gunicorn")
    import yaml

    cfg = yaml.safe_load((ROOT / "examples" / "litellm_proxy" / "config.yaml").read_text())
    cfg["model_list"] = model_list()
    cfg["router_settings"]["routing_strategy_args"] = {"bundle": str(bundle_dir), "preset": "max-quality",
                                                       "decision_log": str(tmp_path / "logs" / "d-{pid}.jsonl")}
    cfg["general_settings"]["custom_auth"] = "proxy_spy.key_auth"
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(cfg))
    # litellm 1.110 waits GRACEFUL_SHUTDOWN_TIMEOUT (20 s) at the end for requests in flight; there are none
    with _proxy(tmp_path / "config.yaml", tmp_path, {"GRACEFUL_SHUTDOWN_TIMEOUT": "2"}, "--run_gunicorn",
                "--num_workers", "2", "--max_requests_before_restart", "3") as port:
        for prompt, target in [(MATH_PROMPT, "math-model"), (HIST_PROMPT, "history-model")] * 5:
            body, headers = _post(port, prompt)
            assert (headers["x-prefill-target"], body["choices"][0]["message"]["content"]) == (
                target, f"answer from {target}")
            if prompt == HIST_PROMPT:
                time.sleep(1.1)  # a uvicorn worker checks its request count once a second
        deadline = time.time() + 30
        while time.time() < deadline and sum(
                len(f.read_text().splitlines()) for f in (tmp_path / "logs").glob("d-*.jsonl")) < 10:
            time.sleep(0.2)
    by_pid = {int(f.stem[2:]): len(f.read_text().splitlines()) for f in (tmp_path / "logs").glob("d-*.jsonl")}
    assert sum(by_pid.values()) == 10 and len(by_pid) >= 3, by_pid  # workers were recycled and replaced

def test_a_proxy_with_a_database_applying_its_router_settings_again_keeps_its_prefill_strategies(
        bundle_dir: Path, tmp_path: Path) -> None:
    """Every 30 s a proxy with a database applies its config's router_settings again (litellm's own ProxyConfig code,
    run with a stand-in database): the prefill strategies the config built keep serving - before, litellm 1.102 and
    1.110 built the router-wide one anew each time and 1.102-1.110 every prefill routing group's, forgetting what they
    had learned."""
    pytest.importorskip("litellm.proxy.proxy_server")
    import yaml

    args = {"bundle": "os.environ/PREFILL_BUNDLE", "preset": "max-quality"}
    cfg = {"model_list": [*model_list(), *model_list(group="budget")],
           "router_settings": {"routing_strategy": "prefill", "routing_strategy_args": args,
                               "routing_groups": [{"group_name": "routed", "models": ["budget"],
                                                   "routing_strategy": "prefill", "routing_strategy_args": args}]}}
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(cfg))
    env = {**os.environ, "PREFILL_BUNDLE": str(bundle_dir), "LITELLM_LOCAL_MODEL_COST_MAP": "True",
           "PYTHONPATH": os.pathsep.join([str(Path(__file__).parent), os.environ.get("PYTHONPATH", "")])}
    env.pop("DATABASE_URL", None)
    out = subprocess.run([sys.executable, str(Path(__file__).parent / "proxy_db_reapply.py"),
                          str(tmp_path / "config.yaml")], capture_output=True, text=True, env=env, timeout=180,
                         cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    strategies = json.loads(out.stdout.strip().splitlines()[-1])
    assert strategies == {name: {"kept": True, "bundle": str(bundle_dir)}
                          for name in ("router", "routing group routed")}


def test_decision_headers_are_single_line_ascii_and_absent_for_requests_the_strategy_did_not_route() -> None:
    from litellm_prefill_router.records import DECISION_KEY, decision_headers

    decision = {"target": "math-model", "reason": "fallback: inference failed (na\u00efve\nerror)",
                "policy": {"kind": "lambda", "value": 0.5, "preset": None}, "p_correct": {"math-model": 0.25},
                "latency_ms": 3.25}
    headers = decision_headers({"litellm_metadata": {DECISION_KEY: decision}})
    assert headers == {"x-prefill-target": "math-model", "x-prefill-reason": "fallback: inference failed (na?ve?error)",
                       "x-prefill-policy": "lambda=0.5", "x-prefill-latency-ms": "3.2", "x-prefill-p-correct": "0.2500"}
    assert decision_headers({"metadata": {"model_group": "embed"}}) is None
