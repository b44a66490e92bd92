#!/bin/bash
# Builds and runs the CPU emulation of the real kernels/src/FAMILY.cu under the real
# kernels/tests/test_FAMILY.cu (see README.md here).
#   run.sh FAMILY [test args...]        e.g. run.sh router; EMU_ORDER=reverse run.sh fused --seed 7
#   run.sh selftest                     the emulator's own test (emu/selftest.cu)
#   run.sh grouped_gemm-old             the older grouped_gemm emulator (emu/grouped_gemm/, reduced shapes)
# Environment: EMU_BUILD (build dir, default /tmp/emu-FAMILY), EMU_ORDER, EMU_FILL, EMU_SKIP, EMU_ONLY,
# EMU_MAX_BYTES, EMU_MAX_THREADS, EMU_SMS, CXX (default g++), EMU_OPT (default -O1),
# EMU_TRANSFORM_ARGS (e.g. "--source /tmp/mutant/router.cu" for a mutation check), EMU_JOBS (parallel
# compilations, default 2). Every source is compiled as its own object (make: only what changed).
set -euo pipefail
family=${1:?usage: run.sh FAMILY [args]}
shift
here=$(cd "$(dirname "$0")" && pwd)
kernels=$(cd "$here/../.." && pwd)
if [ "$family" = grouped_gemm-old ]; then
  # the older thread-per-CUDA-thread emulator of grouped_gemm (kernels/tests/emu/grouped_gemm,
  # kernels/notes/grouped_gemm.md): reduced shapes; its scripts use /tmp/emu and read /work/main.
  mkdir -p /tmp/emu/reference
  cp "$here"/grouped_gemm/* /tmp/emu/
  cp "$kernels/tests/harness.cuh" /tmp/emu/
  cp "$kernels/tests/reference/grouped_gemm.hpp" /tmp/emu/reference/
  (cd /tmp/emu && python3 transform.py && python3 transform_test.py)
  cuda=${CUDA_HOME:-/usr/local/cuda}
  nice ${CXX:-g++} -std=c++20 -O1 -w -I/tmp/emu -I"$cuda/include" -I"$kernels/include" -I"$kernels/tests/reference" \
    /tmp/emu/emu_test.cpp -o /tmp/emu/emu_test -L"$cuda/lib64" -lcublasLt -lcudart -lpthread
  exec env LD_LIBRARY_PATH="$cuda/lib64:${LD_LIBRARY_PATH:-}" /tmp/emu/emu_test "$@"
fi
if [ "$family" = selftest ]; then
  out=${EMU_BUILD:-/tmp/emu-selftest}
  python3 "$here/transform.py" selftest "$out"
  nice ${CXX:-g++} -std=c++20 -O1 -g -ffp-contract=off -Wall -Wno-unknown-pragmas -iquote "$out" -I "$here" \
    -I "${CUDA_HOME:-/usr/local/cuda}/include" -I "$kernels/include" "$out/selftest_emu.cpp" -o "$out/selftest_emu"
  exec "$out/selftest_emu"
fi
out=${EMU_BUILD:-/tmp/emu-$family}
mkdir -p "$out/new"
# Transform into $out/new, then copy only what changed, so that make rebuilds only those objects.
rm -f "$out"/new/*
python3 "$here/transform.py" "$family" "$out/new" ${EMU_TRANSFORM_ARGS:-}
for f in "$out"/new/*; do cmp -s "$f" "$out/${f##*/}" || cp "$f" "$out/"; done
tus=$(python3 "$here/transform.py" "$family" --list)
cuda_inc=${CUDA_HOME:-/usr/local/cuda}/include
# One object per translation unit (transform.py: every source is its own TU, as with nvcc), then link.
{
  echo "CXX := ${CXX:-g++}"
  echo "FLAGS := -std=c++20 ${EMU_OPT:--O1} -g -ffp-contract=off -fno-fast-math -Wall -Wno-unknown-pragmas \
-Wno-unused-function -Wno-unused-variable -Wno-unused-but-set-variable -iquote $out -I $here -I $cuda_inc \
-I $kernels/include -I $kernels/src -I $kernels/tests"
  echo "OBJS := $(for t in $tus; do printf '%s ' "$out/${t%.cpp}.o"; done)"
  echo "$out/${family}_emu: \$(OBJS)"
  printf '\t$(CXX) -o $@ $(OBJS) -pthread\n'
  echo "$out/%.o: $out/%.cpp"
  printf '\t$(CXX) $(FLAGS) -MMD -MP -c $< -o $@\n'
  echo "\$(OBJS): $out/Makefile"  # other flags (EMU_OPT, CXX): rebuild
  echo "-include \$(OBJS:.o=.d)"
} > "$out/new/Makefile"
cmp -s "$out/new/Makefile" "$out/Makefile" || cp "$out/new/Makefile" "$out/Makefile"
nice make -s -j"${EMU_JOBS:-2}" -f "$out/Makefile" "$out/${family}_emu"
exec "$out/${family}_emu" "$@"
