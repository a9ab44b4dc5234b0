"""The tier classifier, the routing plugin and the semantic drop-in check the settings they share with the
``prefill`` strategy as its ``routing_strategy_args`` are checked (one type, one set of bounds, one description), and
the settings reference documents exactly the arguments their constructors take."""

from __future__ import annotations

import argparse
import inspect
from pathlib import Path
from typing import Any

import pytest

from litellm_prefill_router.config import parse_strategy_args
from litellm_prefill_router.errors import ConfigurationError
from litellm_prefill_router.hook_settings import HOOK_SHARED, ROUTING_PLUGIN, SEMANTIC_ROUTER, TIER_CLASSIFIER
from litellm_prefill_router.request_hooks import HookSettings
from litellm_prefill_router.routing_plugin import PrefillRoutingPlugin
from litellm_prefill_router.semantic import PrefillSemanticRouter
from litellm_prefill_router.tier_classifier import PrefillTierClassifier

TIERS = {"SIMPLE": "math-model", "COMPLEX": "generalist"}


def front_doors(bundle_dir: Path) -> dict[str, Any]:
    return {"PrefillTierClassifier": lambda **kw: PrefillTierClassifier(str(bundle_dir), TIERS, **kw),
            "PrefillRoutingPlugin": lambda **kw: PrefillRoutingPlugin(str(bundle_dir), **kw),
            "PrefillSemanticRouter": lambda **kw: PrefillSemanticRouter(str(bundle_dir), **kw)}


@pytest.mark.parametrize(("setting", "value", "problem"), [
    ("tolerance", 2, "Input should be less than or equal to 1"),  # accepted before: a tolerance past any P(correct)
    ("tolerance", "lots", "Input should be a valid number"),  # a bare ValueError before
    ("execution_providers", [], "List should have at least 1 item"),  # accepted before: the CPU, silently
    ("shadow", "maybe", "Input should be a valid boolean"),  # accepted before: any non-empty string was True
    ("decision_timeout_s", 601, "Input should be less than or equal to 600"),
])
def test_a_bad_shared_setting_is_rejected_by_every_front_door_as_routing_strategy_args_rejects_it(
        bundle_dir: Path, setting: str, value: object, problem: str) -> None:
    with pytest.raises(ConfigurationError, match=problem):
        parse_strategy_args({"bundle": str(bundle_dir), setting: value})
    for name, make in front_doors(bundle_dir).items():
        with pytest.raises(ConfigurationError) as err:
            make(**{setting: value})
        message = str(err.value)
        # what failed, in which constructor, what it got, and what the setting is for
        assert message.startswith(f"invalid {name} settings: {setting}: {problem}"), message
        assert f"got {value!r}" in message and f"({setting}: " in message


def test_a_setting_given_as_text_is_read_as_its_type_not_by_truthiness(bundle_dir: Path) -> None:
    for name, make in front_doors(bundle_dir).items():
        hook = make(shadow="false", tolerance="0.2")  # e.g. read from environment variables
        assert hook.shadow is False, name  # bool("false") is True: it used to run in shadow mode
    plugin = PrefillRoutingPlugin(str(bundle_dir), tolerance="0.2")
    assert (plugin.decider.default_policy.kind, plugin.decider.default_policy.value) == ("tolerance", 0.2)


def test_the_drop_ins_min_score_is_a_probability(bundle_dir: Path) -> None:
    for setting in ("min_score", "confidence_threshold"):
        with pytest.raises(ConfigurationError, match=f"invalid PrefillSemanticRouter settings: {setting}: Input "
                                                     "should be less than or equal to 1"):
            PrefillSemanticRouter(str(bundle_dir), **{setting: 1.5})


def test_the_settings_reference_documents_exactly_the_arguments_each_constructor_takes() -> None:
    assert set(HookSettings.__annotations__) == {*HOOK_SHARED, "prices"}
    for cls, model in ((PrefillTierClassifier, TIER_CLASSIFIER), (PrefillRoutingPlugin, ROUTING_PLUGIN),
                       (PrefillSemanticRouter, SEMANTIC_ROUTER)):
        params = inspect.signature(cls.__init__).parameters
        named = {n for n, p in params.items() if n != "self" and p.kind is not inspect.Parameter.VAR_KEYWORD}
        takes_settings = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
        taken = named | (set(HookSettings.__annotations__) if takes_settings else set())
        assert taken == set(model.model_fields), cls.__name__
        for name in named:  # the constructor's default is the one documented
            default = params[name].default
            if default is not inspect.Parameter.empty:
                assert model.model_fields[name].default == default, (cls.__name__, name)


def test_the_settings_command_offers_every_documented_table() -> None:
    from litellm_prefill_router.cli import build_parser
    from litellm_prefill_router.settings_reference import settings_models

    commands = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    name = next(a for a in commands.choices["settings"]._actions if a.dest == "name")
    assert set(name.choices or ()) == set(settings_models())


def test_a_misspelt_setting_is_rejected_naming_the_setting_it_most_likely_meant(bundle_dir: Path) -> None:
    from litellm_prefill_router.config import parse_overrides

    with pytest.raises(ConfigurationError, match="routing_strategy_args for 'prefill': tolerence: unknown setting; "
                                                 "did you mean 'tolerance'\\?"):
        parse_strategy_args({"bundle": str(bundle_dir), "tolerence": 0.2})
    with pytest.raises(ConfigurationError, match="lamda: unknown setting; did you mean 'lambda'\\?"):
        parse_strategy_args({"bundle": str(bundle_dir), "lamda": 0.2})  # the name written in a config, not lambda_
    with pytest.raises(ConfigurationError, match="autotune.savngs: unknown setting; did you mean 'savings'\\?"):
        parse_strategy_args({"bundle": str(bundle_dir), "autotune": {"savngs": 0.3}})  # a nested setting
    with pytest.raises(ConfigurationError, match="zzz: unknown setting; the settings are autotune, bundle, "):
        parse_strategy_args({"bundle": str(bundle_dir), "zzz": 1})  # nothing close: every setting
    with pytest.raises(ConfigurationError, match="overrides: max_cost: unknown setting; did you mean 'max_cost_usd'"):
        parse_overrides({"prefill": {"max_cost": 0.01}})
    for name, make in front_doors(bundle_dir).items():  # **settings; the drop-in's signature names its arguments
        with pytest.raises(TypeError if name == "PrefillSemanticRouter" else ConfigurationError,
                           match="unexpected keyword argument 'tolerence'" if name == "PrefillSemanticRouter" else
                           f"invalid {name} settings: tolerence: unknown setting; did you mean 'tolerance'"):
            make(tolerence=0.2)


def test_true_or_false_for_a_number_is_refused_everywhere_a_setting_is_written(bundle_dir: Path) -> None:
    import yaml

    from litellm_prefill_router.config import parse_overrides

    written = yaml.safe_load("bundle: B\ntolerance: yes\n")  # YAML 1.1: yes -> True, which pydantic read as 1.0
    assert written["tolerance"] is True
    said = "tolerance: true/false is not a value of this setting (YAML reads yes/no and on/off as true/false), got True"
    with pytest.raises(ConfigurationError, match=said.replace("(", "\\(").replace(")", "\\)")):
        parse_strategy_args({**written, "bundle": str(bundle_dir)})  # before: every request to the cheapest target
    with pytest.raises(ConfigurationError, match="autotune.savings: true/false is not a value"):
        parse_strategy_args({"bundle": str(bundle_dir), "autotune": {"savings": True}})
    with pytest.raises(ConfigurationError, match="max_cost_usd: true/false is not a value"):
        parse_overrides({"prefill": {"max_cost_usd": True}})
    for name, make in front_doors(bundle_dir).items():
        with pytest.raises(ConfigurationError, match=f"{name} settings: tolerance: true/false is not a value"):
            make(tolerance=True)
    parse_strategy_args({"bundle": str(bundle_dir), "shadow": True, "metrics": False})  # a yes/no setting takes it
