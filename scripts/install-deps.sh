#!/usr/bin/env bash
# Installs what shadowcopy needs on a fresh Debian 12 machine.
#   scripts/install-deps.sh          what the programs need to build and run
#   scripts/install-deps.sh --test   also what the test suite needs
# It is idempotent: packages already present are not fetched again.
set -euo pipefail

want_tests=false
[[ "${1:-}" == "--test" ]] && want_tests=true

# Debian packages the programs use at run time.
runtime_packages=()
# Debian packages only the tests use.
test_packages=()

if ! command -v cargo >/dev/null 2>&1; then
    echo "install-deps: cargo is missing; install Rust 1.95 (rustup) first" >&2
    exit 1
fi

packages=("${runtime_packages[@]}")
$want_tests && packages+=("${test_packages[@]}")

missing=()
for package in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed" \
        || missing+=("$package")
done
if ((${#missing[@]})); then
    echo "install-deps: installing ${missing[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi
echo "install-deps: ready"
