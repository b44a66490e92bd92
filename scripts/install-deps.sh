#!/usr/bin/env bash
# Installs the Debian packages jetmoe builds and tests with, skipping those already present, and
# says what it installs. Idempotent: a second run installs nothing. Needs root (or sudo).
#
#   scripts/install-deps.sh          # build + test dependencies
#   scripts/install-deps.sh --check  # only report what is missing (exit 1 if anything is)
#   scripts/install-deps.sh --fuzz   # also Clang and its libFuzzer runtime (scripts/fuzz.sh)
set -euo pipefail

check=false
fuzz=false
for arg in "$@"; do
  case "$arg" in
    --check) check=true ;;
    --fuzz) fuzz=true ;;
    *) echo "install-deps: error: unknown option '$arg' (expected --check or --fuzz)" >&2; exit 2 ;;
  esac
done

packages=(
  cmake ninja-build g++ git pkg-config             # toolchain
  libtrilinos-kokkos-dev                           # Kokkos 3.4.01 (Serial)
  libtrilinos-kokkos-kernels-dev                   # Kokkos Kernels 3.4.01
  libopenblas-dev                                  # BLAS behind Kokkos Kernels' gemm
  libopenmpi-dev openmpi-bin                       # MPI
  libhdf5-openmpi-dev                              # parallel HDF5 (checkpoints)
  libsentencepiece-dev sentencepiece               # tokenizer
  nlohmann-json3-dev                               # safetensors headers, config.json
  zlib1g-dev                                       # gzip-compressed corpora (jetmoe-prepare)
  catch2                                           # Catch2 v2 (tests)
)
if $fuzz; then
  packages+=(clang libclang-rt-dev)                # Clang with libFuzzer and the sanitizers
fi

missing=()
for p in "${packages[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done

if [[ ${#missing[@]} -eq 0 ]]; then
  echo "install-deps: all ${#packages[@]} Debian packages are present."
  exit 0
fi
if $check; then
  echo "install-deps: missing: ${missing[*]}"
  exit 1
fi

echo "install-deps: installing ${#missing[@]} missing package(s): ${missing[*]}"
SUDO=""
if [[ $(id -u) -ne 0 ]]; then
  if command -v sudo >/dev/null 2>&1; then
    SUDO="sudo"
  else
    echo "install-deps: error: not root and no sudo; run as root: apt-get install ${missing[*]}" >&2
    exit 1
  fi
fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
echo "install-deps: done."
