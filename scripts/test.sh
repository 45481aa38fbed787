#!/usr/bin/env bash
# The whole test suite, on a fresh machine or an old one: installs the tools
# the tests drive (only what is missing; see install-test-deps.sh), then runs
# `cargo test`. Extra arguments go to cargo test, e.g. `scripts/test.sh --test it bypass::`.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-test-deps.sh
exec cargo test --locked "$@"
