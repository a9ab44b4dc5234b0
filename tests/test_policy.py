from __future__ import annotations

import numpy as np
import pytest

from litellm_prefill_router import ConfigurationError
from litellm_prefill_router.policy import RoutingPolicy, choose, resolve_policy


def test_tolerance_zero_picks_the_most_likely_target() -> None:
    assert choose(np.array([0.5, 0.9, 0.7]), np.array([1.0, 3.0, 2.0]), "tolerance", 0.0) == 1


def test_tolerance_picks_the_cheapest_target_within_tau_of_the_best() -> None:
    p, c = np.array([0.5, 0.9, 0.85]), np.array([1.0, 3.0, 2.0])
    assert choose(p, c, "tolerance", 0.1) == 2
    assert choose(p, c, "tolerance", 0.5) == 0


def test_lambda_trades_probability_for_normalised_cost() -> None:
    p, c = np.array([0.6, 0.9]), np.array([1.0, 10.0])
    assert choose(p, c, "lambda", 0.0) == 1
    assert choose(p, c, "lambda", 1.0) == 0


def test_presets_resolve_and_unknown_presets_list_the_valid_ones() -> None:
    presets = {"balanced": {"kind": "tolerance", "value": 0.1}}
    assert resolve_policy(presets, preset="balanced") == RoutingPolicy("tolerance", 0.1, "balanced")
    assert resolve_policy(presets, lambda_=0.3) == RoutingPolicy("lambda", 0.3)
    with pytest.raises(ConfigurationError, match="balanced"):
        resolve_policy(presets, preset="nope")
    with pytest.raises(ConfigurationError, match=r"give one policy - a preset, a tolerance, a lambda or a value_usd - "
                                                 r"not \['tolerance', 'lambda'\]"):
        resolve_policy(presets, tolerance=0.1, lambda_=0.1)
    with pytest.raises(ConfigurationError, match=r"not \['preset', 'tolerance'\]"):  # the tolerance silently won
        resolve_policy(presets, preset="balanced", tolerance=0.1)
    assert resolve_policy(presets, tolerance=0.1, default_preset="balanced") == RoutingPolicy("tolerance", 0.1)
    assert resolve_policy(presets, value_usd=0.002) == RoutingPolicy("value_usd", 0.002)


@pytest.mark.parametrize(("kind", "value"), [("tolerance", -0.1), ("tolerance", float("nan")), ("tolerance", 1.5),
                                           ("lambda", float("inf")), ("value_usd", -1.0), ("lambda", True)])
def test_invalid_policy_values_are_rejected(kind: str, value: float) -> None:
    with pytest.raises(ConfigurationError, match=f"policy {kind}"):
        RoutingPolicy(kind, value)  # type: ignore[arg-type]
    assert RoutingPolicy("tolerance", 1).choose([0.9, 0.1], [2.0, 1.0]) == 1  # 1: the cheapest, whatever P(correct)


def test_value_usd_maximises_expected_value_minus_cost_and_spends_less_on_a_dearer_prompt() -> None:
    p = np.array([0.6, 0.9])
    cheap_prompt, dear_prompt = np.array([1e-4, 1e-3]), np.array([1e-3, 1e-2])  # the same targets, 10x the tokens
    assert choose(p, cheap_prompt, "value_usd", 0.0) == 0  # a right answer worth nothing: the cheapest
    assert choose(p, cheap_prompt, "value_usd", 1.0) == 1  # worth 1 USD: 0.3 x 1 USD beats 0.0009 USD
    # worth 0.01 USD: +0.3 P(correct) buys 0.003 USD of value - more than the cheap prompt's 0.0009 USD difference,
    # less than the dear prompt's 0.009 USD
    assert choose(p, cheap_prompt, "value_usd", 0.01) == 1 and choose(p, dear_prompt, "value_usd", 0.01) == 0
    # lambda normalises each request's costs: it chooses alike for both prompts at every setting
    for lam in (0.0, 0.2, 0.4, 1.0):
        assert choose(p, cheap_prompt, "lambda", lam) == choose(p, dear_prompt, "lambda", lam)


@pytest.mark.parametrize("kind", ["tolerance", "lambda", "value_usd"])
def test_vectorised_choices_match_the_per_row_policy(kind: str) -> None:
    from litellm_prefill_router.policy import choose_batch

    rng = np.random.default_rng(0)
    p = rng.random((300, 5)).round(2)  # rounding makes ties, which both must break alike
    cost = rng.choice([1.0, 2.0, 5.0], size=(300, 5))
    for value in (0.0, 0.05, 0.3, 1.0):
        expected = [choose(p[i], cost[i], kind, value) for i in range(300)]
        assert choose_batch(p, cost, kind, value).tolist() == expected
