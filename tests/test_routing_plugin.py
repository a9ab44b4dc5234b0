"""The prefill router as a litellm routing plugin (Router(plugins=[...]), complexity_router_config.plugins), through
real litellm Routers with mock deployments."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import litellm
import pytest

from conftest import (
    HIST_PROMPT,
    MATH_PROMPT,
    PRICES,
    cheap_group,
    live_model_list,
    model_list,
    read_a_chunk_and_drop,
    stream_of,
    streamed_text,
    tier_router,
)
from litellm_prefill_router import flush_logging
from litellm_prefill_router.errors import ConfigurationError
from litellm_prefill_router.log_stats import summarize
from litellm_prefill_router.records import decision_headers
from litellm_prefill_router.routing_plugin import PrefillRoutingPlugin


def user(text: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": text}]


async def test_the_plugin_narrows_each_group_to_the_picked_targets_deployments_under_litellms_own_strategy(
        bundle_dir: Path, tmp_path: Path) -> None:
    log = tmp_path / "plugin.jsonl"
    plugin = PrefillRoutingPlugin(str(bundle_dir), preset="max-quality", decision_log=str(log))
    r = litellm.Router(model_list=[*model_list(), cheap_group()], routing_strategy="latency-based-routing",
                       plugins=[plugin])
    for prompt, target in ((MATH_PROMPT, "math-model"), (HIST_PROMPT, "history-model")):
        resp = await r.acompletion(model="auto", messages=user(prompt))
        assert resp.choices[0].message.content == f"answer from {target}"
        d = resp._hidden_params["prefill_routing"]
        assert (d["target"], d["reason"], d["policy"]["preset"]) == (target, "policy", "max-quality")
        assert d["plugin_models"] == [f"openai/{target}"] and set(d["p_correct"]) == set(plugin.prices)
    # a group none of whose models the bundle knows: litellm routes it as without the plugin, with no decision
    plain = await r.acompletion(model="cheap", messages=user(MATH_PROMPT))
    assert plain.choices[0].message.content == "answer from cheap" and "prefill_routing" not in plain._hidden_params
    await flush_logging()
    rows = [json.loads(line) for line in log.read_text().splitlines()]
    assert [(x["decision"]["target"], x["outcome"]["success"], x["outcome"]["model"]) for x in rows] == \
        [("math-model", True, "math-model"), ("history-model", True, "history-model")]


async def test_a_complexity_routers_tier_pool_is_narrowed_to_the_model_group_of_the_picked_target(
        bundle_dir: Path) -> None:
    """complexity_router_config.plugins: the candidates are the tier's model groups, mapped by ``targets``."""
    groups = {"hist": "history-model", "maths": "math-model", "gen": "generalist"}
    # litellm 1.109's first complexity-routed call logs its success by importing its proxy server on the event loop
    # (2.8 s on 2 cores, once per process): a call routed meanwhile is not declined at the 2.5 s default timeout
    plugin = PrefillRoutingPlugin(str(bundle_dir), targets=groups, preset="max-quality")
    pool = list(groups)
    deployments = [dep for g, t in groups.items() for dep in model_list(targets=(t,), group=g)]
    models = [*deployments, tier_router("smart", None, {t: pool for t in ("SIMPLE", "MEDIUM", "COMPLEX", "REASONING")},
                                        plugins=[plugin], classifier_type="heuristic")]
    r = litellm.Router(model_list=models)
    for prompt, target in ((MATH_PROMPT, "math-model"), (HIST_PROMPT, "history-model")) * 3:  # not the pool's luck
        resp = await r.acompletion(model="smart", messages=user(prompt))
        assert resp.choices[0].message.content == f"answer from {target}"
        assert resp._hidden_params["prefill_routing"]["target"] == target
    # beside a router-wide prefill strategy, which leaves the group the plugin narrowed to as the plugin decided
    from litellm_prefill_router import PrefillRouter

    r = PrefillRouter(model_list=models, routing_strategy="prefill",
                      routing_strategy_args={"bundle": str(bundle_dir), "preset": "min-cost"})
    d = (await r.acompletion(model="smart", messages=user(MATH_PROMPT)))._hidden_params["prefill_routing"]
    assert (d["target"], d["policy"]["preset"], d["plugin_models"]) == ("math-model", "max-quality", ["maths"])


async def test_beside_the_tier_classifier_the_record_keeps_the_tier_it_chose_and_the_plugins_pick_within_it(
        bundle_dir: Path, tmp_path: Path) -> None:
    """The classifier picks the tier, the plugin the model group in the tier's pool: one record per request (its log
    line, hidden params, headers) - the plugin's, with the classifier's decision under ``tier_decision``."""
    from litellm_prefill_router.tier_classifier import PrefillTierClassifier

    groups = {"hist": "history-model", "maths": "math-model", "gen": "generalist"}
    log = tmp_path / "tiers.jsonl"
    classifier = PrefillTierClassifier(str(bundle_dir), {"SIMPLE": "history-model", "COMPLEX": "math-model"},
                                       preset="max-quality")
    plugin = PrefillRoutingPlugin(str(bundle_dir), targets=groups, preset="max-quality", decision_log=str(log))
    deployments = [dep for g, t in groups.items() for dep in model_list(targets=(t,), group=g)]
    smart = tier_router("smart", classifier, {"SIMPLE": ["hist", "gen"], "COMPLEX": ["maths", "gen"]},
                        plugins=[plugin])
    r = litellm.Router(model_list=[*deployments, smart])
    for prompt, tier, target in ((MATH_PROMPT, "COMPLEX", "math-model"), (HIST_PROMPT, "SIMPLE", "history-model")):
        resp = await r.acompletion(model="smart", messages=user(prompt))
        d = resp._hidden_params["prefill_routing"]
        assert resp.choices[0].message.content == f"answer from {target}"
        assert d["plugin_models"] == [{v: k for k, v in groups.items()}[target]]
        assert (d["target"], d["tier_decision"]["tier"], d["tier_decision"]["target"]) == (target, tier, target)
        assert decision_headers({}, resp)["x-prefill-tier"] == tier
    await flush_logging()
    rows = [json.loads(line) for line in log.read_text().splitlines()]
    assert [(x["decision"]["tier_decision"]["tier"], x["decision"]["target"]) for x in rows] == \
        [("COMPLEX", "math-model"), ("SIMPLE", "history-model")]


async def test_shadow_mode_decides_and_logs_but_narrows_nothing_and_a_failed_prediction_keeps_the_pool(
        bundle_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    log = tmp_path / "shadow.jsonl"
    shadow = PrefillRoutingPlugin(str(bundle_dir), preset="max-quality", shadow=True, decision_log=str(log))
    r = litellm.Router(model_list=model_list(), plugins=[shadow])
    served = set()
    for _ in range(12):
        resp = await r.acompletion(model="auto", messages=user(MATH_PROMPT))
        served.add(resp.choices[0].message.content)
        d = resp._hidden_params["prefill_routing"]
        assert (d["target"], d["shadow"], d["baseline"]) == ("math-model", True, None)
        # who answered: what the outcome, feedback and learned answer lengths belong to, and stats' "served"
        assert resp.choices[0].message.content == f"answer from {d['served_target']}"
        headers = decision_headers({}, resp)  # the proxy's
        assert (headers["x-prefill-shadow"], headers["x-prefill-served-target"]) == ("true", d["served_target"])
    assert len(served) > 1  # litellm's shuffle over the whole group, as without the plugin
    await flush_logging()
    stats = summarize([json.loads(line) for line in log.read_text().splitlines()])
    assert stats["shadow"]["calls"] == 12 and sum(stats["shadow"]["served"].values()) == 12
    assert set(stats["shadow"]["served"]) == {c.removeprefix("answer from ") for c in served}

    broken = PrefillRoutingPlugin(str(bundle_dir), preset="max-quality", prediction_cache_size=0)

    async def exploded(*_args: object, **_kwargs: object) -> None:
        raise RuntimeError("encoder exploded")
    monkeypatch.setattr(broken.decider.predictor, "apredict_one", exploded)
    r = litellm.Router(model_list=model_list(), plugins=[broken])
    resp = await r.acompletion(model="auto", messages=user(MATH_PROMPT))
    assert resp.choices[0].message.content.startswith("answer from ")  # never a lost request
    d = resp._hidden_params["prefill_routing"]
    assert d["declined"] is True and d["reason"].startswith("fallback: inference failed")
    assert resp.choices[0].message.content == f"answer from {d['served_target']}"


async def test_a_target_cooling_down_is_not_a_lost_request_the_next_pick_serves_it(bundle_dir: Path) -> None:
    """litellm fails a request whose plugin-narrowed pool has no healthy deployment ("no deployments left after
    routing-plugin filtering"); the plugin's narrowing to a target litellm cooled down gives way to its next pick."""
    ml = model_list(**{"math-model": {"mock_response": "litellm.RateLimitError"}})
    r = litellm.Router(model_list=ml, num_retries=0, allowed_fails=0, cooldown_time=60,
                       plugins=[PrefillRoutingPlugin(str(bundle_dir), preset="max-quality")])
    with pytest.raises(litellm.RateLimitError):  # math-model's own failure, which cools it down
        await r.acompletion(model="auto", messages=user(MATH_PROMPT))
    await asyncio.sleep(0.2)
    resp = await r.acompletion(model="auto", messages=user(MATH_PROMPT))
    d = resp._hidden_params["prefill_routing"]
    assert d["target"] != "math-model" and d["unavailable_targets"] == ["math-model"]
    assert resp.choices[0].message.content == f"answer from {d['target']}"
    assert d["plugin_models"] == [f"openai/{d['target']}"] and "math-model" not in d["candidates"]


async def test_a_complexity_tier_whose_picked_group_is_cooling_down_is_served_by_the_next_pick_among_its_live_groups(
        bundle_dir: Path) -> None:
    """complexity_router_config.plugins: litellm re-runs the plugins on the tier's live groups when the group picked
    has no healthy deployment (its health failover); the record names the target passed over."""
    groups = {"hist": "history-model", "maths": "math-model", "gen": "generalist"}
    plugin = PrefillRoutingPlugin(str(bundle_dir), targets=groups, preset="max-quality")
    deployments = [dep for g, t in groups.items() for dep in model_list(
        targets=(t,), group=g, **{"math-model": {"mock_response": "litellm.RateLimitError"}})]
    # two limited deployments: litellm 1.109 never cools down a group's only deployment
    twin = next(d for d in deployments if d["model_name"] == "maths")
    deployments.append({**twin, "litellm_params": {**twin["litellm_params"], "api_base": "http://127.0.0.1:9/v1"}})
    smart = tier_router("smart", None, {t: list(groups) for t in ("SIMPLE", "MEDIUM", "COMPLEX", "REASONING")},
                        plugins=[plugin], classifier_type="heuristic")
    r = litellm.Router(model_list=[*deployments, smart], num_retries=0, allowed_fails=0, cooldown_time=60)
    limited = 0
    for _ in range(3):  # maths' deployments fail and cool down one by one (how many answer first varies by release)
        try:
            resp = await r.acompletion(model="smart", messages=user(MATH_PROMPT))
            break
        except litellm.RateLimitError:
            limited += 1
            await asyncio.sleep(0.2)
    assert 1 <= limited <= 2
    for _ in range(2):  # and stays served while they cool down
        d = resp._hidden_params["prefill_routing"]
        assert d["target"] != "math-model" and d["unavailable_targets"] == ["math-model"], d
        assert resp.choices[0].message.content == f"answer from {d['target']}"
        assert d["plugin_models"] == [{v: k for k, v in groups.items()}[d["target"]]]
        resp = await r.acompletion(model="smart", messages=user(MATH_PROMPT))


async def test_candidates_are_priced_by_the_routers_deployments_as_the_strategy_prices_them_unless_prices_are_given(
        bundle_dir: Path) -> None:
    """A deployment served dearer than the bundle's training prices is decided at its own price (litellm_params /
    model_info / litellm's cost map), in a Router's group and in a complexity router's tier pool; ``prices=`` wins."""
    pin, pout = PRICES["math-model"]
    dear = {"math-model": (pin * 10, pout * 10)}

    def served_dear(group: str = "auto") -> list[dict]:
        """math-model served at 10x, as a model of its own: litellm's cost map is process-wide, one entry per model"""
        models = model_list(prices=dear, group=group)
        models[0]["litellm_params"]["model"] = "openai/math-model-eu"
        return models

    async def decided(models: list[dict], group: str, **settings: object) -> dict:
        targets = {"openai/math-model-eu": "math-model", **settings.pop("targets", {})}  # type: ignore[dict-item]
        plugin = PrefillRoutingPlugin(str(bundle_dir), preset="max-quality", targets=targets,
                                      **settings)  # type: ignore[arg-type]
        for m in models:  # a complexity router's tier pool
            cfg = m["litellm_params"].get("complexity_router_config")
            if cfg is not None:
                cfg["plugins"] = [plugin]
        r = litellm.Router(model_list=models, plugins=[] if group == "smart" else [plugin])
        return (await r.acompletion(model=group, messages=user(MATH_PROMPT)))._hidden_params["prefill_routing"]

    as_trained = await decided(model_list(), "auto")
    served = await decided(served_dear(), "auto")
    assert served["cost_usd"]["math-model"] == pytest.approx(10 * as_trained["cost_usd"]["math-model"])
    assert served["cost_usd"]["generalist"] == as_trained["cost_usd"]["generalist"]
    # the ceiling now leaves the dear deployment out: the decision follows the price it will be billed at
    ceiling = 2 * as_trained["cost_usd"]["math-model"]
    assert (await decided(model_list(), "auto", max_cost_usd=ceiling))["target"] == "math-model"
    capped = await decided(served_dear(), "auto", max_cost_usd=ceiling)
    assert capped["target"] != "math-model" and capped["cost_usd"][capped["target"]] <= ceiling
    # the plugin's own prices= are what the operator said: they win over the deployments'
    told = await decided(served_dear(), "auto", prices={"math-model": PRICES["math-model"]})
    assert told["cost_usd"]["math-model"] == as_trained["cost_usd"]["math-model"]
    # a complexity router's tier pool: a candidate model group is priced by its deployments
    groups = {"hist": "history-model", "maths": "math-model", "gen": "generalist"}
    tiered = [dep for g, t in groups.items() for dep in (served_dear(g)[:1] if g == "maths" else
                                                          model_list(targets=(t,), group=g))]
    tiered.append(tier_router("smart", None, {t: list(groups) for t in ("SIMPLE", "MEDIUM", "COMPLEX", "REASONING")},
                              classifier_type="heuristic"))
    in_tier = await decided(tiered, "smart", targets=groups)  # the plugin's own targets= name the tier's groups
    assert in_tier["cost_usd"]["math-model"] == pytest.approx(served["cost_usd"]["math-model"])
    # a deployment repriced in place (the proxy's /model/update) is priced again
    from litellm_prefill_router.composition import deployments_of

    r = litellm.Router(model_list=model_list(), plugins=[PrefillRoutingPlugin(str(bundle_dir), preset="max-quality")])
    before = (await r.acompletion(model="auto", messages=user(MATH_PROMPT)))._hidden_params["prefill_routing"]
    math = next(d for d in deployments_of(r) if d["litellm_params"]["model"] == "openai/math-model")
    math["model_info"].update(input_cost_per_token=pin * 10, output_cost_per_token=pout * 10)
    after = (await r.acompletion(model="auto", messages=user(MATH_PROMPT)))._hidden_params["prefill_routing"]
    assert after["cost_usd"]["math-model"] == pytest.approx(10 * before["cost_usd"]["math-model"])


async def test_a_requests_metadata_prefill_pins_and_bad_overrides_fail_the_request(bundle_dir: Path) -> None:
    r = litellm.Router(model_list=model_list(), plugins=[PrefillRoutingPlugin(str(bundle_dir), preset="max-quality")])
    pinned = await r.acompletion(model="auto", messages=user(MATH_PROMPT),
                                 metadata={"prefill": {"pin_model": "generalist"}})
    assert pinned.choices[0].message.content == "answer from generalist"
    with pytest.raises(Exception, match="metadata\\['prefill'\\]"):
        await r.acompletion(model="auto", messages=user(MATH_PROMPT), metadata={"prefill": {"tolerance": "lots"}})


def test_a_router_built_before_its_plugin_carries_the_plugins_decisions_in_its_responses(bundle_dir: Path) -> None:
    """In a fresh interpreter (nothing installed yet): a plain Router, then the plugin added to it. The plugin's
    construction installs the decision-carrying endpoints on litellm's Router class (litellm 1.110+: its core's),
    so the router built before it answers with the decision too."""
    import os
    import subprocess
    import sys

    code = f"""
import asyncio, warnings
import litellm
from conftest import HIST_PROMPT, MATH_PROMPT, model_list
r = litellm.Router(model_list=model_list())
from litellm_prefill_router.routing_plugin import PrefillRoutingPlugin
with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)  # litellm 1.110: Router.routing_plugins, kept for now
    r.routing_plugins.append(PrefillRoutingPlugin({str(bundle_dir)!r}, preset="max-quality"))
for prompt in (MATH_PROMPT, HIST_PROMPT):
    resp = asyncio.run(r.acompletion(model="auto", messages=[{{"role": "user", "content": prompt}}]))
    print(resp.choices[0].message.content, "|", resp._hidden_params["prefill_routing"]["target"])
"""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(__file__).parent), os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.split("\n")[:2] == ["answer from math-model | math-model",
                                           "answer from history-model | history-model"]


def test_targets_that_are_not_the_bundles_and_bad_settings_are_configuration_errors(bundle_dir: Path) -> None:
    with pytest.raises(ConfigurationError, match=r"targets names \['gpt-9'\], which are not targets of bundle"):
        PrefillRoutingPlugin(str(bundle_dir), targets={"openai/gpt-9": "gpt-9"})
    with pytest.raises(ConfigurationError, match="targets maps candidate models"):
        PrefillRoutingPlugin(str(bundle_dir), targets={"openai/x": ["math-model"]})  # type: ignore[dict-item]
    with pytest.raises(ConfigurationError, match="shadow=True serves every call as before"):
        PrefillRoutingPlugin(str(bundle_dir), shadow=True, rollout=0.5)
    with pytest.raises(ConfigurationError,
                       match="PrefillRoutingPlugin settings: lambda: unknown setting; did you mean 'lambda_'"):
        PrefillRoutingPlugin(str(bundle_dir), **{"lambda": 0.1})  # type: ignore[typeddict-unknown-key]
    plugin = PrefillRoutingPlugin(str(bundle_dir))
    assert (plugin.target_of("openai/math-model"), plugin.target_of("math-model"), plugin.target_of("gpt-4o")) == \
        ("math-model", "math-model", None)


@pytest.mark.parametrize("api", ["chat", "responses", "anthropic", "google"])
async def test_a_stream_of_every_api_the_plugin_narrowed_carries_its_decision_and_one_dropped_is_logged_abandoned(
        api: str, bundle_dir: Path, tmp_path: Path) -> None:
    """Against a local OpenAI-compatible endpoint (litellm mocks none of these streams but chat's)."""
    from fake_openai import FakeOpenAI
    from packaging.version import Version

    from litellm_prefill_router.litellm_support import installed_litellm

    log = tmp_path / "plugin.jsonl"
    with FakeOpenAI() as fake:
        r = litellm.Router(model_list=live_model_list(fake.url), routing_strategy="latency-based-routing",
                           plugins=[PrefillRoutingPlugin(str(bundle_dir), preset="max-quality", decision_log=str(log))])
        for prompt, target in ((MATH_PROMPT, "math-model"), (HIST_PROMPT, "history-model")):
            stream = await stream_of(r, api, prompt)
            d = stream._hidden_params["prefill_routing"]  # before the first chunk
            assert (d["target"], d["reason"]) == (target, "policy")
            assert streamed_text(api, [c async for c in stream]) == f"answer from {target}"
        await read_a_chunk_and_drop(await stream_of(r, api, f"{MATH_PROMPT} (dropped)"))
        await flush_logging()
    assert [m["model"] for m in fake.requests] == ["math-model", "history-model", "math-model"]
    rows = {row["messages"][-1]["content"]: row["outcome"] for row in map(json.loads, log.read_text().splitlines())}
    assert rows[f"{MATH_PROMPT} (dropped)"]["abandoned"] is True
    whole = [HIST_PROMPT, MATH_PROMPT] if api != "google" or Version(installed_litellm()) >= Version("1.108") else []
    assert sorted(rows) == sorted([*whole, f"{MATH_PROMPT} (dropped)"])  # 1.102 logs no whole generate_content
    assert all(rows[p]["success"] and "abandoned" not in rows[p] for p in whole)


async def test_a_google_genai_request_is_narrowed_on_its_contents_after_its_system_instruction_and_logged_so(
        bundle_dir: Path, tmp_path: Path) -> None:
    """litellm hands a routing plugin no messages for a generate_content request: the plugin reads the request's
    contents (before: no text, so every one was declined - the whole pool, reason "fallback")."""
    from fake_openai import FakeOpenAI
    from packaging.version import Version

    from litellm_prefill_router.litellm_support import installed_litellm

    log = tmp_path / "plugin.jsonl"
    with FakeOpenAI() as fake:
        r = litellm.Router(model_list=live_model_list(fake.url), plugins=[
            PrefillRoutingPlugin(str(bundle_dir), preset="max-quality", decision_log=str(log))])
        resp = await r.agenerate_content(model="auto", contents=[{"role": "user", "parts": [{"text": HIST_PROMPT}]}],
                                         systemInstruction={"parts": [{"text": "You are a historian."}]})
        await flush_logging()
    d = resp["_hidden_params"]["prefill_routing"]
    assert (d["target"], d["reason"]) == ("history-model", "policy")
    assert fake.requests[0]["model"] == "history-model"
    if Version(installed_litellm()) < Version("1.108"):
        pytest.skip("litellm 1.102's success logging of generate_content fails (\"httpx_response is None\"): no "
                    "decision-log line to check")
    (row,) = (json.loads(line) for line in log.read_text().splitlines())
    assert [m["content"] for m in row["messages"]] == ["You are a historian.", HIST_PROMPT]
    assert (row["decision"]["target"], row["outcome"]["success"]) == ("history-model", True)


async def test_one_conversation_with_a_system_prompt_is_read_alike_through_every_api(bundle_dir: Path) -> None:
    """Each API carries the system prompt its own way (a chat message, the Responses API's ``instructions``,
    Anthropic's ``system``, Google GenAI's ``systemInstruction``): the plugin reads the same text through all."""
    system = "You are a patient tutor who answers about the integral of x squared."
    r = litellm.Router(model_list=model_list(), plugins=[
        PrefillRoutingPlugin(str(bundle_dir), preset="max-quality", prediction_cache_size=0)])
    calls = [r.acompletion(model="auto", messages=[{"role": "system", "content": system}, *user(HIST_PROMPT)]),
             r.aresponses(model="auto", input=HIST_PROMPT, instructions=system),
             r.aanthropic_messages(model="auto", messages=user(HIST_PROMPT), system=system, max_tokens=16),
             r.agenerate_content(model="auto", contents=HIST_PROMPT, systemInstruction={"parts": [{"text": system}]})]
    seen = []
    for call in calls:
        resp = await call
        d = (resp["_hidden_params"] if isinstance(resp, dict) else resp._hidden_params)["prefill_routing"]
        seen.append((d["input_tokens"], d["p_correct"]))
    alone = (await r.acompletion(model="auto", messages=user(HIST_PROMPT)))._hidden_params["prefill_routing"]
    assert all(s == seen[0] for s in seen), seen
    assert seen[0][0] > alone["input_tokens"]
