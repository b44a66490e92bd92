#!/usr/bin/env bash
# The main job on the shipped default deck: installs what is missing, builds, runs
#   jetmoe-train -i inputs/tiny.deck [block/key=value ...]
# Extra arguments are passed to jetmoe-train (deck overrides, --check, --kokkos-*).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/build.sh default
exec build/apps/jetmoe-train -i inputs/tiny.deck "$@"
