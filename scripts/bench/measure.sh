# shellcheck shell=bash
# Sourced by the CPU benchmark runners (run_cpu_bench.sh, run_cpu_train_bench.sh); they set RESULTS.
#
# This machine may be shared: before each run wait (up to QUIET_WAIT seconds, default 120) until the CPUs are
# idle (< 15% busy over 2 s), and after it record in $RESULTS/conditions.txt how busy the machine was in total,
# the load average and the time stolen by the hypervisor; compare.py / compare_train.py subtract the run's own
# CPU time to show what others used meanwhile.

say() { printf '\n==> %s\n' "$*"; }
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
      echo "$(basename "$0"): the machine is still busy (${busy} of the CPUs) after ${waited} s; running anyway" >&2
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
build_release() {  # build_release REPO BUILD_DIR TARGET...: a Release build of the benchmark targets
  local repo=$1 dir=$2; shift 2
  if [[ ! -f "$dir/build.ninja" && ! -f "$dir/Makefile" ]]; then
    local generator=()
    command -v ninja >/dev/null && generator=(-G Ninja)
    cmake -S "$repo" -B "$dir" "${generator[@]}" -DCMAKE_BUILD_TYPE=Release -DJETMOE_ENABLE_TESTS=OFF >/dev/null
  fi
  nice cmake --build "$dir" -j2 --target "$@"
}
extra_builds() {  # extra_builds PROGRAM: EXTRA_BUILDS ("name:dir[:blas[:libdir]] ...") as lines "name dir blas libdir"
  # More builds of ours to run beside BUILD_DIR's (a Kokkos 4 OpenMP build, an earlier revision). blas is
  # the OPENBLAS_NUM_THREADS of their runs: a number, or t for the run's thread count (a Serial build, or
  # an OpenMP OpenBLAS, which shares the Kokkos threads); default BLAS_T (1: a threaded Kokkos and a
  # pthreads OpenBLAS oversubscribe the cores). libdir, when given, leads LD_LIBRARY_PATH in that build's
  # runs (Debian's OpenMP OpenBLAS, say: /usr/lib/x86_64-linux-gnu/openblas-openmp).
  local eb name dir blas libdir
  for eb in ${EXTRA_BUILDS:-}; do
    IFS=: read -r name dir blas libdir <<<"$eb"
    [[ "$dir" = /* ]] || dir="$REPO/$dir"
    if [[ -z "$name" || ! -x "$dir/bench/$1" ]]; then
      echo "$(basename "$0"): EXTRA_BUILDS entry '$eb': no $dir/bench/$1" >&2
      return 1
    fi
    echo "$name $dir ${blas:-${BLAS_T:-1}} ${libdir:--}"
  done
}
extra_env() {  # extra_env BLAS LIBDIR THREADS: the environment of an extra build's run (see extra_builds)
  local blas=$1 libdir=$2 t=$3
  [[ "$blas" == t ]] && blas=$t
  echo "OMP_NUM_THREADS=$t MKL_NUM_THREADS=$t OPENBLAS_NUM_THREADS=$blas OMP_PROC_BIND=false"
  [[ "$libdir" != - ]] && echo "LD_LIBRARY_PATH=$libdir${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
  return 0
}
