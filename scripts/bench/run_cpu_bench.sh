#!/usr/bin/env bash
# CPU benchmark, side by side in one invocation: jetmoe (bench/bench_forward.cpp) against Hugging Face
# transformers' JetMoeForCausalLM on PyTorch (scripts/bench/bench_hf.py), same CPU, same thread count, same
# weights (the C++ exports its random weights as an HF checkpoint), same prompt ids; each run in its own process
# so that its peak RSS is its own. Prints the comparison and writes every raw number to bench/results/.
#
#   scripts/bench/run_cpu_bench.sh                 # threads 1 and 2, batch 1 and 4, prompt 128, 32 new tokens
#   THREADS=1 BATCHES=4 REPEATS=3 scripts/bench/run_cpu_bench.sh
#
# Settings (environment): THREADS ("1 2"), BATCHES ("1 4"), PROMPT (128), NEW (32), REPEATS (5: prefill/decode rounds),
# GEN_REPEATS (2: timed generate calls), WARMUP (1),
# SEED (1234), PRESET (small), CORETYPES ("default SkylakeX": OPENBLAS_CORETYPE for our runs; "default" leaves it
# unset so OpenBLAS detects the CPU), ATTNS ("eager sdpa": transformers' attention implementations),
# BUILD_DIR (/tmp/build-bench), PYTHON (/opt/oracle-venv/bin/python), MODEL_DIR (/tmp/jetmoe-bench-model-$PRESET-$SEED),
# RESULTS (bench/results/<date>-<time>), PROFILE (1: add the per-kernel profile to our first run of each case),
# REVISION (what to record as the source revision; default: git describe of the checkout),
# GEMM (0; 1: also time the model's GEMM shapes alone, jetmoe-bench-gemm against bench_gemm_torch.py).
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
THREADS="${THREADS:-1 2}"
BATCHES="${BATCHES:-1 4}"
PROMPT="${PROMPT:-128}"
NEW="${NEW:-32}"
REPEATS="${REPEATS:-5}"
GEN_REPEATS="${GEN_REPEATS:-2}"
WARMUP="${WARMUP:-1}"
SEED="${SEED:-1234}"
PRESET="${PRESET:-small}"
CORETYPES="${CORETYPES:-default SkylakeX}"
ATTNS="${ATTNS:-eager sdpa}"
BUILD_DIR="${BUILD_DIR:-/tmp/build-bench}"
PYTHON="${PYTHON:-/opt/oracle-venv/bin/python}"
MODEL_DIR="${MODEL_DIR:-/tmp/jetmoe-bench-model-$PRESET-$SEED}"
RESULTS="${RESULTS:-$REPO/bench/results/$(date +%Y%m%d-%H%M%S)}"
PROFILE="${PROFILE:-1}"
BIN="$BUILD_DIR/bench/jetmoe-bench-forward"

say() { printf '\n==> %s\n' "$*"; }
# This machine is shared: before each run wait (up to QUIET_WAIT seconds, default 120) until the CPUs are idle
# (< 15% busy over 2 s), and after it record in $RESULTS/conditions.txt how busy the machine was in total, the load
# average and the time stolen by the hypervisor; compare.py subtracts the run's own CPU time to show what others
# used meanwhile.
cpu_jiffies() {  # total, busy (not idle, iowait or steal), steal: clock ticks, all CPUs (guest time is in user)
  awk '/^cpu /{t=0; for(i=2;i<=9;i++) t+=$i; print t, t-$5-$6-$9, $9}' /proc/stat
}
busy_fraction() {  # over the next $1 seconds
  local a b
  a=$(cpu_jiffies); sleep "$1"; b=$(cpu_jiffies)
  awk -v a="$a" -v b="$b" 'BEGIN { split(a, x, " "); split(b, y, " "); dt = y[1] - x[1];
    printf "%.2f\n", (dt > 0) ? (y[2] - x[2]) / dt : 0 }'
}
wait_quiet() {
  local waited=0 busy
  while :; do
    busy=$(busy_fraction 2)
    if awk -v f="$busy" 'BEGIN { exit !(f < 0.15) }'; then break; fi
    if (( waited >= ${QUIET_WAIT:-120} )); then
      echo "run_cpu_bench.sh: the machine is still busy (${busy} of the CPUs) after ${waited} s; running anyway" >&2
      break
    fi
    sleep 8; waited=$((waited + 10))
  done
}
measure() {  # measure TAG COMMAND...: waits for a quiet machine, runs COMMAND, records the conditions
  local tag=$1; shift
  wait_quiet
  local before after load0 t0 t1
  before=$(cpu_jiffies); load0=$(cut -d' ' -f1 /proc/loadavg); t0=$(date +%s.%N)
  "$@"
  after=$(cpu_jiffies); t1=$(date +%s.%N)
  awk -v tag="$tag" -v l0="$load0" -v l1="$(cut -d' ' -f1 /proc/loadavg)" -v b="$before" -v a="$after" \
      -v w="$(awk -v t0="$t0" -v t1="$t1" 'BEGIN { print t1 - t0 }')" -v hz="$(getconf CLK_TCK)" 'BEGIN {
    split(b, x, " "); split(a, y, " "); dt = y[1] - x[1];
    steal = (dt > 0) ? 100 * (y[3] - x[3]) / dt : 0;
    printf "%s wall_s=%.2f busy_cpu_s=%.2f steal_pct=%.1f load=%s->%s\n", tag, w, (y[2] - x[2]) / hz, steal, l0, l1
  }' >> "$RESULTS/conditions.txt"
}

say "building jetmoe-bench-forward in $BUILD_DIR"
if [[ ! -f "$BUILD_DIR/build.ninja" && ! -f "$BUILD_DIR/Makefile" ]]; then
  generator=()
  command -v ninja >/dev/null && generator=(-G Ninja)
  cmake -S "$REPO" -B "$BUILD_DIR" "${generator[@]}" -DCMAKE_BUILD_TYPE=Release -DJETMOE_ENABLE_TESTS=OFF >/dev/null
fi
nice cmake --build "$BUILD_DIR" -j2 --target jetmoe-bench-forward jetmoe-bench-gemm
[[ -x "$PYTHON" ]] || { echo "run_cpu_bench.sh: no Python at $PYTHON (set PYTHON; scripts/oracle/requirements.txt)" >&2; exit 1; }

mkdir -p "$RESULTS"
say "exporting the $PRESET model (seed $SEED) to $MODEL_DIR"
"$BIN" --preset "$PRESET" --seed "$SEED" --export "$MODEL_DIR" | tee "$RESULTS/export.txt"

{
  echo "date: $(date -Is)"
  echo "host: $(uname -n) $(uname -r)"
  echo "cpu: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//'), $(nproc) cores online"
  echo "revision: ${REVISION:-$(git -C "$REPO" rev-parse --short HEAD 2>/dev/null || echo unknown)$(git -C "$REPO" diff --quiet 2>/dev/null || echo ' (modified)')}"
  echo "settings: THREADS='$THREADS' BATCHES='$BATCHES' PROMPT=$PROMPT NEW=$NEW REPEATS=$REPEATS GEN_REPEATS=$GEN_REPEATS WARMUP=$WARMUP SEED=$SEED PRESET=$PRESET CORETYPES='$CORETYPES' ATTNS='$ATTNS'"
  echo "load before: $(cut -d' ' -f1-3 /proc/loadavg)"
} | tee "$RESULTS/environment.txt"

for t in $THREADS; do
  for b in $BATCHES; do
    # The same thread settings for both implementations: OpenBLAS for ours (Kokkos' Serial backend has one
    # thread; an OpenMP backend would read OMP_NUM_THREADS), torch.set_num_threads + OMP/MKL for PyTorch.
    common=(OMP_NUM_THREADS="$t" MKL_NUM_THREADS="$t" OPENBLAS_NUM_THREADS="$t")
    case_args=(--batch "$b" --prompt "$PROMPT" --new "$NEW" --repeats "$REPEATS" --warmup "$WARMUP"
               --generate-repeats "$GEN_REPEATS" --seed "$SEED")
    first=1
    for ct in $CORETYPES; do
      tag="jetmoe-$ct-t$t-b$b"
      say "$tag (load $(cut -d' ' -f1 /proc/loadavg))"
      ctenv=(env -u OPENBLAS_CORETYPE)
      [[ "$ct" != default ]] && ctenv=(env OPENBLAS_CORETYPE="$ct")
      extra=()
      [[ "$PROFILE" == 1 && $first == 1 ]] && extra=(--profile-kernels)
      measure "$tag" "${ctenv[@]}" "${common[@]}" "$BIN" --preset "$PRESET" "${case_args[@]}" "${extra[@]}" \
        --json "$RESULTS/$tag.json" | tee "$RESULTS/$tag.txt"
      first=0
      ref="$RESULTS/$tag.json"
    done
    for attn in $ATTNS; do
      tag="hf-$attn-t$t-b$b"
      say "$tag (load $(cut -d' ' -f1 /proc/loadavg))"
      measure "$tag" env -u OPENBLAS_CORETYPE "${common[@]}" "$PYTHON" "$REPO/scripts/bench/bench_hf.py" --model "$MODEL_DIR" \
        "${case_args[@]}" --threads "$t" --attn "$attn" --reference-json "$ref" --json "$RESULTS/$tag.json" \
        2> >(grep -v 'Loading weights' >&2) | tee "$RESULTS/$tag.txt"
    done
  done
done
echo "load after: $(cut -d' ' -f1-3 /proc/loadavg)" | tee -a "$RESULTS/environment.txt"

if [[ "${GEMM:-0}" == 1 ]]; then
  # The GEMM shapes alone: OpenBLAS through jetmoe::linear (and sgemv) against torch's F.linear (MKL).
  for t in $THREADS; do
    say "GEMM shapes, $t thread(s)"
    measure "gemm-jetmoe-t$t" env OPENBLAS_NUM_THREADS="$t" OMP_NUM_THREADS="$t" "$BUILD_DIR/bench/jetmoe-bench-gemm" \
      --json "$RESULTS/gemm-jetmoe-t$t.json" | tee "$RESULTS/gemm-jetmoe-t$t.txt"
    measure "gemm-torch-t$t" env OMP_NUM_THREADS="$t" MKL_NUM_THREADS="$t" "$PYTHON" "$REPO/scripts/bench/bench_gemm_torch.py" \
      --threads "$t" --json "$RESULTS/gemm-torch-t$t.json" | tee "$RESULTS/gemm-torch-t$t.txt"
  done
fi

say "side by side"
"$PYTHON" "$REPO/scripts/bench/compare.py" "$RESULTS" | tee "$RESULTS/summary.md"
echo
echo "raw results: $RESULTS"
