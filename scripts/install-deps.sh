#!/usr/bin/env bash
# Installs what shadowcopy needs on a fresh Debian 12 machine.
#   scripts/install-deps.sh          what the programs need to build and run
#   scripts/install-deps.sh --test   also what the test suite needs, including a Python venv with
#                                    grpcio for examples/python-writer (/opt/shadowcopy-test-venv,
#                                    or $SHADOWCOPY_TEST_VENV)
#   scripts/install-deps.sh --bench  also what the benchmarks need (docs/PERFORMANCE.md): the test
#                                    packages they share (btrfs-progs, xfsprogs, restic, PostgreSQL)
#                                    and borgbackup, which only the backup comparison runs
# The options combine (`--test --bench`).
# It is idempotent: packages already present are not fetched again.
set -euo pipefail

want_tests=false
want_bench=false
for arg in "$@"; do
    case "$arg" in
        --test) want_tests=true ;;
        --bench) want_bench=true ;;
        *) echo "install-deps: unknown option $arg (--test, --bench)" >&2; exit 2 ;;
    esac
done

# Debian packages the programs use at run time.
runtime_packages=()
# Debian packages only the tests use: the provider tests make btrfs and xfs (reflink) file systems
# on loop devices of their own (crates/test-support, LoopVolume; mkfs.ext4 and losetup come with
# e2fsprogs and util-linux, which every Debian system has).
test_packages=(btrfs-progs xfsprogs)
test_packages+=(restic)  # repository tests: restic reads our repositories
test_packages+=(postgresql)  # PostgreSQL writer tests: initdb, pg_ctl, pgbench, pg_amcheck
test_packages+=(mariadb-server mariadb-client)  # MariaDB writer tests: mariadb-install-db, mariadbd, the mariadb client
# systemd tests (crates/daemon/tests/systemd.rs, packaging.rs): systemd-socket-activate and
# systemd-analyze; no running systemd is needed, nothing is started through it.
test_packages+=(systemd)
test_packages+=(curl)  # metrics tests scrape shadowcopyd's /metrics as Prometheus would, with curl
test_packages+=(dpkg-dev)  # the Debian package test: packaging/deb/build.sh runs dpkg-shlibdeps
# Previous Versions tests (crates/cli/tests/previous_versions.rs) run a private smbd with
# vfs_shadow_copy2 (in samba-vfs-modules) and smbclient. Installed without their recommendations,
# which would add some 40 packages the tests do not use. On a machine whose services start at
# install, the package starts Debian's own smbd too; the tests never use it.
samba_test_packages=(samba samba-vfs-modules smbclient)
# Debian packages the benchmarks use (docs/PERFORMANCE.md): the loop volumes' file systems, restic,
# PostgreSQL for pgbench_impact, and borg 1.2, which only backup_vs_restic_borg runs.
bench_packages=(btrfs-progs xfsprogs restic postgresql borgbackup)

# The tests run examples/python-writer with grpcio from PyPI, in a venv of their own. Debian's
# python3 makes venvs only with python3-venv (it carries ensurepip); a python3 built elsewhere
# (pyenv, /usr/local) usually has ensurepip built in and needs no Debian package.
test_venv="${SHADOWCOPY_TEST_VENV:-/opt/shadowcopy-test-venv}"
python_requirements="$(cd "$(dirname "$0")/.." && pwd)/examples/python-writer/requirements.txt"
if $want_tests; then
    if ! command -v python3 >/dev/null 2>&1; then
        test_packages+=(python3 python3-venv)
    elif ! python3 -c 'import ensurepip, venv' >/dev/null 2>&1; then
        test_packages+=(python3-venv)
    fi
fi

if ! command -v cargo >/dev/null 2>&1; then
    echo "install-deps: cargo is missing; install Rust 1.95 (rustup) first" >&2
    exit 1
fi

packages=("${runtime_packages[@]}")
$want_tests && packages+=("${test_packages[@]}")
$want_bench && packages+=("${bench_packages[@]}")

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
lean_missing=()
if $want_tests; then
    for package in "${samba_test_packages[@]}"; do
        dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed" \
            || lean_missing+=("$package")
    done
fi
if ((${#lean_missing[@]})); then
    echo "install-deps: installing ${lean_missing[*]} (without recommended packages)"
    ((${#missing[@]})) || apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
        "${lean_missing[@]}" >/dev/null
fi
if $want_tests; then
    # The venv is current when it was made from these exact requirements: a stamp file holds them.
    stamp="$test_venv/.shadowcopy-requirements"
    if [[ -x "$test_venv/bin/python" ]] && cmp -s "$python_requirements" "$stamp" \
        && "$test_venv/bin/python" -c 'import grpc, grpc_tools.protoc' >/dev/null 2>&1; then
        echo "install-deps: python test venv $test_venv is up to date"
    else
        echo "install-deps: creating python test venv $test_venv with" \
            "$(grep -v '^#' "$python_requirements" | xargs)"
        python3 -m venv --clear "$test_venv"
        "$test_venv/bin/python" -m pip install --quiet --disable-pip-version-check \
            -r "$python_requirements"
        cp "$python_requirements" "$stamp"
    fi
fi
echo "install-deps: ready"
