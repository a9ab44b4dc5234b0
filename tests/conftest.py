"""Shared fixtures: a tiny encoder built from a config, a synthetic dataset, and a bundle trained by the real
training pipeline. Nothing touches the network."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import gc
import json
import shutil
import socket
import sys
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).parent))
import tiny  # noqa: E402


@pytest.fixture(scope="session")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("prefill")
    os.environ["PREFILL_ROUTER_CACHE"] = str(d / "cache")
    return d


def needs_training_extra() -> None:
    """Skip a test that trains or builds a model: the runtime's tests also run on interpreters without the `train`
    extra (scripts/test_runtime_on.sh); in the main suite torch is installed and nothing skips."""
    pytest.importorskip("torch", reason="needs the train extra (torch), not installed on this interpreter")


@pytest.fixture(scope="session")
def tiny_encoder(workdir: Path) -> Path:
    needs_training_extra()
    return tiny.build_tiny_encoder(workdir / "encoder")


@pytest.fixture(scope="session")
def tiny_data(workdir: Path) -> Path:
    return tiny.write_dataset(workdir / "data")


@pytest.fixture(scope="session")
def trained(workdir: Path, tiny_encoder: Path, tiny_data: Path):
    """(bundle, report) from the real `train` pipeline on the synthetic dataset."""
    return tiny.train_test_bundle(workdir, tiny_encoder, tiny_data)


@pytest.fixture(scope="session")
def bundle_dir(request: pytest.FixtureRequest, workdir: Path) -> Path:
    """The trained test bundle; PREFILL_TEST_BUNDLE names one built earlier (a copy is used), so the runtime's tests
    run on an interpreter without the training extra (scripts/test_runtime_on.sh)."""
    prebuilt = os.environ.get("PREFILL_TEST_BUNDLE")
    if prebuilt:
        return Path(shutil.copytree(prebuilt, workdir / "prebuilt-bundle"))
    return request.getfixturevalue("trained")[0].directory


@pytest.fixture()
def bundle_copy(bundle_dir: Path, tmp_path: Path) -> Path:
    """A private copy of the bundle that a test may break."""
    dst = tmp_path / "bundle"
    shutil.copytree(bundle_dir, dst)
    return dst


@pytest.fixture(autouse=True)
def litellm_forgets_the_routers_of_each_test():
    """litellm registers each Router's callbacks (its bound methods) process-wide and silently adds no more past
    MAX_CALLBACKS (100 per list): the routers of earlier tests would crowd out a later test's logger (seen: a spy
    that never heard of a call). Routers here live for one test, so their callbacks go with it."""
    import litellm

    names = ("callbacks", "success_callback", "_async_success_callback", "failure_callback", "_async_failure_callback",
             "input_callback")
    before = {name: {id(c) for c in getattr(litellm, name, None) or []} for name in names}
    yield
    for name in names:
        callbacks = getattr(litellm, name, None)
        if isinstance(callbacks, list):
            # a test's routers' bound methods, and the usage counters of their routing strategies (usage-based
            # routing's handler checks every later request's rpm against its own counts: a later test's deployment
            # with the same rpm limit would be refused by an earlier test's handler)
            callbacks[:] = [c for c in callbacks if not isinstance(getattr(c, "__self__", None), litellm.Router)
                            and not (id(c) not in before[name]
                                     and type(c).__module__.startswith("litellm.router_strategy."))]


PRICES = tiny.PRICES


def model_list(targets=("math-model", "history-model", "generalist"), group: str = "auto", prices=None,
               **extra) -> list[dict]:
    out = []
    for t in targets:
        p = {**PRICES, **(prices or {})}[t]
        out.append({"model_name": group,
                    "litellm_params": {"model": f"openai/{t}", "api_key": "sk-test",
                                       "mock_response": f"answer from {t}",
                                       **extra.get(t, {})},
                    "model_info": {"prefill_target": t, "input_cost_per_token": p[0], "output_cost_per_token": p[1]}})
    return out


def live_model_list(api_base: str, group: str = "auto") -> list[dict]:
    """:func:`model_list`'s targets answered by the chat endpoint at ``api_base`` (``fake_openai.FakeOpenAI``) instead
    of litellm's mock responses."""
    out = model_list(group=group, **{t: {"api_base": api_base} for t in ("math-model", "history-model", "generalist")})
    for dep in out:
        del dep["litellm_params"]["mock_response"]
    return out


async def stream_of(router, api: str, prompt: str, model: str = "auto"):  # type: ignore[no-untyped-def]
    """A streamed request of ``api`` (chat, responses, anthropic, google) to ``router``'s group ``model``."""
    messages = [{"role": "user", "content": prompt}]
    if api == "chat":
        return await router.acompletion(model=model, messages=messages, stream=True)
    if api == "responses":
        return await router.aresponses(model=model, input=prompt, stream=True)
    if api == "anthropic":
        return await router.aanthropic_messages(model=model, messages=messages, max_tokens=32, stream=True)
    return await router.agenerate_content_stream(model=model, contents=[{"role": "user", "parts": [{"text": prompt}]}])


async def read_a_chunk_and_drop(stream: Any) -> dict:
    """Read the first chunk of ``stream`` and drop it before its end (a chat UI's stop button), as its only holder
    (pass it straight from the call); its prefill decision."""
    decision = stream._hidden_params["prefill_routing"]
    async for _ in stream:
        break
    del stream
    gc.collect()
    return dict(decision)


def streamed_text(api: str, chunks: list) -> str:
    """The answer text in the chunks of an ``api`` stream (see :func:`stream_of`)."""
    if api == "chat":
        return "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    if api == "responses":
        return "".join(c.delta for c in chunks if getattr(c, "type", None) == "response.output_text.delta")
    events = [json.loads(line[6:]) for c in chunks for line in c.decode().splitlines() if line.startswith("data: {")]
    if api == "anthropic":
        return "".join(e["delta"].get("text", "") for e in events if e["type"] == "content_block_delta")
    return "".join(p["text"] for e in events for p in e["candidates"][0]["content"]["parts"])


MATH_PROMPT = "please explain the integral and the derivative of the equation"
HIST_PROMPT = "tell me why the empire and the king went to war with the dynasty"


# prompts litellm's complexity router (heuristic scorer) puts in its SIMPLE and its COMPLEX/REASONING tier
SIMPLE_PROMPT = "hi"
COMPLEX_PROMPT = ("Think step by step: prove the theorem, then write a python function class that implements the "
                  "algorithm and analyze its complexity")


def cheap_group() -> dict:
    """A plain model group ("cheap") that no bundle target maps."""
    return {"model_name": "cheap", "litellm_params": {"model": "openai/cheap", "api_key": "sk-test",
                                                      "mock_response": "answer from cheap"},
            "model_info": {"input_cost_per_token": 1e-8, "output_cost_per_token": 1e-8}}


def complexity_router(simple: str, complex_: str) -> dict:
    """litellm's complexity router deployment ("smart"): easy tiers to model group ``simple``, hard ones to
    ``complex_``."""
    return {"model_name": "smart", "litellm_params": {
        "model": "auto_router/complexity_router",
        "complexity_router_config": {"tiers": {"SIMPLE": simple, "MEDIUM": simple, "COMPLEX": complex_,
                                               "REASONING": complex_}}}}


def tier_router(name: str, classifier: object, tiers: dict[str, str], **config: object) -> dict:
    """litellm's complexity router deployment ``name`` whose classifier is ``classifier`` (``classifier_type:
    custom``: a PrefillTierClassifier, or the dotted path the proxy imports) and whose tiers go to the model groups
    ``tiers`` names; ``config``: more of its complexity_router_config."""
    return {"model_name": name, "litellm_params": {
        "model": "auto_router/complexity_router",
        "complexity_router_config": {"classifier_type": "custom", "classifier_plugin": classifier, "tiers": tiers,
                                     **config}}}


def rewrite_bundle(directory: Path, edit) -> None:  # type: ignore[no-untyped-def]
    """Write a bundle over ``directory`` the way `train` does (atomic rename), with ``edit`` applied to its
    manifest fields."""
    from litellm_prefill_router.bundle import MANIFEST_NAME, write_bundle

    src = directory.with_name(directory.name + ".src")
    shutil.copytree(directory, src)
    fields = json.loads((src / MANIFEST_NAME).read_text())
    files = {name: src / name for name in fields.pop("files")}
    fields.pop("schema_version")
    edit(fields)
    write_bundle(directory, files, fields)
    shutil.rmtree(src)


def always_cheapest(fields: dict) -> None:
    fields["presets"]["max-quality"]["value"] = 1.0  # tolerance 1: the cheapest candidate (math-model)


# litellm 1.109 deprecated update_settings / upsert_deployment / the routing_strategy attribute for apply(ChangeSet)
# and settings(); the tests change a router the way the installed release documents (older releases: the old names)
def change_settings(router, **settings) -> None:  # type: ignore[no-untyped-def]
    if not callable(getattr(router, "apply", None)):
        router.update_settings(**settings)
        return
    from litellm.router_api import ChangeSet

    router.apply(ChangeSet(settings=settings))


def upsert(router, deployment) -> None:  # type: ignore[no-untyped-def]
    if not callable(getattr(router, "apply", None)):
        router.upsert_deployment(deployment)
        return
    from litellm.router_api import ChangeSet

    router.apply(ChangeSet(upsert=[deployment]))


def strategy_name(router) -> object:  # type: ignore[no-untyped-def]
    from litellm_prefill_router.composition import routing_strategy_of
    from litellm_prefill_router.router import prefill_strategies

    if "router" in prefill_strategies(router):  # litellm 1.110+: simple-shuffle, the prefill strategy registered
        return "prefill"
    strategy = routing_strategy_of(router)
    return getattr(strategy, "value", strategy)


def free_port() -> int:
    """A 127.0.0.1 port nothing listens on (now)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def users_machine_env(**extra: str) -> dict[str, str]:
    """This process's environment as on a user's machine, for a subprocess (tests/test_onnxruntime_import.py,
    tests/test_gunicorn.py): without ORT_DISABLE_TELEMETRY (the package set it here when imported) and the CI
    systems' variables that keep onnxruntime's telemetry off by itself; with ``extra``."""
    from litellm_prefill_router.onnxruntime_import import CI_VARIABLES, VARIABLE

    env = {k: v for k, v in os.environ.items() if k not in CI_VARIABLES and k != VARIABLE}
    return {**env, **extra}
