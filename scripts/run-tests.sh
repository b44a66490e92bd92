#!/usr/bin/env bash
# The test suite: installs what is missing, builds (preset "default"), runs every CTest test
# (unit, MPI at 1/2/4 ranks, command-line and docs checks). Extra arguments go to ctest,
# e.g. scripts/run-tests.sh -L mpi
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/build.sh default
ctest --preset default "$@"
