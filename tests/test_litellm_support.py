"""The Router integration across litellm releases. On the pinned releases the integration rewrites the Router's
methods; litellm 1.110 serves its Router from a new core that refuses subclasses and has none of those methods:
there the router-wide prefill strategy goes in through ``register_plugin`` (the proxy's Router through
``Router.from_config``: tests/test_proxy.py), the tier classifier and routing plugin work through litellm's own plugin
points (tests/test_tier_classifier.py, tests/test_routing_plugin.py), routing groups beside the strategy and a key's
strategy override get their litellm strategy's pick from the core, and prefill routing groups are simple-shuffle
groups to litellm, routed by a registered dispatcher (tests/test_litellm_routing.py runs on every release). CI runs
this file (and the router's own tests) on litellm 1.110 too (scripts/test.sh); the tests of one kind of release skip
on the other."""

from __future__ import annotations

import importlib
import importlib.metadata
from pathlib import Path

import litellm
import pytest

from conftest import HIST_PROMPT, MATH_PROMPT, change_settings, model_list
from litellm_prefill_router import PrefillRouter, UnsupportedLiteLLMError, flush_logging, install
from litellm_prefill_router.composition import custom_strategy_of, routing_strategy_of
from litellm_prefill_router.errors import ConfigurationError
from litellm_prefill_router.litellm_support import SUPPORTED_LITELLM
from litellm_prefill_router.router import ROUTER_ACCEPTS_SUBCLASSES, prefill_strategies

ROOT = Path(__file__).resolve().parents[1]
new_core = pytest.mark.skipif(ROUTER_ACCEPTS_SUBCLASSES, reason="needs litellm 1.110+ (CI installs it in a runtime "
                                                                "venv: scripts/test.sh)")


def user(text: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": text}]


def test_pyproject_pins_litellm_and_its_proxy_to_the_range_the_package_says_it_supports():
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert [d for d in project["dependencies"] if d.startswith("litellm")] == [f"litellm{SUPPORTED_LITELLM}"]
    assert project["optional-dependencies"]["proxy"] == [f"litellm[proxy]{SUPPORTED_LITELLM}"]


def test_unsupported_litellm_error_is_a_configuration_error_and_an_import_error():
    err = UnsupportedLiteLLMError("x")
    assert isinstance(err, ConfigurationError) and isinstance(err, ImportError)


def test_the_installed_litellm_router_is_recognised_for_what_it_is():
    # 1.110's Router refuses subclasses; every pinned release accepts them (the hooks are methods of a subclass)
    major, minor = (int(x) for x in importlib.metadata.version("litellm").split(".")[:2])
    assert ROUTER_ACCEPTS_SUBCLASSES == ((major, minor) < (1, 110))
    assert issubclass(PrefillRouter, litellm.Router) == ROUTER_ACCEPTS_SUBCLASSES


@new_core
async def test_on_the_new_core_a_prefill_router_is_a_litellm_router_routed_by_the_registered_strategy(
        bundle_dir: Path) -> None:
    router = PrefillRouter(model_list=model_list(), routing_strategy="prefill",
                           routing_strategy_args={"bundle": str(bundle_dir), "preset": "max-quality"})
    assert isinstance(router, litellm.Router) and isinstance(router, PrefillRouter)
    assert not isinstance(litellm.Router(model_list=model_list()), PrefillRouter)
    assert "router" in prefill_strategies(router)
    for prompt, target in ((MATH_PROMPT, "math-model"), (HIST_PROMPT, "history-model")):
        resp = await router.acompletion(model="auto", messages=user(prompt))
        assert resp.choices[0].message.content == f"answer from {target}"
        assert resp._hidden_params["prefill_routing"]["target"] == target
    sync = router.completion(model="auto", messages=user(HIST_PROMPT))
    assert sync._hidden_params["prefill_routing"]["target"] == "history-model"
    install()  # a plain Router built with the strategy's name afterwards
    plain = litellm.Router(model_list=model_list(), routing_strategy="prefill",
                           routing_strategy_args={"bundle": str(bundle_dir), "preset": "max-quality"})
    resp = await plain.acompletion(model="auto", messages=user(HIST_PROMPT))
    assert resp._hidden_params["prefill_routing"]["target"] == "history-model"


@new_core
async def test_on_the_new_core_prefill_routing_groups_stay_routed_when_apply_changes_the_strategy_or_the_groups(
        bundle_dir: Path) -> None:
    """The core takes one custom strategy per router, which it forgets when the routing strategy changes: the prefill
    groups' routing is registered again, follows new routing_groups, and a group apply cannot build changes nothing."""
    install()
    group = {"group_name": "routed", "models": ["budget"], "routing_strategy": "prefill",
             "routing_strategy_args": {"bundle": str(bundle_dir), "preset": "max-quality"}}
    router = litellm.Router(model_list=[*model_list(), *model_list(group="budget")],
                            routing_strategy="latency-based-routing", routing_groups=[group])
    assert set(prefill_strategies(router)) == {"routing group routed"}

    async def decision(model: str = "budget") -> dict | None:
        resp = await router.acompletion(model=model, messages=user(HIST_PROMPT))
        assert resp.choices[0].message.content.startswith("answer from ")
        return resp._hidden_params.get("prefill_routing")

    assert (await decision())["target"] == "history-model" and await decision("auto") is None
    change_settings(router, routing_strategy="usage-based-routing-v2")  # litellm drops the custom strategy
    assert (await decision())["target"] == "history-model"
    change_settings(router, routing_groups=[])
    assert await decision() is None and prefill_strategies(router) == {}  # served by litellm's own pick
    assert custom_strategy_of(router) is None  # the dispatcher is gone with the groups: it would only hand them on
    assert routing_strategy_of(router) == "usage-based-routing-v2"
    with pytest.raises(ConfigurationError, match="bundle"):
        change_settings(router, routing_groups=[{**group, "routing_strategy_args": {}}])
    assert await decision() is None
    change_settings(router, routing_groups=[group])
    assert (await decision())["target"] == "history-model"
    change_settings(router, routing_strategy="prefill", routing_strategy_args={"bundle": str(bundle_dir),
                                                                                "tolerance": 1.0})
    assert set(prefill_strategies(router)) == {"router", "routing group routed"}
    assert (await decision())["policy"]["preset"] == "max-quality"  # the group's own policy, not the router's
    assert (await decision("auto"))["target"] == "math-model"  # the router's: tolerance 1, the cheapest


@new_core
async def test_on_the_new_core_settings_written_back_from_settings_drop_prefill_routing_with_a_warning(
        bundle_dir: Path, caplog: pytest.LogCaptureFixture) -> None:
    """litellm 1.110 cannot hold the prefill strategy's name: its settings() report simple-shuffle, and a
    read-modify-write of them turns the prefill routing off. That is said, with how to keep it."""
    install()
    args = {"bundle": str(bundle_dir), "preset": "max-quality"}
    group = {"group_name": "routed", "models": ["budget"], "routing_strategy": "prefill", "routing_strategy_args": args}
    router = litellm.Router(model_list=[*model_list(), *model_list(group="budget")], routing_strategy="prefill",
                            routing_strategy_args=args, routing_groups=[group])
    reported = router.settings().as_dict()
    assert reported["routing_strategy"] == "simple-shuffle"
    assert [g["routing_strategy"] for g in reported["routing_groups"]] == ["simple-shuffle"]
    with caplog.at_level("WARNING", logger="litellm_prefill_router"):
        change_settings(router, routing_groups=reported["routing_groups"])
        change_settings(router, routing_strategy=reported["routing_strategy"])
    said = [r.getMessage() for r in caplog.records if "settings written back" in r.getMessage()]
    assert len(said) == 2 and "'routed'" in said[0] and "routing_strategy: prefill" in said[1]
    assert prefill_strategies(router) == {}
    resp = await router.acompletion(model="auto", messages=[{"role": "user", "content": HIST_PROMPT}])
    await flush_logging()  # its logging events end here, not in another test's
    assert "prefill_routing" not in resp._hidden_params


@new_core
def test_on_the_new_core_a_router_built_from_a_config_as_the_proxy_builds_it_routes_by_prefill(
        bundle_dir: Path) -> None:
    from litellm.router import router_arguments
    from litellm.router_config import build_router_config

    importlib.import_module("litellm_prefill_router.proxy_hook")  # what the proxy imports before building its Router
    args = {"bundle": str(bundle_dir), "preset": "max-quality"}
    router = litellm.Router.from_config(build_router_config(router_arguments(
        model_list=model_list(), routing_strategy="prefill", routing_strategy_args=args)))
    assert prefill_strategies(router)["router"].args.preset == "max-quality"
    with pytest.raises(ConfigurationError, match="bundle"):  # what the proxy says at start-up: no bundle to route by
        litellm.Router.from_config(build_router_config(router_arguments(model_list=model_list(),
                                                                         routing_strategy="prefill")))
    group = {"group_name": "g", "models": ["auto"], "routing_strategy": "prefill", "routing_strategy_args": args}
    grouped = litellm.Router.from_config(build_router_config(router_arguments(model_list=model_list(),
                                                                              routing_groups=[group])))
    assert prefill_strategies(grouped)["routing group g"].args.preset == "max-quality"


@new_core
def test_on_the_new_core_check_passes_a_proxy_config_with_prefill_groups_and_fails_one_without_a_bundle(
        bundle_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import yaml

    from litellm_prefill_router.cli import main

    args = {"bundle": str(bundle_dir)}
    config = {"model_list": model_list(),
              "router_settings": {"routing_strategy": "prefill", "routing_strategy_args": args},
              "litellm_settings": {"callbacks": "litellm_prefill_router.proxy_hook.proxy_handler_instance"}}
    (tmp_path / "proxy.yaml").write_text(yaml.safe_dump(config))
    assert main(["check", "--config", str(tmp_path / "proxy.yaml")]) == 0
    config["router_settings"] = {"routing_strategy": "latency-based-routing", "routing_groups": [
        {"group_name": "g", "models": ["auto"], "routing_strategy": "prefill", "routing_strategy_args": args}]}
    (tmp_path / "groups.yaml").write_text(yaml.safe_dump(config))
    assert main(["check", "--config", str(tmp_path / "groups.yaml")]) == 0
    config["router_settings"]["routing_groups"][0]["routing_strategy_args"] = {}
    (tmp_path / "no-bundle.yaml").write_text(yaml.safe_dump(config))
    assert main(["check", "--config", str(tmp_path / "no-bundle.yaml")]) == 2
    assert "bundle" in capsys.readouterr().err


async def test_the_same_router_settings_applied_again_keep_the_prefill_strategies_and_what_they_learned(
        bundle_dir: Path) -> None:
    """A litellm proxy with a database applies its config's router_settings again every 30 s (the config file's
    values merged with the database's). Each time the same prefill settings arrive, the strategies serving them stay:
    a new one would forget what the old one learned (autotune windows, answer lengths) and read the
    decision log again to seed itself. Changed settings still build new ones."""
    install()
    args = {"bundle": str(bundle_dir), "preset": "max-quality"}
    group = {"group_name": "routed", "models": ["budget"], "routing_strategy": "prefill", "routing_strategy_args": args}
    router = litellm.Router(model_list=[*model_list(), *model_list(group="budget")], routing_strategy="prefill",
                            routing_strategy_args=dict(args), routing_groups=[dict(group)])
    before = prefill_strategies(router)
    assert set(before) == {"router", "routing group routed"}
    for _ in range(2):  # as the proxy applies them: every setting but the groups, then the groups
        change_settings(router, routing_strategy="prefill", routing_strategy_args=dict(args), num_retries=2)
        change_settings(router, routing_groups=[{**group, "routing_strategy_args": dict(args)}])
    after = prefill_strategies(router)
    assert {k: id(v) for k, v in after.items()} == {k: id(v) for k, v in before.items()}
    for model, target in (("auto", "history-model"), ("budget", "history-model")):
        resp = await router.acompletion(model=model, messages=user(HIST_PROMPT))
        assert resp._hidden_params["prefill_routing"]["target"] == target
    change_settings(router, routing_strategy="prefill", routing_strategy_args={**args, "preset": "min-cost"})
    change_settings(router, routing_groups=[{**group, "routing_strategy_args": {**args, "preset": "min-cost"}}])
    changed = prefill_strategies(router)
    assert all(changed[k] is not before[k] for k in before)
    assert {s.args.preset for s in changed.values()} == {"min-cost"}
