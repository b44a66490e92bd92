#!/usr/bin/env bash
# Builds the CUDA kernels' GPU test programs and benchmarks HERE (a machine with nvcc, no GPU needed) and
# packs them into .gpu/bin.tar.xz, so a GPU session spends its device time running them, not compiling:
#
#   scripts/gpu/pack.sh                      # from the build directory build/ (cmake --preset default)
#   BUILD=/path/to/build scripts/gpu/pack.sh
#
# then, with the device tool: run command "scripts/gpu/session.sh tests" with carry [".gpu"] (.gpu/ is
# git-ignored; about 11 MB, libjetmoe_kernels.so for kernels/tests/torch_check.py included). The archive
# records a hash of the kernels/ sources; session.sh rebuilds (the standalone kernels build) when it does
# not match the sources of the tree it runs in.
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
# shellcheck source=scripts/gpu/common.sh
source "$REPO/scripts/gpu/common.sh"
BUILD="${BUILD:-$REPO/build}"
PROGRAMS=(kernels attention embedding fused grouped-gemm layer model router)

[[ -f "$BUILD/build.ninja" ]] || { echo "pack.sh: no build in $BUILD (cmake --preset default, or set BUILD)" >&2; exit 1; }
targets=()
for p in "${PROGRAMS[@]}"; do targets+=("jetmoe-$p-test" "jetmoe-$p-bench"); done
echo "pack.sh: building ${#targets[@]} programs and libjetmoe_kernels.so in $BUILD"
ninja -C "$BUILD" "${targets[@]}" jetmoe_kernels_shared

stage="$(mktemp -d)"
trap 'rm -rf "$stage"' EXIT
mkdir -p "$stage/bin"
for t in "${targets[@]}"; do cp "$BUILD/kernels/$t" "$stage/bin/"; done
cp "$BUILD/kernels/libjetmoe_kernels.so" "$stage/bin/"  # for kernels/tests/torch_check.py (session.sh tests)
{
  echo "kernels: $(kernels_hash "$REPO")"
  echo "revision: $(git -C "$REPO" rev-parse --short HEAD 2>/dev/null)$(git -C "$REPO" diff --quiet HEAD -- kernels 2>/dev/null || echo ' (kernels/ modified)')"
  echo "built: $(date -Is) on $(uname -n)"
  echo "nvcc: $(nvcc --version | tail -1)"
  grep -m1 '^CMAKE_CUDA_ARCHITECTURES' "$BUILD/CMakeCache.txt" || true
} > "$stage/bin/MANIFEST"
mkdir -p "$REPO/.gpu"
tar -C "$stage" -cf - bin | xz -T0 -6 > "$REPO/.gpu/bin.tar.xz.tmp"
mv "$REPO/.gpu/bin.tar.xz.tmp" "$REPO/.gpu/bin.tar.xz"
echo "pack.sh: $(du -h "$REPO/.gpu/bin.tar.xz" | cut -f1) in .gpu/bin.tar.xz"
cat "$stage/bin/MANIFEST"
