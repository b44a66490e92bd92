#!/usr/bin/env bash
# One GPU session's checks of the CUDA kernels as one prepared command, for a machine that has nvcc,
# CMake, ninja and PyTorch/transformers but none of the application's dependencies (Kokkos, MPI, HDF5):
#
#   scripts/gpu/session.sh tests     # the GPU test programs (kernels/tests), several at a time
#   scripts/gpu/session.sh bench     # every benchmark beside its PyTorch/HF peer (scripts/bench/run_gpu_bench.sh)
#   scripts/gpu/session.sh all       # both
#
# Programs: from .gpu/bin.tar.xz when it exists and was built from this tree's kernels/ sources
# (scripts/gpu/pack.sh makes it on a machine without a GPU; carry .gpu), else built here by the
# standalone kernels build (cmake -S kernels, all cores; a few minutes of device time).
#
# Output (fits the device tool's $OUT: few files, one level): OUT (default $OUT, else ./gpu-session)
# gets summary.txt (the machine, each program's verdict and PASS/FAIL counts, failing case lines),
# logs.tar.gz (every log and CSV), and for bench bench.md (the side-by-side tables).
#
# Settings (environment): BIN (a directory holding jetmoe-<name>-test/-bench: use those, no archive, no
# build), TESTS (the test programs, default all: kernels router embedding fused
# grouped-gemm attention layer model), ONLY (a --only regex for every test program; default all cases),
# BUDGET (s for the whole command, default 560: every timeout is cut to what is left of it, so the
# command ends inside the device tool's 600 s per call with its logs packed), JOBS (test programs at a
# time, default 3), TEST_TIMEOUT (s per test program, default 420),
# SANITIZE (compute-sanitizer tools on small cases: 1 = memcheck, or a list such as
# memcheck,racecheck,synccheck,initcheck), BENCH_FAMILIES (default all),
# JETMOE_BENCH_TIMEOUT (s per benchmark or peer, default 240), PYTHON (default python3).
# tests also runs, after the test programs, kernels/tests/torch_check.py (the kernels against PyTorch /
# HF transformers, through the shared library libjetmoe_kernels.so of the archive or the build) unless
# TORCH_CHECK=0: TORCH_CHECK_ARGS (default "--shape 8b --paths tuned,wgmma"), TORCH_CHECK_TIMEOUT (s,
# default 420). Optional: without the library, or exit 77 (no torch / transformers), it is reported as
# skipped and does not fail the session; a failure does.
# Exit: 0 when every test program that ran passed and every benchmark ran, 1 otherwise, 2 bad arguments.
set -uo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
# shellcheck source=scripts/gpu/common.sh
source "$REPO/scripts/gpu/common.sh"
mode="${1:-}"
case "$mode" in tests|bench|all) ;; *) echo "usage: $0 tests|bench|all" >&2; exit 2 ;; esac
OUT="${OUT:-$PWD/gpu-session}"
TESTS="${TESTS:-kernels router embedding fused grouped-gemm attention layer model}"
JOBS="${JOBS:-3}"
TEST_TIMEOUT="${TEST_TIMEOUT:-420}"
BUDGET="${BUDGET:-560}"  # s for the whole command (the device tool allows 600 per call)
DEADLINE=$(($(date +%s) + BUDGET))
# left [CAP]: seconds left before DEADLINE (at least 1), at most CAP: every timeout below is cut to it.
left() { local l=$((DEADLINE - $(date +%s))); ((l < 1)) && l=1; [[ -n "${1:-}" ]] && ((l > $1)) && l=$1; echo "$l"; }
PYTHON="${PYTHON:-python3}"
work="$(mktemp -d /tmp/jk-session.XXXXXX)"
mkdir -p "$OUT" "$work/logs"
summary="$OUT/summary.txt"
: > "$summary"
say() { echo "[session $(date +%T)] $*" | tee -a "$summary"; }
pack_logs() { tar -C "$work" -czf "$OUT/logs.tar.gz" logs 2>/dev/null; }
trap pack_logs EXIT

say "revision $(git -C "$REPO" rev-parse --short HEAD 2>/dev/null || echo unknown), mode $mode"
{ nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv,noheader 2>&1 | sed 's/^/gpu: /'
  echo "nvcc: $(nvcc --version 2>/dev/null | tail -1)"
  echo "cpus: $(nproc)"; } | tee -a "$summary"

# ---- the programs ----------------------------------------------------------------------------------
bin="${BIN:-}"
if [[ -n "$bin" ]]; then
  say "programs from BIN=$bin"
elif [[ -f "$REPO/.gpu/bin.tar.xz" ]]; then
  tar -C "$work" -xJf "$REPO/.gpu/bin.tar.xz"
  want="$(kernels_hash "$REPO")"
  if grep -q "^kernels: $want\$" "$work/bin/MANIFEST"; then
    bin="$work/bin"
    say "prebuilt programs from .gpu/bin.tar.xz ($(sed -n 's/^built: //p' "$work/bin/MANIFEST"), $(sed -n 's/^revision: //p' "$work/bin/MANIFEST"))"
  else
    say "ignoring .gpu/bin.tar.xz: built from other kernels/ sources ($(head -1 "$work/bin/MANIFEST"), here $want)"
  fi
fi
if [[ -n "$bin" && -z "${BIN:-}" ]]; then
  # The programs link the shared CUDA runtime and cuBLASLt: find them where this machine keeps them.
  missing="$(ldd "$bin/jetmoe-model-test" 2>/dev/null | awk '/not found/ {print $1}')"
  if [[ -n "$missing" ]]; then
    dirs="$(find / -xdev \( -name 'libcudart.so.*' -o -name 'libcublasLt.so.*' \) -printf '%h\n' 2>/dev/null | sort -u | tr '\n' ':')"
    export LD_LIBRARY_PATH="${dirs}${LD_LIBRARY_PATH:-}"
    if ldd "$bin/jetmoe-model-test" | grep -q "not found"; then
      say "prebuilt programs miss libraries ($(echo $missing)); building here instead"
      bin=""
    fi
  fi
fi
if [[ -z "$bin" ]]; then
  say "building the kernels standalone (cmake -S kernels) with $(nproc) jobs"
  start=$SECONDS
  if ! { cmake -S "$REPO/kernels" -B "$work/build" -G Ninja -DCMAKE_BUILD_TYPE=Release &&
         ninja -C "$work/build" -j "$(nproc)"; } > "$work/logs/build.log" 2>&1; then
    say "BUILD FAILED (logs/build.log):"; tail -30 "$work/logs/build.log" | tee -a "$summary"; exit 1
  fi
  bin="$work/build"
  say "built in $((SECONDS - start)) s"
fi

status=0
# ---- tests -------------------------------------------------------------------------------------------
failed() { echo "FAIL (exit $1$([[ $1 -eq 124 ]] && echo ', timed out'))"; }  # rc
# name verdict seconds log: one verdict line, with the log's "N passed, M failed" count.
verdict_line() { printf '%-14s %-28s %4ds  %s\n' "$1" "$2" "$3" "$(grep -E '^[0-9]+ passed' "$4" | tail -1)"; }
run_test() {  # name: one test program, its log and one verdict line
  local name="$1" log="$work/logs/test-$1.log" args=() rc
  [[ -n "${ONLY:-}" ]] && args=(--only "$ONLY")
  local start=$SECONDS
  timeout -k 10 "$(left "$TEST_TIMEOUT")" "$bin/jetmoe-$name-test" "${args[@]}" > "$log" 2>&1
  rc=$?
  local verdict=PASS
  [[ $rc -eq 0 ]] || verdict="$(failed $rc)"
  verdict_line "$name" "$verdict" "$((SECONDS - start))" "$log" > "$work/logs/verdict-$name"
}
if [[ $mode != bench ]]; then
  say "tests: $TESTS (${JOBS} at a time, ${TEST_TIMEOUT} s each${ONLY:+, --only '$ONLY'})"
  export -f run_test
  export bin work TEST_TIMEOUT ONLY DEADLINE
  export -f left failed verdict_line
  printf '%s\n' $TESTS | xargs -P "$JOBS" -I{} bash -c 'run_test {}'
  for name in $TESTS; do
    cat "$work/logs/verdict-$name" | tee -a "$summary"
    grep -q ' PASS ' "$work/logs/verdict-$name" || status=1
    grep -E '^FAIL ' "$work/logs/test-$name.log" | head -20 | sed 's/^/    /' | tee -a "$summary"
  done
  # SANITIZE: compute-sanitizer tools, comma-separated (1 = memcheck): memcheck (out-of-bounds and
  # misaligned accesses, leaks of device memory), racecheck (shared-memory hazards between threads),
  # synccheck (barriers reached by part of a block or warp), initcheck (reads of uninitialised device
  # memory); each on the same small cases.
  sanitize="${SANITIZE:-0}"
  [[ $sanitize == 1 ]] && sanitize=memcheck
  [[ $sanitize == 0 ]] && sanitize=
  for tool in ${sanitize//,/ }; do
    say "compute-sanitizer $tool on small cases"
    for spec in "model|model.(arguments|stages)" "attention|^arguments|B=1 T=1 |T=7 |T=63 " \
                "grouped-gemm|api|wgmma" "layer|arguments"; do
      name="${spec%%|*}"; only="${spec#*|}"
      log="$work/logs/$tool-$name.log"
      timeout -k 10 "$(left "$TEST_TIMEOUT")" compute-sanitizer --tool "$tool" --error-exitcode 3 \
        "$bin/jetmoe-$name-test" --only "$only" > "$log" 2>&1
      rc=$?
      printf '%-9s %-14s %s\n' "$tool" "$name" "$([[ $rc -eq 0 ]] && echo clean || echo "FAIL (exit $rc)")" | tee -a "$summary"
      [[ $rc -eq 0 ]] || status=1
    done
  done
  if [[ "${TORCH_CHECK:-1}" != 0 ]]; then
    # The kernels against PyTorch / HF transformers in one process (ctypes on libjetmoe_kernels.so).
    lib="$bin/libjetmoe_kernels.so"
    log="$work/logs/torch-check.log"
    if [[ ! -f "$lib" ]]; then
      printf '%-14s %s\n' torch_check "SKIPPED (no $lib)" | tee -a "$summary"
    else
      start=$SECONDS
      # shellcheck disable=SC2086
      timeout -k 10 "$(left "${TORCH_CHECK_TIMEOUT:-420}")" "$PYTHON" "$REPO/kernels/tests/torch_check.py" --lib "$lib" \
        --device cuda ${TORCH_CHECK_ARGS:---shape 8b --paths tuned,wgmma} > "$log" 2>&1
      rc=$?
      case $rc in
        0) verdict=PASS ;;
        77) verdict="SKIPPED (exit 77: $(grep -m1 'exit 77' "$log" | cut -c1-80))" ;;
        *) verdict="$(failed $rc)"; status=1 ;;
      esac
      verdict_line torch_check "$verdict" "$((SECONDS - start))" "$log" | tee -a "$summary"
      grep -E '^(PASS|FAIL) ' "$log" | cut -c1-400 | sed 's/^/    /' | tee -a "$summary"
      [[ $rc -eq 0 || $rc -eq 77 ]] || tail -5 "$log" | sed 's/^/    | /' | tee -a "$summary"
    fi
  fi
fi

# ---- benchmarks beside their peers -----------------------------------------------------------------------
if [[ $mode != tests ]]; then
  say "benchmarks and peers: ${BENCH_FAMILIES:-all}"
  BIN="$bin" PYTHON="$PYTHON" timeout -k 5 "$(left)" "$REPO/scripts/bench/run_gpu_bench.sh" "$work/logs/bench" \
    ${BENCH_FAMILIES:-} > "$work/logs/bench.log" 2>&1
  rc=$?
  if [[ $rc -eq 124 || $rc -eq 137 ]]; then  # out of BUDGET: compare what was measured
    say "benchmarks: stopped at the time budget (BUDGET=$BUDGET s); comparing what finished"
    "$PYTHON" "$REPO/scripts/bench/compare_gpu.py" "$work/logs/bench" >> "$work/logs/bench.log" 2>&1
  fi
  if [[ -f "$work/logs/bench/summary.md" ]]; then cp "$work/logs/bench/summary.md" "$OUT/bench.md"; fi
  [[ -f "$work/logs/bench/status.tsv" ]] && sed 's/^/    /' "$work/logs/bench/status.tsv" | tee -a "$summary"
  case $rc in
    0) if grep -q 'no-device' "$work/logs/bench/status.tsv" 2>/dev/null; then
         say "benchmarks: some programs found no CUDA device (status above)"; status=1
       else
         say "benchmarks: every program ran (bench.md)"
       fi ;;
    77) say "benchmarks: nothing measured (no CUDA device)"; status=1 ;;
    *) say "benchmarks: a program failed, timed out or is missing (exit $rc; bench.md, logs/bench.log)"; status=1 ;;
  esac
fi
say "done: $([[ $status -eq 0 ]] && echo 'everything passed' || echo 'FAILURES above')"
exit $status
