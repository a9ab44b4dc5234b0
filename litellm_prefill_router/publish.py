"""``prefill-router push``: publish a bundle to the Hugging Face Hub, with a model card, in one commit.

Servers then load it as ``bundle: hf://owner/name@<tag or commit>`` (see :mod:`litellm_prefill_router.hub`). The
bundle is verified before anything is sent (a bundle that would not load is never published); its files and the
card go up in a single commit, so a server that loads the branch meanwhile sees the old bundle or the new one,
never a mix. The card states the encoder's licence: a bundle carries the encoder's weights (truncated), so it is
distributed under the encoder's terms.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from .bundle import MANIFEST_NAME, Bundle, load_bundle
from .errors import BundleLocationError
from .hub import HubBundleRef, parse_hub_reference, transport_errors

# the encoders a bundle can be trained from offline (training.encoders) and common hub ids -> Hub licence id
_ENCODER_LICENCES = (
    ("HuggingFaceTB/SmolLM2", "apache-2.0"),
    ("google/gemma", "gemma"),
    ("sentence-transformers/all-MiniLM", "apache-2.0"),
    ("Qwen/Qwen2.5", "apache-2.0"),
)


def encoder_licence(encoder_id: str) -> str | None:
    """The Hub licence id of a known encoder (None: unknown - the publisher names it)."""
    return next((lic for prefix, lic in _ENCODER_LICENCES if encoder_id.startswith(prefix)), None)


def model_card(bundle: Bundle, repo_id: str, *, licence: str, revision_hint: str = "main") -> str:
    """A Hub model card (README.md) for ``bundle``: what it routes, how well, and how to serve it."""
    m = bundle.manifest
    report = bundle.report()
    raw_test = report.get("test")
    test: dict = raw_test if isinstance(raw_test, dict) else {}
    base = m.encoder.id.split(" ")[0]
    front = ["---", f"license: {licence}", "library_name: litellm-prefill-router",
             "pipeline_tag: text-classification",
             "tags:", "- llm-router", "- litellm", "- langchain", "- onnx", "- prefill-router"]
    if "/" in base:
        front += [f"base_model: {base}"]
    front += ["---", ""]
    ref = f"hf://{repo_id}@{revision_hint}"
    rows = "\n".join(
        f"| {t.name} | {t.prior_accuracy:.3f} | {'-' if t.test_auc is None else f'{t.test_auc:.3f}'} | "
        f"{(t.input_cost_per_token or 0) * 1e6:.3g} / {(t.output_cost_per_token or 0) * 1e6:.3g} |"
        for t in m.targets)
    presets = "\n".join(
        f"| {name}{' (default)' if name == m.default_preset else ''} | {p.kind} {p.value:g} | "
        f"{'-' if p.validation_accuracy is None else f'{p.validation_accuracy:.3f}'} | {p.description} |"
        for name, p in m.presets.items())
    test_line = (f"Mean per-target AUC on the held-out test split: **{test['mean_auc']:.3f}** "
                 f"({test.get('n', '?')} prompts).\n\n" if isinstance(test.get("mean_auc"), float) else "")
    return "\n".join(front) + f"""# {repo_id.split('/')[-1]}: a prefill router bundle

Routes each LLM request to the target model most likely to answer it correctly at the lowest cost, by reading the
prefill activations of **{m.encoder.id}** (layers {list(m.encoder.layers)}, {' + '.join(m.encoder.pooling)} pooling,
{'int8' if m.encoder.quantized else 'fp32'} ONNX, at most {m.encoder.max_prefill_tokens} prompt tokens). Served by
[litellm-prefill-router](https://pypi.org/project/litellm-prefill-router/) without torch.

{test_line}| target | prior accuracy | test AUC | USD / M tokens (in / out) |
|---|---|---|---|
{rows}

| preset | policy | validation accuracy | description |
|---|---|---|---|
{presets}

## Use it

LiteLLM (SDK or proxy `router_settings`), each deployment naming its target in `model_info.prefill_target`:

```yaml
router_settings:
  routing_strategy: prefill
  routing_strategy_args: {{bundle: "{ref}", preset: {m.default_preset or 'balanced'}}}
```

LangChain: `PrefillRouterRunnable(runnables={{...}}, bundle="{ref}")`. Pin a tag or a commit in production
(`@v1`, `@<commit>`): a branch is looked up again on each load and reload.

## Licence

The bundle holds the encoder's first {max(m.encoder.layers)} layers, so it is distributed under the encoder's terms
(`{licence}`). Trained with {', '.join(f'{k} {v}' for k, v in m.creator.items()) or 'litellm-prefill-router'}.
"""


@dataclass(frozen=True)
class PushResult:
    reference: str  # hf://owner/name@<commit>[/path]: what servers load (pinned)
    commit: str
    commit_url: str
    files: tuple[str, ...]


def push_bundle(bundle_dir: str | os.PathLike[str], repo: str, *, path_in_repo: str = "", private: bool | None = None,
                branch: str | None = None, tag: str | None = None, licence: str | None = None,
                commit_message: str | None = None, token: str | None = None, card: bool = True) -> PushResult:
    """Verify the bundle at ``bundle_dir`` and commit it (plus a model card at the repository's root, unless
    ``path_in_repo`` puts it in a folder or ``card=False``) to the model repository ``repo`` ("owner/name", created
    if missing); ``tag`` tags that commit. Raises :class:`BundleLocationError` naming what the Hub refused."""
    ref = parse_hub_reference(f"hf://{repo}")
    path = path_in_repo.strip("/")
    if path:
        parse_hub_reference(f"hf://{repo}/{path}")  # the same rules as a reference that loads it
    bundle = load_bundle(bundle_dir)  # verified: a bundle that would not load is never published
    lic = licence or encoder_licence(bundle.manifest.encoder.id)
    if lic is None:
        raise BundleLocationError(
            f"the licence of encoder {bundle.manifest.encoder.id!r} is not known to litellm-prefill-router; a bundle "
            "carries the encoder's weights, so name the encoder's licence: --license <Hub licence id> (e.g. "
            "apache-2.0, mit, llama3.1, other)")
    try:
        from huggingface_hub import CommitOperationAdd, HfApi
        from huggingface_hub.errors import HfHubHTTPError
    except ImportError as err:
        raise BundleLocationError(f"pushing a bundle needs huggingface_hub>=0.26: pip install "
                                  f"'huggingface_hub>=0.26' ({err})") from err
    from . import __version__

    api = HfApi(token=token, library_name="litellm-prefill-router", library_version=__version__)
    prefix = f"{path}/" if path else ""
    names = [MANIFEST_NAME, *sorted(bundle.manifest.files)]
    ops = [CommitOperationAdd(path_in_repo=prefix + n, path_or_fileobj=str(bundle.path(n) if n != MANIFEST_NAME
                                                                             else bundle.directory / n))
           for n in names]
    if card and not path:
        text = model_card(bundle, ref.repo_id, licence=lic, revision_hint=tag or branch or "main")
        ops.append(CommitOperationAdd(path_in_repo="README.md", path_or_fileobj=text.encode("utf-8")))
    try:
        api.create_repo(ref.repo_id, repo_type="model", private=private, exist_ok=True)
        if branch:
            api.create_branch(ref.repo_id, branch=branch, repo_type="model", exist_ok=True)
        info = api.create_commit(ref.repo_id, operations=ops, repo_type="model", revision=branch,
                                 commit_message=commit_message or f"prefill router bundle: "
                                 f"{len(bundle.manifest.targets)} targets, encoder {bundle.manifest.encoder.id}")
        if tag:
            api.create_tag(ref.repo_id, tag=tag, revision=info.oid, repo_type="model")
    except HfHubHTTPError as err:
        raise BundleLocationError(f"pushing bundle {Path(bundle_dir)} to {ref.repo_id} failed: {err} (log in with "
                                  "`hf auth login` or set HF_TOKEN to a token with write access)") from err
    except transport_errors() as err:  # no network, HF_HUB_OFFLINE=1
        raise BundleLocationError(f"pushing bundle {Path(bundle_dir)} to {ref.repo_id} failed: "
                                  f"{type(err).__name__}: {err}") from err
    return PushResult(reference=str(HubBundleRef(ref.repo_id, info.oid, path)), commit=info.oid,
                      commit_url=str(info.commit_url), files=tuple(op.path_in_repo for op in ops))
