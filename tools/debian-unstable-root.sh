#!/bin/bash
# Builds, once, the Debian unstable root the test matrix runs CPython 3.13, 3.14 and 3.15 from
# (Debian's own stripped LTO+PGO builds: what most people run), with debootstrap from Debian's
# archive. The host's apt sources are never touched: sid lives only inside the root.
#
#   tools/debian-unstable-root.sh            the test root (tools/test.sh calls this)
#   tools/debian-unstable-root.sh --bench    a second, optional root for the benchmarks: the same
#                                            interpreters plus sid's bpftrace (the floors)
#   tools/debian-unstable-root.sh --print    prints the root's path and builds nothing
#
# Where: THREADSCOPE_DEBIAN_UNSTABLE_ROOT (default: tests/interpreters.json's debian_unstable_root,
# /var/cache/threadscope/debian-unstable), and
# THREADSCOPE_DEBIAN_UNSTABLE_BENCH_ROOT (default: the same path with -bench) for --bench.
# The root is built in a temporary directory beside its final path and renamed into place when
# complete, with a stamp (/.threadscope-root inside it) naming the recipe; a root whose stamp
# matches is reused, silently. A half-built root never counts: it has no stamp and no final name.
# Runs as root. Programs run inside the root through tools/in-root.
set -euo pipefail

mode=test
case "${1:-}" in
  "") ;;
  --bench) mode=bench ;;
  --print) mode=print ;;
  *) echo "usage: $0 [--bench|--print]" >&2; exit 2 ;;
esac

# The matrix (tests/interpreters.json) says where the root goes and which packages its
# debian-unstable interpreters come from: adding a version there is all it takes.
matrix="$(dirname "$0")/../tests/interpreters.json"
mapfile -t from_matrix < <(python3 -c '
import json, sys
m = json.load(open(sys.argv[1]))
print(m["debian_unstable_root"])
for e in m["interpreters"]:
    if e["kind"] == "debian-unstable":
        print(e["package"])' "$matrix")
if [ ${#from_matrix[@]} -lt 2 ]; then
  echo "$0: cannot read the Debian unstable root's packages from $matrix" >&2
  exit 1
fi
test_root="${THREADSCOPE_DEBIAN_UNSTABLE_ROOT:-${from_matrix[0]}}"
mirror="${THREADSCOPE_DEBIAN_MIRROR:-http://deb.debian.org/debian}"
packages=("${from_matrix[@]:1}")
root="$test_root"
if [ "$mode" = print ]; then
  echo "$root"
  exit 0
fi
if [ "$mode" = bench ]; then
  # Bench-only extras live in their own root so that the tests never wait for them and the
  # test root's interpreters never change under an apt-get run.
  root="${THREADSCOPE_DEBIAN_UNSTABLE_BENCH_ROOT:-$test_root-bench}"
  packages+=(bpftrace)
fi

# The recipe. A root whose stamp says exactly this is complete and current.
recipe="threadscope debian-unstable root v1
suite: sid
variant: minbase
mirror: $mirror
packages: ${packages[*]}"
stamp=.threadscope-root

current() { [ -f "$root/$stamp" ] && [ "$(sed -n '1,/^$/p' "$root/$stamp" | sed '/^$/d')" = "$recipe" ]; }

if current; then
  exit 0
fi

if [ "$(id -u)" != 0 ]; then
  echo "$0: $root is missing or out of date; run this as root to build it" >&2
  exit 1
fi
if ! command -v debootstrap >/dev/null; then
  echo "$0: debootstrap is missing (tools/install-deps.sh installs it)" >&2
  exit 1
fi

parent="$(dirname "$root")"
name="$(basename "$root")"
mkdir -p "$parent"
# One builder at a time; the others wait and then find the root built.
exec 9>"$parent/.$name.lock"
flock 9
if current; then
  exit 0
fi

# Leftovers of builds that were killed (no other build runs: we hold the lock).
unmount_under() {
  # debootstrap mounts /proc and /sys inside its target; a killed run can leave them mounted.
  local dir="$1" m
  for m in $(awk -v d="$dir/" 'index($2, d) == 1 { print $2 }' /proc/self/mounts | sort -r); do
    umount -l "$m" 2>/dev/null || true
  done
}
remove_tree() {
  unmount_under "$1"
  rm -rf --one-file-system "$1"
}
for old in "$parent/.$name.tmp."* "$parent/.$name.old."*; do
  [ -e "$old" ] && remove_tree "$old"
done

tmp="$(mktemp -d "$parent/.$name.tmp.XXXXXX")"
log="$tmp.log"
trap 'remove_tree "$tmp"; rm -f "$log"' EXIT
include="$(IFS=,; echo "${packages[*]}")"
echo "$0: building $root (debootstrap sid with $include; about a minute, once)" >&2
started=$(date +%s)
if ! debootstrap --variant=minbase --include="$include" sid "$tmp" "$mirror" >"$log" 2>&1; then
  echo "$0: debootstrap failed; the end of its log:" >&2
  tail -n 30 "$log" >&2
  if [ -f "$tmp/debootstrap/debootstrap.log" ]; then
    tail -n 30 "$tmp/debootstrap/debootstrap.log" >&2
  fi
  exit 1
fi
unmount_under "$tmp"
for p in "${packages[@]}"; do
  if ! chroot "$tmp" dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    echo "$0: $p did not install into the root" >&2
    exit 1
  fi
done
# The recipe, then (after a blank line) what it produced, for people reading the stamp.
{
  echo "$recipe"
  echo
  echo "built: $(date -u +%Y-%m-%dT%H:%M:%SZ) in $(( $(date +%s) - started ))s"
  chroot "$tmp" dpkg-query -W -f='${Package} ${Version}\n' "${packages[@]}"
} >"$tmp/$stamp"
chmod 755 "$tmp"

# Into place. An out-of-date root is moved aside first and removed after.
if [ -e "$root" ]; then
  aside="$(mktemp -u "$parent/.$name.old.XXXXXX")"
  mv -T "$root" "$aside"
  mv -T "$tmp" "$root"
  remove_tree "$aside"
else
  mv -T "$tmp" "$root"
fi
rm -f "$log"
trap - EXIT
echo "$0: $root is ready: $(sed -n '/^$/,$p' "$root/$stamp" | sed '/^$/d' | tr '\n' ';' | sed 's/;$//')" >&2
