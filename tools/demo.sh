#!/bin/bash
# The demo (README): installs what is missing, builds, starts demo/threads_demo.py and attaches
# to it with threadscope, showing its threads live, then the summary and the JSON report.
# Run as root.
set -euo pipefail
cd "$(dirname "$0")/.."
tools/install-deps.sh
bazel build //client:threadscope //daemon:threadscoped
report="${TMPDIR:-/tmp}/threadscope-demo.json"

/usr/bin/python3 demo/threads_demo.py &
demo_pid=$!
trap 'kill $demo_pid 2>/dev/null || true' EXIT
sleep 1   # let it start its first threads, so some are there before we attach

bazel-bin/client/threadscope attach "$demo_pid" --duration 12 --report "$report"
wait "$demo_pid" || true
echo
echo "JSON report: $report"
echo "Also try: bazel-bin/client/threadscope run --report out.json -- python3 your_program.py"
