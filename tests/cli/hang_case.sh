#!/bin/bash
# A rank that stops answering (SIGSTOP: hung, not dead) is caught by the other ranks' watchdog
# (parallel/timeout): the job ends with status 1 and one message naming the waiting rank and its wait,
# within the timeout plus a few seconds, instead of hanging.
#   hang_case.sh SCRATCH MPIEXEC [mpiexec flags...] -- APP [app arguments...]
# Rank 1 is stopped once both ranks have run for a few seconds. Exit 0 when the job ends as expected.
set -u
scratch=$1; shift
launcher=()
while [ "$1" != "--" ]; do launcher+=("$1"); shift; done
shift
rm -rf "$scratch" && mkdir -p "$scratch" && cd "$scratch" || exit 2
scratch=$(pwd -P)
# This job's ranks: the APP processes running in the scratch directory (other tests may run APP too).
ours() {
  for p in $(pgrep -f -- "$app"); do
    [ "$(readlink "/proc/$p/exe" 2>/dev/null)" = "$exe" ] && [ "$(readlink "/proc/$p/cwd" 2>/dev/null)" = "$scratch" ] &&
      echo "$p"
  done
}
cleanup() { for p in $(ours); do kill -KILL "$p" 2>/dev/null; done; kill -KILL $job 2>/dev/null; }
app=$1
exe=$(readlink -f "$app")
"${launcher[@]}" "$@" > out.txt 2> err.txt &
job=$!
victim=""
for _ in $(seq 1 300); do  # up to 30 s for rank 1 to start
  for p in $(ours); do
    if { tr '\0' '\n' < "/proc/$p/environ"; } 2>/dev/null | grep -qx "OMPI_COMM_WORLD_RANK=1\|PMI_RANK=1\|PMIX_RANK=1"; then
      victim=$p
    fi
  done
  [ -n "$victim" ] && break
  sleep 0.1
done
if [ -z "$victim" ]; then
  echo "rank 1 never started"; cleanup; cat err.txt; exit 1
fi
sleep 3  # into the run (or still in its start: a wait either way)
kill -STOP "$victim"
start=$(date +%s)
while kill -0 $job 2>/dev/null && [ $(( $(date +%s) - start )) -le 60 ]; do sleep 0.2; done
if kill -0 $job 2>/dev/null; then  # still hanging: clean up, fail
  cleanup
  echo "FAIL: the job still runs 60 s after rank 1 stopped"; cat err.txt; exit 1
fi
wait $job
status=$?
waited=$(( $(date +%s) - start ))
kill -KILL "$victim" 2>/dev/null
echo "job status $status, $waited s after rank 1 stopped"
cat err.txt
[ $status -ne 0 ] || { echo "FAIL: the job did not fail"; exit 1; }
grep -Eq "jetmoe: error: rank 0 \(pipeline stage 0, data-parallel replica 0\): .* has not finished after [0-9]+ s \(parallel/timeout = 5 s\)" err.txt ||
  { echo "FAIL: no watchdog message from rank 0"; exit 1; }
exit 0
