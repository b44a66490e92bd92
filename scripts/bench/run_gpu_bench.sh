#!/usr/bin/env bash
# GPU benchmark sweep, side by side in one invocation: for each kernel family, our benchmark
# ($BUILD/kernels/jetmoe-<family>-bench, kernels/bench/bench_<family>.cu) and its PyTorch / HF peer
# (kernels/bench/peer_<family>.py) on the same GPU, one after the other, each under its own timeout; then the
# comparison (scripts/bench/compare_gpu.py). A program that fails, times out or exits 77 (no CUDA device) is
# recorded and the sweep goes on.
#
#   scripts/bench/run_gpu_bench.sh [OUTDIR] [FAMILY...]
#   scripts/bench/run_gpu_bench.sh gpu-bench                          # every family
#   JETMOE_BENCH_TIMEOUT=120 scripts/bench/run_gpu_bench.sh gpu-bench layer attention grouped_gemm
#
# FAMILY: kernels (RMSNorm/conversion bandwidth; no peer: compared with the cudaMemcpy in its own CSV),
# embedding, fused, router, grouped_gemm, attention, layer, model (default: all, in this order: the cheap ones
# first, model last: the 17 GB JetMoE-8B, ours then HF's).
# OUTDIR (default bench/results/<date>-<time>-<rev>-gpu) receives:
#   jk-<family>.csv, peer-<family>.csv   the raw rows (--out; each family's own columns)
#   jk-<family>.log, peer-<family>.log   each program's stdout + stderr
#   status.tsv                           program, status (ok, failed, timeout, no-device, missing, no-peer),
#                                        exit, seconds
#   environment.txt                      date, host, GPU, revision, settings, torch/transformers versions
#   summary.md, summary.csv              compare_gpu.py: per family and shape, ours (best variant) vs the peer
#                                        (best variant), ratio > 1 when ours is faster
# The CSVs and logs of the families run are removed first, so nothing stale is compared.
#
# Settings (environment): BUILD (the checkout's build/; any directory holding kernels/jetmoe-<family>-bench:
# nothing is built here), BIN (the directory of the benches themselves, default $BUILD/kernels; a standalone
# kernels build, cmake -S kernels, puts them at its top), PYTHON (python3: the peers need torch and transformers; compare_gpu.py only the
# standard library), JETMOE_BENCH_TIMEOUT (300: seconds per program; SIGTERM, then SIGKILL 10 s later),
# JK_ARGS_<family> and PEER_ARGS_<family> (extra arguments of one program, e.g. JK_ARGS_attention=--quick
# PEER_ARGS_layer="--reps 3"), REVISION (the source revision to record; default: git rev-parse --short HEAD).
# Exit: 0 when every program ran (or exited 77) and compare_gpu.py succeeded; 1 when a program failed, timed
# out or is missing (the summary is still written); 77 when nothing was measured because there is no CUDA
# device; 2 for an unknown family.
#
# From a one-shot GPU session (one prepared command; only what it writes under $OUT comes back):
# scripts/gpu/session.sh bench runs this with the programs that scripts/gpu/pack.sh built here (or builds
# them there), e.g. BENCH_FAMILIES="layer attention grouped_gemm" JETMOE_BENCH_TIMEOUT=150, sizing families x
# timeout to the session's per-command limit (every family at the default timeout can take far longer than
# 10 minutes; --reps in JK_ARGS_* / PEER_ARGS_* shortens a program). Read summary.md.
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
ALL_FAMILIES=(kernels embedding fused router grouped_gemm attention layer model)
REV="$(git -C "$REPO" rev-parse --short HEAD 2>/dev/null || echo unknown)"
OUTDIR="${1:-$REPO/bench/results/$(date +%Y%m%d-%H%M%S)-$REV-gpu}"
[[ $# -gt 0 ]] && shift
FAMILIES=("$@")
[[ ${#FAMILIES[@]} -eq 0 ]] && FAMILIES=("${ALL_FAMILIES[@]}")
BUILD="${BUILD:-$REPO/build}"
PYTHON="${PYTHON:-python3}"
TIMEOUT="${JETMOE_BENCH_TIMEOUT:-300}"

say() { printf '\n==> %s\n' "$*"; }

for f in "${FAMILIES[@]}"; do
  [[ " ${ALL_FAMILIES[*]} " == *" $f "* ]] || {
    echo "run_gpu_bench.sh: unknown family '$f' (one of: ${ALL_FAMILIES[*]})" >&2; exit 2; }
done
command -v timeout >/dev/null || { echo "run_gpu_bench.sh: needs timeout (coreutils)" >&2; exit 1; }

mkdir -p "$OUTDIR"
OUTDIR="$(cd "$OUTDIR" && pwd)"
BUILD="$(cd "$BUILD" 2>/dev/null && pwd || echo "$BUILD")"  # a relative BUILD: from the caller's directory
BIN="${BIN:-$BUILD/kernels}"
BIN="$(cd "$BIN" 2>/dev/null && pwd || echo "$BIN")"
cd "$REPO"

{
  echo "date: $(date -Is)"
  echo "host: $(uname -n) $(uname -r)"
  if command -v nvidia-smi >/dev/null; then
    echo "gpu: $(nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv,noheader 2>&1 |
                 head -n 4 | paste -sd ';')"
  else
    echo "gpu: (no nvidia-smi)"
  fi
  echo "revision: ${REVISION:-$REV$(git -C "$REPO" diff --quiet 2>/dev/null || echo ' (modified)')}"
  echo "settings: BUILD=$BUILD BIN=$BIN PYTHON=$PYTHON JETMOE_BENCH_TIMEOUT=$TIMEOUT families='${FAMILIES[*]}'"
  echo "peer: $("$PYTHON" -c 'import torch, transformers
print("torch", torch.__version__, "cuda", torch.version.cuda, "transformers", transformers.__version__)' 2>&1 |
                tail -n 1)"
} > "$OUTDIR/environment.txt"
cat "$OUTDIR/environment.txt"
printf 'program\tstatus\texit\tseconds\n' > "$OUTDIR/status.tsv"

failed=0
wrote=0
no_device=0
# run_one NAME COMMAND...: runs COMMAND under the timeout, output to $OUTDIR/NAME.log; records its status.
run_one() {
  local name=$1; shift
  local log="$OUTDIR/$name.log" t0 t1 rc status
  say "$name: $* (timeout ${TIMEOUT} s)"
  t0=$(date +%s)
  rc=0
  timeout --kill-after=10 "$TIMEOUT" "$@" > "$log" 2>&1 || rc=$?
  t1=$(date +%s)
  case $rc in
    0) status=ok ;;
    77) status=no-device; no_device=1 ;;
    124|137) status=timeout; failed=1 ;;
    *) status=failed; failed=1 ;;
  esac
  printf '%s\t%s\t%d\t%d\n' "$name" "$status" "$rc" $((t1 - t0)) >> "$OUTDIR/status.tsv"
  echo "$name: $status (exit $rc, $((t1 - t0)) s), log $log"
  if [[ $rc -ne 0 ]]; then tail -n 5 "$log" | sed 's/^/    /'; fi
  if [[ -s "$OUTDIR/$name.csv" ]]; then wrote=1; fi
}

for f in "${FAMILIES[@]}"; do
  rm -f "$OUTDIR/jk-$f.csv" "$OUTDIR/peer-$f.csv" "$OUTDIR/jk-$f.log" "$OUTDIR/peer-$f.log"
  bin="$BIN/jetmoe-${f//_/-}-bench"
  jk_args_var="JK_ARGS_$f" peer_args_var="PEER_ARGS_$f"
  read -r -a jk_args <<< "${!jk_args_var:-}"
  read -r -a peer_args <<< "${!peer_args_var:-}"
  if [[ -x "$bin" ]]; then
    run_one "jk-$f" "$bin" --out "$OUTDIR/jk-$f.csv" "${jk_args[@]}"
  else
    echo "jk-$f: $bin is missing (build it: ninja -C build $(basename "$bin"))"
    printf '%s\tmissing\t-\t0\n' "jk-$f" >> "$OUTDIR/status.tsv"
    failed=1
  fi
  peer="kernels/bench/peer_$f.py"
  if [[ -f "$peer" ]]; then
    run_one "peer-$f" "$PYTHON" "$peer" --out "$OUTDIR/peer-$f.csv" "${peer_args[@]}"
  else
    printf '%s\tno-peer\t-\t0\n' "peer-$f" >> "$OUTDIR/status.tsv"
  fi
done

say "side by side"
if ! "$PYTHON" "$REPO/scripts/bench/compare_gpu.py" "$OUTDIR" > "$OUTDIR/summary.md"; then
  # the peers' Python may be a venv without a usable standard library; compare_gpu.py needs nothing else
  python3 "$REPO/scripts/bench/compare_gpu.py" "$OUTDIR" > "$OUTDIR/summary.md" || failed=1
fi
cat "$OUTDIR/summary.md"
echo
echo "raw results: $OUTDIR"
if [[ $failed -ne 0 ]]; then exit 1; fi
if [[ $wrote -eq 0 && $no_device -ne 0 ]]; then exit 77; fi
exit 0
