#!/usr/bin/env bash
# Runs the whole test suite: unit tests, integration tests against real node processes.
# Tests that need root, /dev/kvm or a container runtime fail instead of skipping when
# OMNICLOUD_REQUIRE_ALL=1 (CI sets it).
set -euo pipefail
cd "$(dirname "$0")/.."
# --no-fail-fast: one failing test binary does not hide the results of the others.
cargo test --all-targets --no-fail-fast "$@"
