#!/usr/bin/env bash
# Configures and builds jetmoe with a CMake preset (default: "default", the CPU release build in
# build/), installing missing Debian packages first.
#   scripts/build.sh [PRESET]
set -euo pipefail
cd "$(dirname "$0")/.."
preset="${1:-default}"
scripts/install-deps.sh
jobs="${JETMOE_BUILD_JOBS:-$(nproc)}"
cmake --preset "$preset"
cmake --build --preset "$preset" -j "$jobs"
