#!/bin/bash
# The sanitizer and fuzzing tiers of the test command (tools/test.sh runs this after the main
# tiers; it needs no root and loads no BPF):
#   1. the unit tier under ASan+UBSan, which includes every fuzz target's corpus replay
#      (//tests/fuzz:*_fuzz_test: generated seeds, mutations of them, regressions/);
#   2. the engine's concurrent tests under TSan (sessions, the live consumer, leases);
#   3. a short libFuzzer pass over each fuzz target (clang, in an output base of its own, since
#      Bazel's autoconfigured toolchain follows $CC), which must end with no findings.
# Options (environment): FUZZ_SECONDS per target (default 20; 0 skips step 3),
# SANITIZERS_SKIP="asan tsan" to skip steps. The longer fuzz run is bench/fuzz.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
FUZZ_SECONDS="${FUZZ_SECONDS:-20}"
SKIP=" ${SANITIZERS_SKIP:-} "
FUZZ_BASE="${FUZZ_OUTPUT_BASE:-/var/tmp/threadscope-bazel-fuzz}"
step() { echo "tools/sanitizers.sh: $* ($(date +%T))" >&2; }

if [[ "$SKIP" != *" asan "* ]]; then
  step "unit tier and fuzz replays under ASan+UBSan"
  bazel test --config=asan --config=unit --build_tests_only //...
fi
if [[ "$SKIP" != *" tsan "* ]]; then
  step "engine tests under TSan"
  bazel test --config=tsan //tests/unit:engine_test //tests/unit:live_session_test \
    //tests/unit:session_manager_test
fi
if [ "$FUZZ_SECONDS" -gt 0 ]; then
  step "libFuzzer, ${FUZZ_SECONDS}s per target"
  fuzz_bazel() { CC=clang CXX=clang++ bazel --output_base="$FUZZ_BASE" "$@"; }
  # No convenience symlinks: bazel-bin must keep pointing at the main build.
  fuzz_bazel build --config=fuzz --symlink_prefix=/ //tests/fuzz:all
  bin="$(fuzz_bazel info --config=fuzz bazel-bin)"
  work="$(mktemp -d /var/tmp/threadscope-fuzz.XXXXXX)"
  "$bin/tests/fuzz/make_seeds" "$work/seeds"
  for target in elf record recording py_code; do
    mkdir -p "$work/corpus/$target" "$work/artifacts/$target"
    if ! "$bin/tests/fuzz/${target}_fuzzer" "$work/corpus/$target" "$work/seeds/$target" \
        -max_total_time="$FUZZ_SECONDS" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
        -artifact_prefix="$work/artifacts/$target/" >"$work/$target.log" 2>&1; then
      tail -n 60 "$work/$target.log" >&2
      echo "tools/sanitizers.sh: ${target}_fuzzer found a bug; the input is in" \
           "$work/artifacts/$target/ (reproduce: $bin/tests/fuzz/${target}_fuzzer FILE)" >&2
      exit 1
    fi
    grep -E "^(#[0-9]+[[:space:]]+DONE|stat::number_of_executed_units|stat::average_exec_per_sec)" \
      "$work/$target.log" | sed "s/^/  $target: /" >&2 || true
  done
  rm -rf "$work"
fi
step "done"
