#!/bin/bash
# The test command (README): installs what is missing, builds the Debian unstable root once
# (cached; CPython 3.13-3.15 as Debian ships them), builds everything, and runs every tier on the
# interpreter matrix (tests/interpreters.json): unit (no root), BPF integration, and end to end
# (CLI + daemon). Run as root. Required interpreters (Debian 12's python3.11, Debian unstable's
# three) fail the tests when missing; absent pyenv builds and extras are skipped, by name, in the
# test logs. THREADSCOPE_EXTRA_PYTHONS=/path/python3.14t:label=/path/python adds interpreters
# (.bazelrc passes it and THREADSCOPE_DEBIAN_UNSTABLE_ROOT to the tests). Then the sanitizer
# and fuzzing tiers (tools/sanitizers.sh).
#
# Without root it runs what needs none (the unit and static tiers, then the sanitizer tiers),
# with the root already built (it cannot install packages or run debootstrap), then the root
# tier, each of whose tests fails at once with one `NOT RUN: ... needs root` line; it ends with
# a banner saying the root tier did not run, and exits 1: it is never green without the BPF tiers.
set -euo pipefail
cd "$(dirname "$0")/.."
export PYENV_ROOT="${PYENV_ROOT:-$(pyenv root 2>/dev/null || echo "$HOME/.pyenv")}"
THREADSCOPE_DEBIAN_UNSTABLE_ROOT="$(tools/debian-unstable-root.sh --print)"
export THREADSCOPE_DEBIAN_UNSTABLE_ROOT

if [ "$(id -u)" = 0 ]; then
  tools/install-deps.sh
  tools/debian-unstable-root.sh
  bazel test //... "$@"
  # ASan+UBSan unit tier and fuzz replays, TSan engine tests, a short libFuzzer pass (no root).
  tools/sanitizers.sh
  exit 0
fi

banner() {
  echo "================================================================================" >&2
  echo "tools/test.sh: $*" >&2
  echo "================================================================================" >&2
}
banner "not root: running the tiers that need none; the root tier (BPF, daemons) will be" \
       "NOT RUN and this command will fail. Run it as root for the whole test command."
if [ ! -f "$THREADSCOPE_DEBIAN_UNSTABLE_ROOT/.threadscope-root" ]; then
  echo "tools/test.sh: $THREADSCOPE_DEBIAN_UNSTABLE_ROOT is not built (building it needs root:" \
       "sudo tools/debian-unstable-root.sh); the tests of its interpreters will fail" >&2
fi
bazel test --config=unit //... "$@"
tools/sanitizers.sh
# Each root-tier test says NOT RUN on its own (tests/integration/harness.py); run them so the
# log names every one.
root_status=0
bazel test --test_tag_filters=requires_root --keep_going //... "$@" || root_status=$?
banner "unit, static and sanitizer tiers passed; ROOT TIER NOT RUN (needs root; bazel exit" \
       "$root_status). This is not a passing run of the test command."
exit 1
