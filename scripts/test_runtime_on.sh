#!/usr/bin/env bash
# The runtime's tests on a second, newer Python with the serving extras only (no torch, no transformers): the
# LiteLLM strategy and proxy, LangChain, the semantic drop-in, metrics, predictor, policy, bundle loading and the
# import rules. The test bundle is trained once with .venv's Python (scripts/setup.sh) and handed over
# (PREFILL_TEST_BUNDLE); tests that train or build a model skip there. Catches what differs between Pythons, e.g.
# asyncio.wait_for running its coroutine inline from 3.12 on (session 11: flush_logging lost decision-log lines).
# It also tests the older litellm API: .venv gets the newest litellm whose proxy extra our index can satisfy (1.108.7
# here), this venv PREFILL_TEST_LITELLM (default 1.102.4, the last release before 1.103 changed simple_shuffle's
# arguments, the retry breadcrumbs, the routing-group check and made the proxy refuse to start without a master key).
# PREFILL_TEST_LITELLM_NO_DEPS=1 installs that litellm over what the package's pins resolve to, without its own
# dependency pins: 1.109.1's proxy extra needs a litellm-proxy-extras our package index lacks, so 1.109.1 (the last
# release before litellm's new Router core) is tested that way; any other unmet requirement fails the run.
# PREFILL_TEST_PROXY_PARTS=1 installs that litellm with its own dependencies and the parts of its proxy our index has.
# Usage: bash scripts/test_runtime_on.sh [PYTHON >= 3.10]   (default: the newest 3.13 / 3.12 found, pyenv's included;
#        PREFILL_TEST_PYTHON_MINORS="12" looks for 3.12 only)
set -euo pipefail
cd "$(dirname "$0")/.."
runs() { [ -n "$1" ] && "$1" -c "import sys; assert sys.version_info >= (3, ${2:-12})" >/dev/null 2>&1; }
PY=${1:-}
if [ -z "$PY" ]; then
  for minor in ${PREFILL_TEST_PYTHON_MINORS:-13 12}; do
    for cand in "python3.$minor" "${PYENV_ROOT:-$HOME/.pyenv}"/versions/3."$minor".*/bin/python3; do
      if runs "$cand" "$minor"; then PY=$cand; break 2; fi
    done
  done
fi
if ! runs "$PY" 10; then
  echo "test_runtime_on: no Python >= 3.12 on this machine (or $PY is older than 3.10): the runtime's tests ran on $(.venv/bin/python -V) only" >&2
  exit 0
fi
[ -x .venv/bin/python ] || bash scripts/setup.sh  # the 3.11 venv trains the test bundle
VER=$("$PY" -c 'import sys; print(f"{sys.version_info[0]}.{sys.version_info[1]}")')
VENV=".venv-runtime-$VER"
[ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
"$VENV/bin/python" -m pip install -q --upgrade pip
LITELLM_VERSION=${PREFILL_TEST_LITELLM:-1.102.4}
if [ "${PREFILL_TEST_LITELLM_NO_DEPS:-0}" = "1" ]; then
  "$VENV/bin/python" -m pip install -q -e ".[langchain,proxy,metrics,dev]"
  # PREFILL_TEST_ALSO: more newest releases installed the same way (langchain-core 1.8 pins the same certifi)
  # shellcheck disable=SC2086
  "$VENV/bin/python" -m pip install -q --no-deps "litellm==$LITELLM_VERSION" ${PREFILL_TEST_ALSO:-}
  unmet=$("$VENV/bin/python" -m pip check 2>&1 | grep -v " has requirement certifi>=2026.10.19" || true)
  if [ -n "$unmet" ] && [ "$unmet" != "No broken requirements found." ]; then
    echo "test_runtime_on: litellm $LITELLM_VERSION ${PREFILL_TEST_ALSO:-} need more than certifi here:" >&2
    echo "$unmet" >&2
    exit 1
  fi
elif [ "${PREFILL_TEST_PROXY_PARTS:-0}" = "1" ]; then
  # a litellm whose proxy extra our package index cannot satisfy (1.110+: a litellm-proxy package, and its own
  # litellm-proxy-extras / litellm-enterprise releases): litellm with its own dependencies, the package's extras but
  # the proxy, then every requirement of litellm's proxy extra the index has - litellm-proxy left out, those two at
  # the release the index has. The proxy server itself ships in litellm's wheel. Every requirement must be met.
  "$VENV/bin/python" -m pip install -q -e ".[langchain,metrics,dev]" "litellm==$LITELLM_VERSION"
  proxy_parts=$("$VENV/bin/python" - <<'PY'
import importlib.metadata
from packaging.requirements import Requirement
for line in importlib.metadata.requires("litellm") or ():
    req = Requirement(line)
    if req.marker is None or not req.marker.evaluate({"extra": "proxy"}) or req.marker.evaluate({"extra": ""}):
        continue
    if req.name != "litellm-proxy":
        print(req.name if req.name in ("litellm-proxy-extras", "litellm-enterprise") else f"{req.name}{req.specifier}")
PY
)
  # shellcheck disable=SC2086
  "$VENV/bin/python" -m pip install -q $proxy_parts
  unmet=$("$VENV/bin/python" -m pip check 2>&1 || true)
  if [ "$unmet" != "No broken requirements found." ]; then
    echo "test_runtime_on: litellm $LITELLM_VERSION leaves requirements unmet here:" >&2
    echo "$unmet" >&2
    exit 1
  fi
else
  "$VENV/bin/python" -m pip install -q -e ".[langchain,proxy,metrics,dev]" "litellm[proxy]==$LITELLM_VERSION"
fi
if "$VENV/bin/python" -c 'import torch' 2>/dev/null; then
  echo "test_runtime_on: torch is installed in $VENV; the serving extras must not pull it" >&2
  exit 1
fi
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 LITELLM_LOCAL_MODEL_COST_MAP=True TOKENIZERS_PARALLELISM=false
PREFILL_ROUTER_CACHE="$WORK/cache" .venv/bin/python tests/tiny.py "$WORK" >/dev/null
echo "runtime tests on Python $VER ($VENV), $("$VENV/bin/python" -c 'import importlib.metadata as m; print(", ".join(f"{p} {m.version(p)}" for p in ("litellm", "langchain-core", "huggingface_hub")))'):"
set +e
# PREFILL_TEST_FILES: the test files to run (default: every runtime test file)
DEFAULT_FILES="tests/test_router.py tests/test_proxy.py tests/test_langchain.py tests/test_semantic.py tests/test_metrics.py \
  tests/test_predictor.py tests/test_policy.py tests/test_bundle.py tests/test_prompt.py \
  tests/test_runtime_imports.py tests/test_shared_metadata.py tests/test_litellm_routing.py tests/test_hub.py \
  tests/test_replay.py tests/test_limits.py tests/test_external_data.py tests/test_providers.py \
  tests/test_tune.py tests/test_autotune.py tests/test_drift.py tests/test_answer_lengths.py \
  tests/test_tier_classifier.py tests/test_routing_plugin.py tests/test_hook_settings.py \
  tests/test_litellm_support.py tests/test_examples.py tests/test_collect.py tests/test_sync_bridge.py \
  tests/test_stream_watch.py tests/test_forking.py tests/test_onnxruntime_import.py \
  tests/test_gunicorn.py"
# shellcheck disable=SC2086
PREFILL_TEST_BUNDLE="$WORK/bundle" PREFILL_TEST_EXTERNAL_BUNDLE="$WORK/bundle-external" "$VENV/bin/python" -m pytest -p no:cacheprovider -q -rs \
  ${PREFILL_TEST_FILES:-$DEFAULT_FILES}
rc=$?
set -e
[ "$rc" -eq 5 ] && { echo "pytest collected no tests: failing on purpose" >&2; exit 1; }
exit "$rc"
