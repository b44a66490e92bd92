#!/usr/bin/env bash
# Fuzzes the readers of user files (decks, config.json, safetensors, checkpoint indexes, prepared data,
# chat and eval files, the tokenizer) with libFuzzer, AddressSanitizer and UBSan: builds the `fuzz`
# preset (Clang; installs it with install-deps.sh --fuzz when missing) and runs each target for
# SECONDS (default 60), one after another. See tests/fuzz/README.md.
#
#   scripts/fuzz.sh [SECONDS] [TARGET...]      # targets: deck model_config safetensors ... (all by default)
#
# New interesting inputs go to build-fuzz/fuzz/<target>/corpus, findings to
# build-fuzz/fuzz/<target>/findings/ (crash-*, timeout-*, oom-*, leak-*); the exit status is 1 when
# any target found something. Reproduce one with: build-fuzz/tests/fuzz/jetmoe-fuzz-<target> FILE
set -euo pipefail
cd "$(dirname "$0")/.."
seconds="${1:-60}"
[[ $# -gt 0 ]] && shift
if ! [[ "$seconds" =~ ^[0-9]+$ ]] || [[ "$seconds" -eq 0 ]]; then
  echo "fuzz: error: SECONDS must be a positive integer, found '$seconds'" >&2
  exit 2
fi
all=(deck model_config safetensors checkpoint_index manifest token_shard tokenizer tokenizer_model chat_jsonl mc_jsonl documents)
targets=("$@")
[[ ${#targets[@]} -eq 0 ]] && targets=("${all[@]}")
for t in "${targets[@]}"; do
  if [[ ! -d "tests/fuzz/corpus/$t" ]]; then
    echo "fuzz: error: unknown target '$t' (targets: ${all[*]})" >&2
    exit 2
  fi
done

scripts/install-deps.sh --fuzz
cmake --preset fuzz >/dev/null
cmake --build --preset fuzz -j "${JETMOE_BUILD_JOBS:-$(nproc)}" --target "${targets[@]/#/jetmoe-fuzz-}"

status=0
# The targets write their inputs to scratch directories under TMPDIR, which a crashing input leaves
# behind: each target gets its own, removed when it ends, however it ends.
scratch="$(mktemp -d "${TMPDIR:-/tmp}/jetmoe-fuzz-run.XXXXXX")"
trap 'rm -rf "$scratch"' EXIT
for t in "${targets[@]}"; do
  work="build-fuzz/fuzz/$t"
  mkdir -p "$work/corpus" "$work/findings" "$scratch/$t"
  echo "fuzz: $t for ${seconds} s"
  # -timeout: an input that takes over 10 s is a finding (a hang); -rss_limit_mb: as is one that
  # needs over 2 GB (a size taken from the file). The first corpus directory receives new inputs.
  if ! TMPDIR="$scratch/$t" ASAN_OPTIONS=detect_leaks=1 UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1 \
      "build-fuzz/tests/fuzz/jetmoe-fuzz-$t" -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 \
      -print_final_stats=1 -artifact_prefix="$work/findings/" "$work/corpus" "tests/fuzz/corpus/$t" \
      >"$work/log.txt" 2>&1; then
    status=1
    echo "fuzz: $t FOUND something: $(ls "$work/findings" | tr '\n' ' ') (log: $work/log.txt)"
  fi
  grep -E "^stat::(number_of_executed_units|new_units_added)" "$work/log.txt" | sed "s/^/fuzz: $t /" || true
  rm -rf "${scratch:?}/$t"
done
exit $status
