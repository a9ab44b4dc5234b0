#!/usr/bin/env bash
# Install everything and run the whole test suite (no network beyond the package index, no GPU).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
. .venv/bin/activate
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 LITELLM_LOCAL_MODEL_COST_MAP=True TOKENIZERS_PARALLELISM=false
set +e
python -m pytest -p no:cacheprovider -q -rs "$@"
rc=$?
set -e
if [ "$rc" -eq 5 ]; then
  echo "pytest collected no tests: failing on purpose" >&2
  exit 1
fi
# the whole suite (no pytest arguments): the runtime's tests again on newer Pythons, serving extras only - on 3.13 (or
# 3.12) with litellm 1.102.4, then on 3.12 (or 3.13) with 1.109.1, the last release before the new Router core, and
# langchain-core 1.8.2 (installed without their pins: 1.109.1's proxy extra needs a litellm-proxy-extras our package
# index lacks) - then, on the same venv, with litellm 1.110.2, the newest release, and the parts of its proxy extra
# our index has (it lacks the litellm-proxy package 1.110's proxy extra names; the proxy server ships in litellm's
# wheel): its Router refuses subclasses, the strategy goes in through register_plugin and the proxy's Router through
# Router.from_config, and prefill routing groups are simple-shuffle groups to litellm, routed by a dispatcher
if [ "$#" -eq 0 ]; then
  bash scripts/test_runtime_on.sh || rc=$((rc == 0 ? 1 : rc))
  PREFILL_TEST_LITELLM=1.109.1 PREFILL_TEST_LITELLM_NO_DEPS=1 PREFILL_TEST_ALSO="langchain-core==1.8.2" \
    PREFILL_TEST_PYTHON_MINORS="12 13" \
    bash scripts/test_runtime_on.sh || rc=$((rc == 0 ? 1 : rc))
  PREFILL_TEST_LITELLM=1.110.2 PREFILL_TEST_PROXY_PARTS=1 PREFILL_TEST_PYTHON_MINORS="12 13" \
    bash scripts/test_runtime_on.sh || rc=$((rc == 0 ? 1 : rc))
fi
exit "$rc"
