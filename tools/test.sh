#!/bin/bash
# The test command (README): installs what is missing, builds the Debian unstable root once
# (cached; CPython 3.13-3.15 as Debian ships them), builds everything, and runs every tier on the
# interpreter matrix (tests/interpreters.json): unit (no root), BPF integration, and end to end
# (CLI + daemon). Run as root. Required interpreters (Debian 12's python3.11, Debian unstable's
# three) fail the tests when missing; absent pyenv builds and extras are skipped, by name, in the
# test logs. THREADSCOPE_EXTRA_PYTHONS=/path/python3.14t:label=/path/python adds interpreters
# (.bazelrc passes it and THREADSCOPE_DEBIAN_UNSTABLE_ROOT to the tests). Then the sanitizer
# and fuzzing tiers (tools/sanitizers.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
tools/install-deps.sh
tools/debian-unstable-root.sh
export PYENV_ROOT="${PYENV_ROOT:-$(pyenv root 2>/dev/null || echo "$HOME/.pyenv")}"
THREADSCOPE_DEBIAN_UNSTABLE_ROOT="$(tools/debian-unstable-root.sh --print)"
export THREADSCOPE_DEBIAN_UNSTABLE_ROOT
bazel test //... "$@"
# ASan+UBSan unit tier and fuzz replays, TSan engine tests, a short libFuzzer pass (no root).
tools/sanitizers.sh
