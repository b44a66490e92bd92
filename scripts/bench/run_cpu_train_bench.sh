#!/usr/bin/env bash
# CPU training benchmark, side by side in one invocation: jetmoe (bench/bench_train.cpp) against Hugging Face
# transformers' JetMoeForCausalLM + torch.optim.AdamW (scripts/bench/bench_hf_train.py): same preset, batch,
# sequence length, thread count and step definition (zero grads, forward, CE + original JetMoE router losses,
# backward, clip_grad_norm_ 1.0, AdamW 0.9/0.95/wd 0.1); each run in its own process so that its peak RSS is its
# own. Prints the comparison (scripts/bench/compare_train.py) and writes every raw number to
# bench/results/<date>-<time>-<rev>-train/.
#
#   scripts/bench/run_cpu_train_bench.sh                         # about 10 minutes on the 2-core machine
#   THREADS=1 CASES="small:4:256" STEPS=3 scripts/bench/run_cpu_train_bench.sh
#   EXTRA_BUILDS="k4-openmp:build-bench-k4" scripts/bench/run_cpu_train_bench.sh   # also a Kokkos 4 OpenMP build
#
# Settings (environment):
#   THREADS ("1 2")                 OPENBLAS_NUM_THREADS = OMP_NUM_THREADS = MKL_NUM_THREADS = torch threads
#   CASES ("small:1:256 small:4:256 tiny:8:128")   preset:batch:seq_len
#   STEPS (4) timed steps after WARMUP (1) untimed ones, per run
#   CORETYPES ("default")           OPENBLAS_CORETYPE for our runs; "default" leaves it unset (OpenBLAS detects)
#   ATTNS ("sdpa")                  transformers attention implementations ("eager sdpa" for both)
#   ADAMWS ("default")              torch.optim.AdamW implementations ("default fused" for both)
#   BUILD_DIR (/tmp/build-bench)    where jetmoe-bench-train is built (Release, Debian Kokkos)
#   EXTRA_BUILDS ("")               more of ours, "name:dir[:blas[:libdir]] ..." of existing build directories
#                                   (a Kokkos 4 OpenMP build, an earlier revision); each runs with
#                                   OMP_NUM_THREADS = t, OPENBLAS_NUM_THREADS = blas (a number or t; default
#                                   BLAS_T, 1: a threaded Kokkos and a pthreads OpenBLAS oversubscribe the
#                                   cores) and libdir leading LD_LIBRARY_PATH (an OpenMP OpenBLAS, say)
#   PROFILE (1)                     one kernel-profiled step in our first run of each case (its own process,
#                                   after the timed ones; not part of the numbers)
#   PYTHON (/opt/oracle-venv/bin/python), RESULTS (bench/results/<date>-<time>-<rev>-train),
#   QUIET_WAIT (120: seconds to wait for an idle machine before each run), REVISION (default: git HEAD)
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
THREADS="${THREADS:-1 2}"
CASES="${CASES:-small:1:256 small:4:256 tiny:8:128}"
STEPS="${STEPS:-4}"
WARMUP="${WARMUP:-1}"
CORETYPES="${CORETYPES:-default}"
ATTNS="${ATTNS:-sdpa}"
ADAMWS="${ADAMWS:-default}"
BUILD_DIR="${BUILD_DIR:-/tmp/build-bench}"
EXTRA_BUILDS="${EXTRA_BUILDS:-}"
BLAS_T="${BLAS_T:-1}"
PROFILE="${PROFILE:-1}"
PYTHON="${PYTHON:-/opt/oracle-venv/bin/python}"
REV="${REVISION:-$(git -C "$REPO" rev-parse --short HEAD 2>/dev/null || echo unknown)}"
MODIFIED="$(git -C "$REPO" diff --quiet HEAD 2>/dev/null || echo ' (modified)')"
RESULTS="${RESULTS:-$REPO/bench/results/$(date +%Y%m%d-%H%M%S)-$REV-train}"

# shellcheck source=scripts/bench/measure.sh
source "$REPO/scripts/bench/measure.sh"  # say, wait_quiet, measure (conditions.txt), build_release

say "building jetmoe-bench-train in $BUILD_DIR"
build_release "$REPO" "$BUILD_DIR" jetmoe-bench-train
builds=("serial:$BUILD_DIR:-:-")
extras="$(extra_builds jetmoe-bench-train)" || exit 1
while read -r name dir blas libdir; do [[ -n "$name" ]] && builds+=("$name:$dir:$blas:$libdir"); done <<<"$extras"
"$PYTHON" -c "import torch, transformers" 2>/dev/null ||
  { echo "run_cpu_train_bench.sh: $PYTHON lacks torch/transformers (scripts/oracle/requirements.txt)" >&2; exit 1; }

mkdir -p "$RESULTS"
{
  echo "date: $(date -Is)"
  echo "host: $(uname -n) $(uname -r)"
  echo "cpu: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//'), $(nproc) cores online"
  echo "revision: $REV$MODIFIED"
  echo "settings: THREADS='$THREADS' CASES='$CASES' STEPS=$STEPS WARMUP=$WARMUP CORETYPES='$CORETYPES' ATTNS='$ATTNS' ADAMWS='$ADAMWS' EXTRA_BUILDS='$EXTRA_BUILDS' BLAS_T=$BLAS_T"
  echo "OPENBLAS_CORETYPE of the caller: ${OPENBLAS_CORETYPE:-unset (detected)}"
  echo "peer: $("$PYTHON" -c 'import torch, transformers; print("torch", torch.__version__, "transformers", transformers.__version__)')"
  echo "load before: $(cut -d' ' -f1-3 /proc/loadavg)"
} | tee "$RESULTS/environment.txt"

for t in $THREADS; do
  for case in $CASES; do
    IFS=: read -r preset batch seq <<<"$case"
    name="$preset-b$batch-s$seq-t$t"
    args=(--preset "$preset" --batch "$batch" --seq-len "$seq" --steps "$STEPS" --warmup "$WARMUP")
    first=1
    for build in "${builds[@]}"; do
      IFS=: read -r bname bdir blas libdir <<<"$build"
      # Serial Kokkos: only OpenBLAS threads. A threaded Kokkos gets the t threads, OpenBLAS its blas.
      if [[ "$bname" == serial ]]; then
        threads=(OMP_NUM_THREADS="$t" MKL_NUM_THREADS="$t" OPENBLAS_NUM_THREADS="$t")
      else
        read -r -d '' -a threads < <(extra_env "$blas" "$libdir" "$t") || true
      fi
      for ct in $CORETYPES; do
        variant="$bname"; [[ "$ct" != default ]] && variant="$bname-$ct"
        tag="jetmoe-$variant-$name"
        say "$tag (load $(cut -d' ' -f1 /proc/loadavg))"
        ctenv=(env -u OPENBLAS_CORETYPE)
        [[ "$ct" != default ]] && ctenv=(env OPENBLAS_CORETYPE="$ct")
        extra=()
        [[ "$PROFILE" == 1 && $first == 1 ]] && extra=(--profile-kernels)
        measure "$tag" "${ctenv[@]}" "${threads[@]}" "$bdir/bench/jetmoe-bench-train" "${args[@]}" "${extra[@]}" \
          --json "$RESULTS/$tag.json" | tee "$RESULTS/$tag.txt"
        first=0
      done
    done
    for attn in $ATTNS; do
      for adamw in $ADAMWS; do
        variant="$attn"; [[ "$adamw" != default ]] && variant="$attn-$adamw"
        tag="hf-$variant-$name"
        say "$tag (load $(cut -d' ' -f1 /proc/loadavg))"
        measure "$tag" env -u OPENBLAS_CORETYPE OMP_NUM_THREADS="$t" MKL_NUM_THREADS="$t" OPENBLAS_NUM_THREADS="$t" \
          "$PYTHON" "$REPO/scripts/bench/bench_hf_train.py" "${args[@]}" --threads "$t" --attn "$attn" --adamw "$adamw" \
          --json-out "$RESULTS/$tag.json" 2> >(grep -v 'Loading weights' >&2) | tee "$RESULTS/$tag.txt"
      done
    done
  done
done
echo "load after: $(cut -d' ' -f1-3 /proc/loadavg)" | tee -a "$RESULTS/environment.txt"

say "side by side"
"$PYTHON" "$REPO/scripts/bench/compare_train.py" "$RESULTS" | tee "$RESULTS/summary.md"
echo
echo "raw results: $RESULTS"
