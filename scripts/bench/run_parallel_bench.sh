#!/usr/bin/env bash
# Parallel training benchmark (not a test): jetmoe-train on the shipped tiny model and corpus under mpiexec.
#
#  1. Data-parallel weak scaling: 1, 2, 4 ranks, each with the same micro-batches per step (the global batch
#     grows with the ranks); efficiency = tokens/s at P ranks / (P x tokens/s at 1 rank).
#  1b. Gradient all-reduce overlap: at OVERLAP_RANKS data-parallel ranks, parallel/overlap_allreduce on and off,
#     with the default 25 MB buckets (one bucket for the whole tiny model: nothing can start early) and with
#     small buckets (0.05 MB: a bucket per few tensors, started layer by layer during the backward pass).
#  2. Pipeline bubble: P stages (2, 4) x m micro-batches per step (1, 2, 4, 8); the measured idle share of the
#     stages (metrics.jsonl "pipeline_idle": time waiting for a neighbour / time of the stage's passes plus
#     waiting) against the 1F1B ideal (P-1)/(m+P-1) for stages of equal cost.
#
#   scripts/bench/run_parallel_bench.sh
#   RANKS="1 2" STAGES="2" MICRO="1 2 4" STEPS=8 scripts/bench/run_parallel_bench.sh
#
# Settings (environment): RANKS ("1 2 4"), OVERLAP_RANKS ("2"; empty: skip), STAGES ("2 4"), MICRO ("1 2 4 8"), STEPS (10 steps per run; the
# first 2 are left out of the medians), BUILD_DIR (build), RESULTS (bench/results/<date>-<time>-<rev>-parallel),
# MPIEXEC (mpiexec). Every rank runs one thread (OMP_NUM_THREADS = OPENBLAS_NUM_THREADS = 1). With more ranks
# than cores the ranks share cores and the numbers measure the machine, not the code: the table says so.
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
RANKS="${RANKS:-1 2 4}"
OVERLAP_RANKS="${OVERLAP_RANKS-2}"
STAGES="${STAGES:-2 4}"
MICRO="${MICRO:-1 2 4 8}"
STEPS="${STEPS:-10}"
BUILD_DIR="${BUILD_DIR:-$REPO/build}"
MPIEXEC="${MPIEXEC:-mpiexec}"
REV="$(git -C "$REPO" rev-parse --short HEAD 2>/dev/null || echo unknown)"
RESULTS="${RESULTS:-$REPO/bench/results/$(date +%Y%m%d-%H%M%S)-$REV-parallel}"
APP="$BUILD_DIR/apps/jetmoe-train"
CORES="$(nproc)"

[[ -x "$APP" ]] || { echo "run_parallel_bench.sh: $APP is missing (scripts/build.sh)" >&2; exit 1; }
cd "$REPO"
if [[ ! -f data/prepared/tiny/prose/manifest.json || ! -f data/prepared/tiny/code/manifest.json ]]; then
  "$BUILD_DIR/apps/jetmoe-prepare" -i inputs/prepare-tiny.deck prepare/overwrite=true >/dev/null
fi
mkdir -p "$RESULTS"
mpi_flags=()
"$MPIEXEC" --version 2>&1 | grep -q "Open MPI\|OpenRTE" && mpi_flags=(--oversubscribe --allow-run-as-root)
export OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1

# run NAME RANKS OVERRIDES...: one training run; prints "median_tok_s median_idle"
run() {
  local name=$1 ranks=$2; shift 2
  local out="$RESULTS/$name"
  "$MPIEXEC" "${mpi_flags[@]}" -n "$ranks" "$APP" -i inputs/tiny.deck job/name="$name" job/output_dir="$out" \
    job/progress_interval=1000 job/peak_gflops=1 schedule/total="$STEPS" schedule/warmup=1 schedule/decay=1 \
    train/eval_interval=0 train/sample_tokens=0 checkpoint/interval=0 "$@" > "$out.log" 2>&1 ||
    { echo "run_parallel_bench.sh: $name failed; see $out.log" >&2; tail -3 "$out.log" >&2; exit 1; }
  rm -rf "$out/checkpoints" "$out/final"  # keep the metrics, the deck and the log
  python3 - "$out/metrics.jsonl" <<'EOF'
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if '"type": "train"' in l]
times, idle = [], []
for prev, cur in zip(rows, rows[1:]):
    if cur["step"] <= 2:
        continue
    times.append((cur["elapsed_s"] - prev["elapsed_s"], cur["tokens"] - prev["tokens"]))
    idle.append(cur.get("pipeline_idle", 0.0))
tok_s = statistics.median(tok / s for s, tok in times)
print(f"{tok_s:.1f} {statistics.median(idle):.4f}")
EOF
}

B=8 T=128  # tiny.deck: micro_batch_size 8, seq_len 128
{
  echo "date: $(date -Is)"
  echo "host: $(uname -n), $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//'), $CORES cores"
  echo "revision: $REV; model: tiny preset (4 layers, D 128, 4 experts top-2), micro-batch $B x $T tokens; $STEPS steps per run"
  echo "MPI: $("$MPIEXEC" --version 2>&1 | head -1); one thread per rank"
} | tee "$RESULTS/environment.txt"

echo
echo "Data-parallel weak scaling (2 micro-batches of $B x $T tokens per rank and step):"
echo
echo "| ranks | global batch tokens | tokens/s | per rank | efficiency | note |"
echo "|---|---|---|---|---|---|"
base=""
for p in $RANKS; do
  read -r tok _ < <(run "dp$p" "$p" parallel/data_parallel="$p" train/global_batch_tokens=$((2 * B * T * p)))
  [[ -z "$base" ]] && base=$tok
  note=""; (( p > CORES )) && note="ranks > $CORES cores: oversubscribed"
  awk -v p="$p" -v t="$tok" -v b="$base" -v g=$((2 * B * T * p)) -v n="$note" \
    'BEGIN { printf "| %d | %d | %.0f | %.0f | %.2f | %s |\n", p, g, t, t / p, t / (p * b), n }'
done | tee "$RESULTS/weak_scaling.md"

echo
echo "Gradient all-reduce overlapped with the backward pass (2 micro-batches of $B x $T tokens per rank and step):"
echo
echo "| ranks | bucket MB | overlap | tokens/s | vs no overlap | note |"
echo "|---|---|---|---|---|---|"
for p in $OVERLAP_RANKS; do
  for mb in 25 0.05; do
    read -r off _ < <(run "dp$p-b$mb-serial" "$p" parallel/data_parallel="$p" train/global_batch_tokens=$((2 * B * T * p)) \
                        parallel/bucket_mb="$mb" parallel/overlap_allreduce=false)
    read -r on _ < <(run "dp$p-b$mb-overlap" "$p" parallel/data_parallel="$p" train/global_batch_tokens=$((2 * B * T * p)) \
                       parallel/bucket_mb="$mb" parallel/overlap_allreduce=true)
    note=""; (( p > CORES )) && note="ranks > $CORES cores: oversubscribed"
    awk -v p="$p" -v mb="$mb" -v off="$off" -v on="$on" -v n="$note" 'BEGIN {
      printf "| %d | %s | off | %.0f | 1.00 | %s |\n", p, mb, off, n
      printf "| %d | %s | on | %.0f | %.2f | %s |\n", p, mb, on, on / off, n }'
  done
done | tee "$RESULTS/overlap.md"

echo
echo "Pipeline bubble (1F1B; measured idle share of all stages vs the ideal (P-1)/(m+P-1)):"
echo
echo "| stages P | micro-batches m | tokens/s | measured idle | ideal bubble | note |"
echo "|---|---|---|---|---|---|"
for s in $STAGES; do
  for m in $MICRO; do
    read -r tok idle < <(run "pp$s-m$m" "$s" parallel/pipeline_stages="$s" train/global_batch_tokens=$((m * B * T)))
    note=""; (( s > CORES )) && note="ranks > $CORES cores: oversubscribed"
    awk -v s="$s" -v m="$m" -v t="$tok" -v i="$idle" -v n="$note" \
      'BEGIN { printf "| %d | %d | %.0f | %.1f%% | %.1f%% | %s |\n", s, m, t, 100 * i, 100 * (s - 1) / (m + s - 1), n }'
  done
done | tee "$RESULTS/bubble.md"
echo
echo "raw results: $RESULTS"
