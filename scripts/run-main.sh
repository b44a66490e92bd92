#!/usr/bin/env bash
# The main job on the shipped default deck: installs what is missing, builds, prepares the shipped
# corpus when data/prepared/tiny is missing (jetmoe-prepare -i inputs/prepare-tiny.deck), runs
#   jetmoe-train -i inputs/tiny.deck checkpoint/overwrite=true [block/key=value ...]
# Extra arguments are passed to jetmoe-train (deck overrides, --check, --kokkos-*).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/build.sh default
# The deck trains on the shipped corpus, tokenised once into data/prepared/tiny (ignored by git).
if [[ ! -f data/prepared/tiny/prose/manifest.json || ! -f data/prepared/tiny/code/manifest.json ]]; then
  build/apps/jetmoe-prepare -i inputs/prepare-tiny.deck prepare/overwrite=true
fi
# checkpoint/overwrite: running this again starts the tiny run over (its earlier checkpoints deleted).
exec build/apps/jetmoe-train -i inputs/tiny.deck checkpoint/overwrite=true "$@"
