"""Bundles on the Hugging Face Hub: `prefill-router push`, then `bundle: hf://owner/name@rev` in LiteLLM, served from
the Hugging Face cache offline, and a branch's new commit picked up by a reload. The Hub is tests/fake_hub.py on
127.0.0.1, reached by huggingface_hub's own client (``HF_ENDPOINT``) in a child process: huggingface_hub reads its
endpoint and offline mode when imported."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from fake_hub import FakeHub

from conftest import model_list
from litellm_prefill_router.bundle import load_bundle
from litellm_prefill_router.errors import BundleChecksumError, BundleLocationError
from litellm_prefill_router.hub import HubBundleRef, parse_hub_reference
from litellm_prefill_router.publish import push_bundle

TESTS = Path(__file__).parent
COMMIT = "0123456789abcdef0123456789abcdef01234567"


def script(*pieces: str) -> str:
    """Python source from indented pieces (each dedented on its own)."""
    return "".join(textwrap.dedent(p) for p in pieces)


def run_py(code: str, hub: FakeHub, hf_home: Path, *, offline: bool = False) -> dict:
    """Run ``code`` in a child Python against ``hub``; it prints one JSON object last."""
    env = {**os.environ, "HF_ENDPOINT": hub.url, "HF_HUB_OFFLINE": "1" if offline else "0", "HF_HOME": str(hf_home),
           "HF_TOKEN": "hf_test", "HF_HUB_DISABLE_TELEMETRY": "1", "HF_HUB_DISABLE_PROGRESS_BARS": "1",
           "PYTHONPATH": os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")])}
    env.pop("HF_HUB_CACHE", None)
    prelude = "import asyncio, json, sys\nfrom conftest import HIST_PROMPT, model_list\n"
    done = subprocess.run([sys.executable, "-c", prelude + code], env=env, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-4000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def served_by(bundle: str, *, extra: str = "") -> str:
    """Code that builds a LiteLLM router on ``bundle`` and routes a history prompt."""
    return textwrap.dedent(f"""
    from litellm_prefill_router import PrefillRouter
    r = PrefillRouter(model_list=model_list(), routing_strategy="prefill",
                      routing_strategy_args={{"bundle": {bundle!r}, "preset": "max-quality"{extra}}})
    def answer():
        resp = asyncio.run(r.acompletion(model="auto", messages=[{{"role": "user", "content": HIST_PROMPT}}]))
        return resp.choices[0].message.content
    """)


@pytest.mark.parametrize(("text", "ref"), [
    ("hf://acme/router", HubBundleRef("acme/router")),
    ("hf://models/acme/router", HubBundleRef("acme/router")),
    ("hf://acme/router@v1", HubBundleRef("acme/router", "v1")),
    (f"hf://acme/router@{COMMIT}/routers/llm", HubBundleRef("acme/router", COMMIT, "routers/llm")),
    ("hf://acme/router@refs/pr/3/routers", HubBundleRef("acme/router", "refs/pr/3", "routers")),
    ("hf://acme/router@release%2Fv2", HubBundleRef("acme/router", "release/v2")),
    ("hf://acme/router/routers/llm/", HubBundleRef("acme/router", None, "routers/llm")),
])
def test_hub_references_follow_huggingface_hubs_uri_grammar(text: str, ref: HubBundleRef) -> None:
    assert parse_hub_reference(text) == ref
    assert parse_hub_reference(str(ref)) == ref  # it prints back as a reference that parses the same
    assert ref.pinned == (ref.revision == COMMIT)


@pytest.mark.parametrize(("text", "message"), [
    ("hf://acme", "repository name '' is not a valid"),
    ("hf://acme/", "repository name '' is not a valid"),
    ("hf://-acme/router", "owner '-acme' is not a valid"),
    ("hf://datasets/acme/rows", "names a dataset repository; a bundle lives in a model repository"),
    ("hf://acme/router@", "empty revision"),
    ("hf://acme/router/../other", "plain relative folder"),
])
def test_a_malformed_hub_reference_is_refused_naming_the_syntax(text: str, message: str, bundle_dir: Path) -> None:
    from litellm_prefill_router import PrefillRouter

    with pytest.raises(BundleLocationError, match=message):
        parse_hub_reference(text)
    with pytest.raises(BundleLocationError, match=r"hf://owner/name\[@revision\]|model repository|relative folder"):
        PrefillRouter(model_list=model_list(), routing_strategy="prefill", routing_strategy_args={"bundle": text})


def test_a_pushed_bundle_is_served_by_litellm_from_the_hub_and_offline_from_the_cache(bundle_dir: Path,
                                                                                      tmp_path: Path) -> None:
    with FakeHub() as hub:
        pushed = run_py(script(f"""
        from litellm_prefill_router.cli import main
        assert main(["push", "--bundle", {str(bundle_dir)!r}, "--repo", "acme/router", "--tag", "v1",
                     "--license", "apache-2.0"]) == 0
        """, served_by("hf://acme/router@v1"), """
        print(json.dumps({"source": r.prefill_strategy.predictor.bundle.source, "answer": answer()}))
        """), hub, tmp_path / "hf")
        repo = hub.repos["acme/router"]
        commit = repo.refs["v1"]
        assert repo.refs["main"] == commit  # one commit: the files and the card
        files = repo.commits[commit]
        card = files["README.md"].decode()
        assert card.startswith("---\nlicense: apache-2.0\n") and "hf://acme/router@v1" in card
        assert set(files) - {"README.md"} == {"manifest.json", *json.loads(files["manifest.json"])["files"]}
        assert pushed == {"source": f"hf://acme/router@{commit}", "answer": "answer from history-model"}
        seen = len(hub.requests)

        # the Hub unreachable (offline mode): the tag's snapshot is served from the cache, and nothing is asked
        config = tmp_path / "config.yaml"  # the proxy's config, checked as the proxy would build it
        config.write_text(json.dumps({"model_list": model_list(), "router_settings": {
            "routing_strategy": "prefill", "routing_strategy_args": {"bundle": "hf://acme/router@v1"}}}))
        offline = run_py(script(served_by("hf://acme/router@v1"), f"""
        from litellm_prefill_router.cli import main
        assert main(["check", "--config", {str(config)!r}, "--json", {str(tmp_path / "check.json")!r}]) == 0
        assert main(["pull", "--bundle", "hf://acme/router@v1", "--out", {str(tmp_path / "pulled")!r}]) == 0
        """, """
        from litellm_prefill_router import BundleError, load_bundle
        try:
            load_bundle("hf://acme/router@v2")
            missing = "loaded"
        except BundleError as err:
            missing = f"{type(err).__name__}: {err}"
        print(json.dumps({"answer": answer(), "missing": missing}))
        """), hub, tmp_path / "hf", offline=True)
        assert offline["answer"] == "answer from history-model"
        assert offline["missing"].startswith("BundleLocationError: bundle 'hf://acme/router@v2' is not in the Hugging "
                                             "Face cache")
        assert "HF_HUB_OFFLINE=1" in offline["missing"]
        assert len(hub.requests) == seen
        pulled = tmp_path / "pulled"  # a plain copy for an image without the Hub: files, not links into the cache
        assert not any(p.is_symlink() for p in pulled.iterdir())
        assert sorted(p.name for p in pulled.iterdir()) == sorted(set(files) - {"README.md"})
        assert load_bundle(pulled).manifest == load_bundle(bundle_dir).manifest
        checked = json.loads((tmp_path / "check.json").read_text())["strategies"][0]
        assert (checked["bundle"], checked["bundle_served"]) == ("hf://acme/router@v1", f"hf://acme/router@{commit}")


def test_a_router_on_a_hub_branch_serves_the_bundle_pushed_since_after_a_reload(bundle_copy: Path,
                                                                                tmp_path: Path) -> None:
    with FakeHub() as hub:
        out = run_py(script(f"""
        from pathlib import Path
        from conftest import always_cheapest, rewrite_bundle
        from litellm_prefill_router.publish import push_bundle
        first = push_bundle({str(bundle_copy)!r}, "acme/router", licence="apache-2.0")
        """, served_by("hf://acme/router", extra=', "reload_interval_s": 3600'), f"""
        before = (answer(), r.prefill_strategy.predictor.bundle.source)
        unchanged = r.prefill_strategy.reload_if_changed()
        rewrite_bundle(Path({str(bundle_copy)!r}), always_cheapest)  # retrained: max-quality now picks the cheapest
        second = push_bundle({str(bundle_copy)!r}, "acme/router", licence="apache-2.0")
        reloaded = r.prefill_strategy.reload_if_changed()
        after = (answer(), r.prefill_strategy.predictor.bundle.source)
        print(json.dumps({{"first": first.reference, "second": second.reference, "before": before,
                          "unchanged": unchanged, "reloaded": reloaded, "after": after,
                          "again": r.prefill_strategy.reload_if_changed()}}))
        """), hub, tmp_path / "hf")
    assert out["first"] != out["second"]
    assert out["before"] == ["answer from history-model", out["first"]]
    assert out["unchanged"] is False
    assert out["reloaded"] is True
    assert out["after"] == ["answer from math-model", out["second"]]
    assert out["again"] is False


def test_hub_errors_name_the_repository_revision_or_folder_and_the_fix(bundle_dir: Path, tmp_path: Path) -> None:
    with FakeHub() as hub:
        pushed = run_py(script(f"""
        from litellm_prefill_router.publish import push_bundle
        small = push_bundle({str(bundle_dir)!r}, "acme/router", path_in_repo="routers/small", licence="apache-2.0")
        push_bundle({str(bundle_dir)!r}, "acme/gated", licence="apache-2.0")
        push_bundle({str(bundle_dir)!r}, "acme/partial", licence="apache-2.0")
        print(json.dumps({{"small": small.reference, "files": small.files}}))
        """), hub, tmp_path / "hf")
        hub.repos["acme/gated"].gated = True
        partial = hub.repos["acme/partial"]
        del partial.commits[partial.refs["main"]]["trunk.onnx"]  # a repository someone uploaded part of a bundle to
        out = run_py(script("""
        from litellm_prefill_router import BundleError, load_bundle
        errors = {}
        for ref in ["hf://acme/nothing", "hf://acme/router@nope", "hf://acme/router", "hf://acme/router/routers",
                    "hf://acme/gated", "hf://acme/partial"]:
            try:
                load_bundle(ref)
                errors[ref] = "loaded"
            except BundleError as err:
                errors[ref] = f"{type(err).__name__}: {err}"
        print(json.dumps({"errors": errors,
                          "small": load_bundle("hf://acme/router/routers/small").manifest.target_names}))
        """), hub, tmp_path / "hf")
    assert pushed["small"].startswith("hf://acme/router@") and pushed["small"].endswith("/routers/small")
    assert "README.md" not in pushed["files"]  # a bundle in a folder gets no card at the repository's root
    assert sorted(out["small"]) == ["generalist", "history-model", "math-model"]
    errors = out["errors"]
    assert "repository acme/nothing was not found on the Hub" in errors["hf://acme/nothing"]
    assert "or set HF_TOKEN" in errors["hf://acme/nothing"]
    assert "acme/router has no revision 'nope'" in errors["hf://acme/router@nope"]
    assert "has no manifest.json at its root" in errors["hf://acme/router"]
    assert "has no manifest.json under 'routers'" in errors["hf://acme/router/routers"]
    assert "acme/gated is a gated repository" in errors["hf://acme/gated"]
    assert errors["hf://acme/partial"].startswith("BundleMissingFileError: bundle file 'trunk.onnx' listed in")
    assert "the repository of hf://acme/partial@" in errors["hf://acme/partial"]
    assert "push the whole bundle again" in errors["hf://acme/partial"]
    assert all(e.startswith("BundleLocationError: ") for ref, e in errors.items() if ref != "hf://acme/partial")


def test_a_cache_that_cannot_be_written_is_named_with_the_fix(bundle_dir: Path, tmp_path: Path) -> None:
    blocked = tmp_path / "blocked"
    blocked.write_text("a file where HF_HOME should be a directory (as a read-only image would refuse it)")
    with FakeHub() as hub:
        run_py(script(f"""
        from litellm_prefill_router.publish import push_bundle
        push_bundle({str(bundle_dir)!r}, "acme/router", licence="apache-2.0")
        print("{{}}")
        """), hub, tmp_path / "hf")
        out = run_py(script("""
        from litellm_prefill_router import BundleError, load_bundle
        try:
            load_bundle("hf://acme/router")
            print(json.dumps({"error": None}))
        except BundleError as err:
            print(json.dumps({"error": f"{type(err).__name__}: {err}"}))
        """), hub, blocked)
    assert out["error"].startswith(
        f"BundleLocationError: bundle 'hf://acme/router': the Hugging Face cache at {blocked}")
    assert "set HF_HOME (or HF_HUB_CACHE) to a writable directory" in out["error"]
    assert "prefill-router pull --bundle hf://acme/router --out DIR" in out["error"]


def test_push_refuses_a_broken_bundle_or_an_unknown_licence_before_sending_anything(bundle_copy: Path) -> None:
    # HF_HUB_OFFLINE=1 in this process: a call to the Hub would fail with a connection error instead
    with pytest.raises(BundleLocationError, match="the licence of encoder .* is not known.*--license"):
        push_bundle(bundle_copy, "acme/router")
    with pytest.raises(BundleLocationError, match="owner '-acme' is not a valid"):
        push_bundle(bundle_copy, "-acme/router", licence="apache-2.0")
    (bundle_copy / "trunk.onnx").write_bytes(b"not the trained scorer")
    with pytest.raises(BundleChecksumError, match="trunk.onnx"):
        push_bundle(bundle_copy, "acme/router", licence="apache-2.0")


def test_train_continue_from_a_hub_bundle_keeps_its_encoder_and_names_the_commit(bundle_dir: Path, tiny_data: Path,
                                                                                 tmp_path: Path) -> None:
    pytest.importorskip("torch")
    out = tmp_path / "continued"
    with FakeHub() as hub:
        done = run_py(script(f"""
        from litellm_prefill_router.cli import main
        from litellm_prefill_router.publish import push_bundle
        pushed = push_bundle({str(bundle_dir)!r}, "acme/router", tag="v1", licence="apache-2.0")
        rc = main(["train", "--data", {str(tiny_data)!r}, "--continue-from", "hf://acme/router@v1",
                   "--out", {str(out)!r}, "--seeds", "2", "--keep", "1"])
        print(json.dumps({{"rc": rc, "pushed": pushed.reference}}))
        """), hub, tmp_path / "hf")
    assert done["rc"] == 0
    new = json.loads((out / "manifest.json").read_text())
    old = json.loads((bundle_dir / "manifest.json").read_text())
    assert new["creator"]["continued_from"] == done["pushed"]  # hf://acme/router@<commit>
    assert new["files"]["encoder.onnx"] == old["files"]["encoder.onnx"]  # the encoder is reused as is


def test_a_litellm_proxy_serves_a_bundle_named_by_an_hf_reference_in_its_config(bundle_dir: Path,
                                                                                 tmp_path: Path) -> None:
    import yaml
    from test_proxy import _post, _proxy

    from conftest import HIST_PROMPT, MATH_PROMPT

    with FakeHub() as hub:
        pushed = run_py(script(f"""
        from litellm_prefill_router.publish import push_bundle
        print(json.dumps({{"ref": push_bundle({str(bundle_dir)!r}, "acme/router", tag="v1",
                                             licence="apache-2.0").reference}}))
        """), hub, tmp_path / "hf")
        cfg = tmp_path / "config.yaml"
        cfg.write_text(yaml.safe_dump({
            "model_list": model_list(),
            "litellm_settings": {"callbacks": "litellm_prefill_router.proxy_hook.proxy_handler_instance"},
            "general_settings": {"custom_auth": "proxy_spy.key_auth"},  # the tests' keys, as in test_proxy
            "router_settings": {"routing_strategy": "prefill", "routing_strategy_args": {
                "bundle": "os.environ/PREFILL_BUNDLE", "preset": "max-quality"}}}))
        env = {"PREFILL_BUNDLE": "hf://acme/router@v1", "HF_ENDPOINT": hub.url, "HF_HUB_OFFLINE": "0",
               "HF_HOME": str(tmp_path / "hf-proxy"), "HF_HUB_DISABLE_PROGRESS_BARS": "1"}
        with _proxy(cfg, tmp_path, env) as port:
            math, math_headers = _post(port, MATH_PROMPT)
            hist, hist_headers = _post(port, HIST_PROMPT)
        fetched = [r for r in hub.requests if "/resolve/" in r and r.startswith("GET")]
    assert math["choices"][0]["message"]["content"] == "answer from math-model"
    assert hist["choices"][0]["message"]["content"] == "answer from history-model"
    assert (math_headers["x-prefill-target"], hist_headers["x-prefill-target"]) == ("math-model", "history-model")
    commit = pushed["ref"].rsplit("@", 1)[1]
    assert fetched and all(f"/acme/router/resolve/{commit}/" in r for r in fetched)  # the tag's commit, once
