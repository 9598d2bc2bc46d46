#!/bin/bash
# Runs one integration test with the built binaries. Bazel passes their paths; the tests use
# Debian's python3 so the driver does not depend on pyenv.
set -euo pipefail
export THREADSCOPE="$(realpath "$1")" THREADSCOPED="$(realpath "$2")"
test="$3"
shift 3
exec /usr/bin/python3 "$(dirname "$0")/$test" "$@"
