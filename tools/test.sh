#!/bin/bash
# The test command (README): installs what is missing, builds everything, and runs every tier:
# unit (no root), BPF integration on every interpreter present, and end to end (CLI + daemon);
# then the sanitizer and fuzzing tiers (tools/sanitizers.sh).
# Run as root; pyenv builds that are absent are skipped and named in the test logs.
set -euo pipefail
cd "$(dirname "$0")/.."
tools/install-deps.sh
export PYENV_ROOT="${PYENV_ROOT:-$(pyenv root 2>/dev/null || echo "$HOME/.pyenv")}"
bazel test //... "$@"
# ASan+UBSan unit tier and fuzz replays, TSan engine tests, a short libFuzzer pass (no root).
tools/sanitizers.sh
