#!/usr/bin/env bash
# Installs what shadowcopy needs, builds it, shows the documents and selection rules at work on
# example documents, then makes, exposes and deletes a real shadow copy of a btrfs volume on a loop
# device it creates (as root) through a shadowcopyd of its own.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/install-deps.sh
cargo build --release --quiet -p shadowcopy-cli -p shadowcopy-daemon
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

# A shadow copy of a real volume: a btrfs filesystem on a loop device made for the demo, a daemon
# with its own socket and state, and everything removed again at the end.
if [ "$(id -u)" -ne 0 ]; then
    echo "(run as root to see a real shadow copy: it needs a loop device and mount)"
    exit 0
fi
if ! command -v mkfs.btrfs >/dev/null 2>&1; then
    echo "demo: installing btrfs-progs for mkfs.btrfs"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq btrfs-progs >/dev/null
fi
work=$(mktemp -d /tmp/shadowcopy-demo.XXXXXX)
daemon_pid=
cleanup() {
    [ -n "$daemon_pid" ] && kill "$daemon_pid" 2>/dev/null && wait "$daemon_pid" 2>/dev/null
    for m in $(findmnt -rn -o TARGET | grep "^$work" | sort -r); do umount "$m" 2>/dev/null || umount -l "$m"; done
    rm -rf "$work" "$broken"
}
trap cleanup EXIT
truncate -s 256M "$work/volume.img"
mkfs.btrfs -q "$work/volume.img"
mkdir "$work/volume"
mount -o loop "$work/volume.img" "$work/volume"
echo "written before the shadow copy" >"$work/volume/greeting.txt"
sock="$work/shadowcopyd.sock"
target/release/shadowcopyd --config "$work/none.toml" --socket "$sock" \
    --state-dir "$work/state" --expose-dir "$work/exposed" 2>"$work/shadowcopyd.log" &
daemon_pid=$!
for _ in $(seq 100); do [ -S "$sock" ] && break; sleep 0.1; done
export SHADOWCOPY_SOCKET="$sock"

step shadowcopy providers
"$sc" providers
step shadowcopy create --volume "$work/volume"
created=$("$sc" --json create --volume "$work/volume")
echo "$created"
id=$(printf '%s' "$created" | python3 -c 'import json,sys; print(json.load(sys.stdin)["snapshots"][0]["snapshot_id"])')
echo "written after the shadow copy" >"$work/volume/greeting.txt"
step shadowcopy expose "$id"
exposed=$("$sc" --json expose "$id" | python3 -c 'import json,sys; print(json.load(sys.stdin)["exposed_name"])')
echo "exposed read-only at $exposed"
step cat volume/greeting.txt exposed/greeting.txt
cat "$work/volume/greeting.txt" "$exposed/greeting.txt"
step shadowcopy list
"$sc" list
step shadowcopy unexpose "$id" '&&' shadowcopy delete --snapshot "$id"
"$sc" unexpose "$id"
"$sc" delete --snapshot "$id"
