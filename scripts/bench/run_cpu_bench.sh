#!/usr/bin/env bash
# CPU benchmark, side by side in one invocation: jetmoe (bench/bench_forward.cpp) against Hugging Face
# transformers' JetMoeForCausalLM on PyTorch (scripts/bench/bench_hf.py), same CPU, same thread count, same
# weights (the C++ exports its random weights as an HF checkpoint), same prompt ids; each run in its own process
# so that its peak RSS is its own. Prints the comparison and writes every raw number to bench/results/.
#
#   scripts/bench/run_cpu_bench.sh                 # threads 1 and 2, batch 1 and 4, prompt 128, 32 new tokens
#   THREADS=1 BATCHES=4 REPEATS=3 scripts/bench/run_cpu_bench.sh
#   EXTRA_BUILDS="base:/tmp/build-base:t omp:/tmp/build-omp:t:/usr/lib/x86_64-linux-gnu/openblas-openmp" \
#     scripts/bench/run_cpu_bench.sh          # also an earlier revision's build and a Kokkos OpenMP build
#
# Settings (environment): THREADS ("1 2"), BATCHES ("1 4"), PROMPT (128), NEW (32), REPEATS (5: prefill/decode rounds),
# GEN_REPEATS (2: timed generate calls), WARMUP (1),
# SEED (1234), PRESET (small), CORETYPES ("default SkylakeX": OPENBLAS_CORETYPE for our runs; "default" leaves it
# unset so OpenBLAS detects the CPU), ATTNS ("eager sdpa": transformers' attention implementations),
# BUILD_DIR (/tmp/build-bench), PYTHON (/opt/oracle-venv/bin/python), MODEL_DIR (/tmp/jetmoe-bench-model-$PRESET-$SEED),
# RESULTS (bench/results/<date>-<time>), PROFILE (1: add the per-kernel profile to our first run of each case),
# REVISION (what to record as the source revision; default: git describe of the checkout),
# EXTRA_BUILDS ("": more builds of ours beside BUILD_DIR's, "name:dir[:blas[:libdir]] ...", reported as variant
# `name`, each run with OMP_NUM_THREADS = t, OPENBLAS_NUM_THREADS = blas (a number, or t: a Serial build or an
# OpenMP OpenBLAS; default BLAS_T, 1) and libdir leading LD_LIBRARY_PATH (an OpenMP OpenBLAS, say); see measure.sh),
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

# shellcheck source=scripts/bench/measure.sh
source "$REPO/scripts/bench/measure.sh"  # say, wait_quiet, measure (conditions.txt), build_release

say "building jetmoe-bench-forward in $BUILD_DIR"
build_release "$REPO" "$BUILD_DIR" jetmoe-bench-forward jetmoe-bench-gemm
extras="$(extra_builds jetmoe-bench-forward)" || exit 1
[[ -x "$PYTHON" ]] || { echo "run_cpu_bench.sh: no Python at $PYTHON (set PYTHON; scripts/oracle/requirements.txt)" >&2; exit 1; }

mkdir -p "$RESULTS"
say "exporting the $PRESET model (seed $SEED) to $MODEL_DIR"
"$BIN" --preset "$PRESET" --seed "$SEED" --export "$MODEL_DIR" | tee "$RESULTS/export.txt"

{
  echo "date: $(date -Is)"
  echo "host: $(uname -n) $(uname -r)"
  echo "cpu: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//'), $(nproc) cores online"
  echo "revision: ${REVISION:-$(git -C "$REPO" rev-parse --short HEAD 2>/dev/null || echo unknown)$(git -C "$REPO" diff --quiet 2>/dev/null || echo ' (modified)')}"
  echo "settings: THREADS='$THREADS' BATCHES='$BATCHES' PROMPT=$PROMPT NEW=$NEW REPEATS=$REPEATS GEN_REPEATS=$GEN_REPEATS WARMUP=$WARMUP SEED=$SEED PRESET=$PRESET CORETYPES='$CORETYPES' ATTNS='$ATTNS' EXTRA_BUILDS='${EXTRA_BUILDS:-}'"
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
    while read -r name dir blas libdir; do
      [[ -n "$name" ]] || continue
      tag="jetmoe-$name-t$t-b$b"
      say "$tag (load $(cut -d' ' -f1 /proc/loadavg))"
      read -r -d '' -a xenv < <(extra_env "$blas" "$libdir" "$t") || true
      measure "$tag" env -u OPENBLAS_CORETYPE "${xenv[@]}" "$dir/bench/jetmoe-bench-forward" --preset "$PRESET" \
        "${case_args[@]}" --json "$RESULTS/$tag.json" | tee "$RESULTS/$tag.txt"
    done <<<"$extras"
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
