#!/bin/bash
# Runs one static test with Debian's python3 (PyYAML from python3-yaml; promtool from prometheus).
set -euo pipefail
exec /usr/bin/python3 "$(dirname "$0")/$1"
