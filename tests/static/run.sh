#!/bin/bash
# Runs one static test with Debian's python3 (PyYAML from python3-yaml; promtool from prometheus).
set -euo pipefail
test="$1"
# The daemon binary, for checking config files (--check-config loads no BPF).
if [ $# -ge 2 ]; then export THREADSCOPED="$(realpath "$2")"; fi
exec /usr/bin/python3 "$(dirname "$0")/$test"
