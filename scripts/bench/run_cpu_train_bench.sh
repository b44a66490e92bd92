#!/usr/bin/env bash
# CPU training benchmark, side by side in one invocation: jetmoe (bench/bench_train.cpp) against Hugging Face
# transformers' JetMoeForCausalLM + torch.optim.AdamW (scripts/bench/bench_hf_train.py): same preset, batch,
# sequence length, thread count and step definition (forward, CE + original JetMoE router losses, backward,
# clipping, AdamW); each run in its own process so that its peak RSS is its own. Prints the comparison
# (scripts/bench/compare_train.py) and writes every raw number to bench/results/<date>-<rev>-train/.
#
#   scripts/bench/run_cpu_train_bench.sh
#   THREADS="1 2" CASES="tiny:8:128 small:1:256 small:4:256" STEPS=4 scripts/bench/run_cpu_train_bench.sh
#
# Settings (environment): THREADS ("1 2"), CASES ("tiny:8:128 small:1:256 small:4:256": preset:batch:seq_len),
# STEPS (4 timed steps), WARMUP (1), BUILD_DIR (build), PYTHON (/opt/oracle-venv/bin/python),
# RESULTS (bench/results/<date>-<time>-<rev>-train). OPENBLAS_CORETYPE is left as set by the caller and recorded.
set -euo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
THREADS="${THREADS:-1 2}"
CASES="${CASES:-tiny:8:128 small:1:256 small:4:256}"
STEPS="${STEPS:-4}"
WARMUP="${WARMUP:-1}"
BUILD_DIR="${BUILD_DIR:-$REPO/build}"
PYTHON="${PYTHON:-/opt/oracle-venv/bin/python}"
REV="$(git -C "$REPO" rev-parse --short HEAD 2>/dev/null || echo unknown)"
RESULTS="${RESULTS:-$REPO/bench/results/$(date +%Y%m%d-%H%M%S)-$REV-train}"
BIN="$BUILD_DIR/bench/jetmoe-bench-train"
[[ -x $BIN ]] || { echo "run_cpu_train_bench.sh: $BIN is missing: build first (scripts/build.sh)" >&2; exit 1; }
"$PYTHON" -c "import torch, transformers" 2>/dev/null ||
  { echo "run_cpu_train_bench.sh: $PYTHON lacks torch/transformers (pip install -r scripts/oracle/requirements.txt)" >&2; exit 1; }
mkdir -p "$RESULTS"
{
  echo "revision: $REV"
  echo "date: $(date -Is)"
  echo "cpu: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ //') ($(nproc) cores)"
  echo "OPENBLAS_CORETYPE: ${OPENBLAS_CORETYPE:-unset (detected)}"
  echo "ours: $("$REPO/build/apps/jetmoe-train" --version 2>/dev/null | grep -E 'Kokkos|BLAS|build' | tr '\n' ' ')"
  echo "peer: $("$PYTHON" -c 'import torch, transformers; print("torch", torch.__version__, "transformers", transformers.__version__)')"
  echo "loadavg before: $(cat /proc/loadavg)"
} > "$RESULTS/conditions.txt"
cat "$RESULTS/conditions.txt"
for threads in $THREADS; do
  export OMP_NUM_THREADS=$threads OPENBLAS_NUM_THREADS=$threads MKL_NUM_THREADS=$threads
  for case in $CASES; do
    IFS=: read -r preset batch seq <<<"$case"
    tag="$preset-b$batch-t$seq-th$threads"
    echo "==> $tag: jetmoe"
    "$BIN" --preset "$preset" --batch "$batch" --seq-len "$seq" --steps "$STEPS" --warmup "$WARMUP" \
      --json "$RESULTS/jetmoe-$tag.json" > "$RESULTS/jetmoe-$tag.txt"
    echo "==> $tag: transformers"
    (cd "$REPO/scripts/bench" && "$PYTHON" bench_hf_train.py --preset "$preset" --batch "$batch" --seq-len "$seq" \
      --steps "$STEPS" --warmup "$WARMUP" --threads "$threads" --json-out "$RESULTS/hf-$tag.json") > "$RESULTS/hf-$tag.txt"
  done
done
echo "loadavg after: $(cat /proc/loadavg)" >> "$RESULTS/conditions.txt"
"$PYTHON" "$REPO/scripts/bench/compare_train.py" "$RESULTS" | tee "$RESULTS/summary.md"
