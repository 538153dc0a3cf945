#!/usr/bin/env bash
# The GPU checks of the capture (issue 28), in one run on a CUDA machine, every result under $OUT:
#   sync_test.txt     tests/unit/test_detection.py -k cuda: a capture on CUDA (Triton and torch paths)
#                     makes no synchronising call inside any block's hook (torch's sync debug mode
#                     set to "error" there), and its tables equal the CPU capture's
#   kernel_bench.txt  massive/kernels/bench.py: the Triton top-k kernel against torch (times, bandwidth, exactness)
#   peers_cuda.txt    benchmarks/peers.py --device cuda: plain / massive.capture / nnsight /
#                     TransformerLens side by side, time and peak allocation, on $SHAPES
#   environment.txt   the GPU, driver, torch, triton and the commit
# Run from the repository root, in an environment with the project and its test and peers extras
# (pip install -e ".[test,peers]"); the model and texts come from the default DAG's fetch
# (snakemake cache/models/smollm2_135m/fetched.json cache/corpora/wiki_sample.parquet), or name
# others with MODEL= and TEXTS=. Exit status: 0 when every step ran and passed.
#
#   OUT=/tmp/gpu bash scripts/gpu_check.sh
#   PYTHON=.venv/bin/python SHAPES=16x256,2x2048,4x4096 ROUNDS=5 bash scripts/gpu_check.sh
set -u
OUT=${OUT:-results/gpu_check}
PY=${PYTHON:-python}
MODEL=${MODEL:-cache/models/smollm2_135m/hf}
TEXTS=${TEXTS:-cache/corpora/wiki_sample.parquet}
SHAPES=${SHAPES:-16x256,2x2048,4x4096}
ROUNDS=${ROUNDS:-5}
mkdir -p "$OUT"
status=0

if ! "$PY" -c "import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)"; then
    echo "gpu_check: no CUDA device visible to $PY: nothing checked" | tee "$OUT/summary.txt"
    exit 1
fi
{
    nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv 2>&1
    "$PY" -c "import torch, triton; print('torch', torch.__version__, 'cuda', torch.version.cuda, 'triton', triton.__version__)" 2>&1
    echo "commit $(git rev-parse HEAD 2>/dev/null || echo unknown)"
} > "$OUT/environment.txt"

step() {  # step NAME FILE COMMAND...: run, keep its output, note the result
    local name=$1 file=$2
    shift 2
    echo "== $name: $*" | tee -a "$OUT/summary.txt"
    if "$@" > "$OUT/$file" 2>&1; then
        echo "   ok ($file)" | tee -a "$OUT/summary.txt"
    else
        echo "   FAILED with status $? ($file)" | tee -a "$OUT/summary.txt"
        status=1
    fi
}

step "no synchronisation inside the hooks" sync_test.txt \
    "$PY" -m pytest -q -p no:cacheprovider tests/unit/test_detection.py -k "cuda or device_path"
step "Triton kernel benchmark" kernel_bench.txt "$PY" massive/kernels/bench.py
if [ -d "$MODEL" ] && [ -f "$TEXTS" ]; then
    step "peers on CUDA" peers_cuda.txt \
        "$PY" benchmarks/peers.py --device cuda --model "$MODEL" --texts "$TEXTS" --shapes "$SHAPES" --rounds "$ROUNDS"
else
    echo "== peers on CUDA: skipped, $MODEL or $TEXTS is missing (fetch them: see the header)" | tee -a "$OUT/summary.txt"
    status=1
fi
exit $status
