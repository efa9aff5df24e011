#!/usr/bin/env bash
# The checks to run when a GPU machine is at hand: CUDA paths end to end, and GPU timings.
#   OUT=somewhere bash benchmarks/gpu_check.sh
# 1. the README's run command (device auto -> CUDA), timed, and its leaderboard;
# 2. `mmbench cost` on the GPU (bf16 autocast, the default there) against M, K and batch size;
# 3. the test suite with CUDA visible (tests that pass --device or run the CLI on `auto` take
#    the GPU paths). Expects torch, pandas, tabulate, matplotlib, scikit-learn and pytest
#    installed; gensim and ray are optional (their tests skip or fail by name without them).
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/gpu_check}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 MMBENCH_HOME=${MMBENCH_HOME:-/tmp/mmbench_home}
TESTS_LIMIT=${TESTS_LIMIT:-200}

nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
python3 -m pip install -q --no-deps --no-build-isolation -e . >/dev/null 2>&1 || { echo "pip install -e . failed"; exit 1; }
python3 -c "import torch; print('torch', torch.__version__, '| CUDA', torch.cuda.is_available(), torch.cuda.get_device_name(0) if torch.cuda.is_available() else '')"

echo "== 1. README run command on the GPU"
runs=$(mktemp -d)
start=$SECONDS
mmbench run --posteriors moe,poe --out "$runs" --quiet 2>&1 | tee "$OUT/readme_run.txt"
echo "README run: $((SECONDS - start)) s wall (judges trained from scratch included)" | tee -a "$OUT/readme_run.txt"
python3 - "$runs" <<'PY'
import json, pathlib, sys
for path in sorted(pathlib.Path(sys.argv[1]).glob("*/*/*/run.json")):
    run = json.loads(path.read_text())
    print(path.parent.relative_to(sys.argv[1]), run["status"], f"train {run.get('train_s', 0):.1f} s, eval {run.get('eval_s', 0):.1f} s",
          run.get("provenance", {}).get("device"))
PY
mmbench leaderboard "$runs" > "$OUT/readme_leaderboard.md"

echo "== 2. step cost on the GPU"
start=$SECONDS
mmbench cost --modalities 2..8 --K 5 --batch-size 32 --Ks 1,5,30 --batch-sizes 32,128,512 \
    --repeats 10 --warmup 1 --precision auto --out "$OUT/cost_gpu" 2>&1 | tail -5
echo "cost: $((SECONDS - start)) s"

echo "== 3. tests with CUDA visible (limit ${TESTS_LIMIT} s)"
workers=$(( $(nproc) > 8 ? 8 : $(nproc) ))
timeout "$TESTS_LIMIT" python3 -m pytest -q -p no:cacheprovider -n "$workers" 2>&1 | tail -40 | tee "$OUT/tests.txt"
