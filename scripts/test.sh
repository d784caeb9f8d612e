#!/usr/bin/env bash
# Installs what the tests need, then runs every check CI runs: formatting, lints and all tests.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/install-deps.sh --test

cargo fmt --all --check
cargo clippy --workspace --all-targets -- -D warnings
# Tests start the workspace's binaries (shadowcopyd, shadowcopy-writer, the example copy
# provider); cargo builds a package's binaries only for that package's own integration tests,
# so build them all first.
cargo build --workspace --bins
# Doc tests first, so that the last summary line is the whole suite's.
cargo test --workspace --doc
if cargo nextest --version >/dev/null 2>&1; then
    cargo nextest run --workspace --no-fail-fast
else
    cargo test --workspace --no-fail-fast
fi
