#!/bin/bash
# The long fuzz run: each libFuzzer target (tests/fuzz) for FUZZ_SECONDS (default 600) from the
# generated seeds, keeping the corpus between runs in $FUZZ_DIR (default
# /var/tmp/threadscope-fuzz), plus "elf-real": the ELF target started from the interpreters on
# this machine. Prints the figures that
# docs/PERFORMANCE.md ("Fuzzing") quotes: executions, executions per second, coverage (edges)
# and features, corpus size. Needs clang and libclang-rt-14-dev; no root, no BPF.
#
#   bench/fuzz.sh                      all targets, 10 minutes each (50 minutes)
#   FUZZ_SECONDS=60 bench/fuzz.sh elf  one target, one minute
#
# A finding stops the run with the input saved under $FUZZ_DIR/artifacts/<target>/. Keep it:
#   <target>_fuzzer -minimize_crash=1 -runs=10000 FILE   (then copy the minimized input to
#   tests/fuzz/regressions/<target>/, where //tests/fuzz:<target>_fuzz_test replays it), fix
#   the bug, and rerun.
set -euo pipefail
cd "$(dirname "$0")/.."
FUZZ_SECONDS="${FUZZ_SECONDS:-600}"
FUZZ_DIR="${FUZZ_DIR:-/var/tmp/threadscope-fuzz}"
FUZZ_BASE="${FUZZ_OUTPUT_BASE:-/var/tmp/threadscope-bazel-fuzz}"
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(elf elf-real record recording py_code)

fuzz_bazel() { CC=clang CXX=clang++ nice -n 10 bazel --output_base="$FUZZ_BASE" "$@"; }
fuzz_bazel build --config=fuzz --symlink_prefix=/ //tests/fuzz:all
bin="$(fuzz_bazel info --config=fuzz bazel-bin)"
mkdir -p "$FUZZ_DIR"
rm -rf "$FUZZ_DIR/seeds"
"$bin/tests/fuzz/make_seeds" "$FUZZ_DIR/seeds"

# The ELF target also starts from real interpreters (read in place, never copied into the
# repository), with inputs as large as they are: those of the test matrix that are here
# (tests/interpreters.json, and THREADSCOPE_EXTRA_PYTHONS), and the libpython each links.
real="$FUZZ_DIR/real-elf"
rm -rf "$real" && mkdir -p "$real"
for binary in $(python3 tests/interpreters.py --binaries); do
  for p in "$binary" "$(dirname "$binary")"/../lib/libpython*.so.1.0; do
    [ -f "$p" ] && ln -sf "$(realpath "$p")" "$real/$(realpath "$p" | tr / _)"
  done
done

printf "| target | seconds | executions | exec/s | coverage (edges) | features | corpus |\n"
printf "|---|---|---|---|---|---|---|\n"
for target in "${targets[@]}"; do
  # elf-real: the ELF fuzzer from the interpreters themselves (inputs up to 16 MiB). Its new
  # inputs are as large, so its corpus is not kept.
  binary="$target"
  extra=()
  flags=()
  corpus="$FUZZ_DIR/corpus/$target"
  if [ "$target" = elf-real ]; then
    [ -n "$(ls -A "$real")" ] || continue
    binary=elf
    corpus="$(mktemp -d "$FUZZ_DIR/elf-real.XXXXXX")"
    extra=("$real")
    flags=(-max_len=16777216)
  else
    extra=("$FUZZ_DIR/seeds/$target")
  fi
  artifacts="$FUZZ_DIR/artifacts/$target"
  mkdir -p "$corpus" "$artifacts"
  log="$FUZZ_DIR/$target.log"
  if ! nice -n 10 "$bin/tests/fuzz/${binary}_fuzzer" "$corpus" "${extra[@]}" "${flags[@]}" \
      -max_total_time="$FUZZ_SECONDS" -timeout=30 -rss_limit_mb=4096 -print_final_stats=1 \
      -artifact_prefix="$artifacts/" >"$log" 2>&1; then
    tail -n 60 "$log" >&2
    echo "bench/fuzz.sh: ${binary}_fuzzer found a bug; input in $artifacts/" >&2
    exit 1
  fi
  [ "$target" = elf-real ] && rm -rf "$corpus"
  done_line="$(grep -E '^#[0-9]+[[:space:]]+DONE' "$log" | tail -n 1)"
  execs="$(grep -oP 'stat::number_of_executed_units: *\K[0-9]+' "$log")"
  rate="$(grep -oP 'stat::average_exec_per_sec: *\K[0-9]+' "$log")"
  cov="$(echo "$done_line" | grep -oP 'cov: \K[0-9]+')"
  ft="$(echo "$done_line" | grep -oP 'ft: \K[0-9]+')"
  corp="$(echo "$done_line" | grep -oP 'corp: \K[0-9]+/[0-9]+[a-zA-Z]*')"
  printf "| %s | %s | %s | %s | %s | %s | %s |\n" "$target" "$FUZZ_SECONDS" "$execs" "$rate" \
    "$cov" "$ft" "$corp"
done
