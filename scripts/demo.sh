#!/usr/bin/env bash
# Installs what shadowcopy needs, builds it, and shows the foundation at work on example documents.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/install-deps.sh
cargo build --release --quiet -p shadowcopy-cli
sc=target/release/shadowcopy
fixtures=crates/metadata/tests/fixtures

step() { printf '\n\033[1m$ %s\033[0m\n' "$*"; }

step shadowcopy document validate "$fixtures/full.wmd.json" "$fixtures/full.bcd.json"
"$sc" document validate "$fixtures/full.wmd.json" "$fixtures/full.bcd.json"

broken=$(mktemp --suffix=.wmd.json)
trap 'rm -f "$broken"' EXIT
sed -e 's/"clusters\\\\15"/"clusters\\\\\\\\15"/' -e 's/"STOP_RESTORE_START"/"UNDEFINED"/' \
    "$fixtures/full.wmd.json" >"$broken"
step shadowcopy document validate broken.wmd.json "  # an empty logical-path segment and an UNDEFINED restore method"
"$sc" document validate "$broken" || echo "(exit status $?: the document was refused)"

step shadowcopy select --writer mywriter.wmd.json 'MyWriter:writerData' 'MyWriter:Security'
"$sc" select --writer "$fixtures/mywriter.wmd.json" 'MyWriter:writerData' 'MyWriter:Security'

step shadowcopy select --writer mywriter.wmd.json 'MyWriter:writerData' 'MyWriter:writerData\\Usage'
"$sc" select --writer "$fixtures/mywriter.wmd.json" 'MyWriter:writerData' 'MyWriter:writerData\Usage' \
    || echo "(exit status $?: the selection was refused)"

step shadowcopy codes VSS_E_SNAPSHOT_SET_IN_PROGRESS
"$sc" codes VSS_E_SNAPSHOT_SET_IN_PROGRESS
