#!/bin/bash
# Installs what threadscope needs to build, test and run: Debian 12 packages only.
# Idempotent and quiet when everything is already there. Run as root.
set -euo pipefail

if [ "$(id -u)" != 0 ]; then
  echo "tools/install-deps.sh: run as root (it installs Debian packages)" >&2
  exit 1
fi

packages=(
  # build
  bazel-bootstrap bazel-rules-java g++ clang llvm bpftool
  # sanitizers (gcc: ASan, UBSan, TSan runtimes) and libFuzzer (clang): tools/sanitizers.sh
  libasan8 libubsan1 libtsan2 libclang-rt-14-dev
  libbpf-dev libelf-dev zlib1g-dev linux-libc-dev
  protobuf-compiler protobuf-compiler-grpc libprotobuf-dev libgrpc++-dev grpc-proto
  libspdlog-dev libfmt-dev libgtest-dev libgmock-dev libcapstone-dev libcli11-dev
  nlohmann-json3-dev prometheus-cpp-dev
  # run and test: Debian's own stripped CPython is always a test target; debootstrap builds the
  # Debian unstable root with 3.13-3.15 (tools/debian-unstable-root.sh)
  python3.11 procps util-linux debootstrap
  # benchmarks (bench/): google-benchmark for model_bench (built by `bazel build //...`),
  # bpftrace for the uprobe floors the Python benchmarks compare against
  libbenchmark-dev bpftrace
  # metrics tests: a real Prometheus scraping the daemon, promtool for rules and exposition
  prometheus
  # TCP + TLS test: a throwaway CA and certificates; deployment test: the manifest's YAML
  openssl python3-yaml
  # profile test: `go tool pprof` reads the contention profiles
  golang-go
)

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "tools/install-deps.sh: installing ${missing[*]}" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
