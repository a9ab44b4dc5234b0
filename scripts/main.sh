#!/usr/bin/env bash
# The main job: install, train a bundle on the shared routing dataset with the default offline encoder
# (SmolLM2-135M-Instruct), check the example proxy config against it, then route sample prompts through
# litellm.Router(routing_strategy="prefill"), sum up its decision log, replay it with a cheaper policy, tune the
# policy to a budget on it and check it for drift from the training data.
#   PREFILL_ROUTER_DATA  dataset directory (default: ../shared/datasets/llmrouter)
#   BUNDLE               output bundle directory (default: bundles/llmrouter)
set -euo pipefail
cd "$(dirname "$0")/.."
WITH_ENCODER_WEIGHTS=1 bash scripts/setup.sh
. .venv/bin/activate
export HF_HUB_OFFLINE=1 LITELLM_LOCAL_MODEL_COST_MAP=True TOKENIZERS_PARALLELISM=false
DATA=${PREFILL_ROUTER_DATA:-../shared/datasets/llmrouter}
BUNDLE=${BUNDLE:-bundles/llmrouter}
prefill-router -v train --data "$DATA" --out "$BUNDLE" --encoder smollm2 ${TRAIN_ARGS:-}
prefill-router info --bundle "$BUNDLE"
# what the example proxy config would do with this bundle (mapping, prices, a sample route), before serving anything
PREFILL_BUNDLE="$BUNDLE" prefill-router check --config examples/litellm_proxy/config.yaml --prompt "What is 17 * 23?"
LOG="$BUNDLE-demo-decisions.jsonl"
rm -f "$LOG"
python examples/litellm_sdk.py --bundle "$BUNDLE" --models-json "$DATA/models.json" --decision-log "$LOG"
# what the router did, from its decision log: routes, latency, cost and savings against each call's baseline
prefill-router stats --log "$LOG"
# what a cheaper policy (or a retrained bundle: --bundle NEW) would have done with the same calls, offline
prefill-router replay --log "$LOG" --bundle "$BUNDLE" --preset min-cost --quiet
# the tolerance / lambda that halves the spend on this traffic (vs each call's dearest candidate), and its expected accuracy
prefill-router tune --log "$LOG" --savings 0.5
# does the traffic still look like the training data? (7 calls are too few for a verdict: it says so; on real traffic
# it compares each target's P(correct), the prompt lengths and the share of novel prompts with the bundle's reference)
prefill-router drift --log "$LOG" --bundle "$BUNDLE"
