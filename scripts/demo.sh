#!/usr/bin/env bash
# The main job: an application-consistent backup of a live database into a restic repository, then
# a restore, with the coordinator running inside the `shadowcopy` command (embedded mode: no
# daemon to install). Run as root on a fresh Debian 12 machine:
#
#   scripts/demo.sh
#
# It installs what it needs, builds shadowcopy, and then:
#  1. finds a volume that can be shadow-copied: SHADOWCOPY_DEMO_VOLUME (a btrfs subvolume's mount
#     point or a directory on btrfs or reflink xfs), or else makes a btrfs file system on a loop
#     device of its own and says so;
#  2. starts an application on it: an SQLite database that a workload keeps changing, moving money
#     between accounts (the total never changes), with shadowcopy's SQLite writer declared for it;
#  3. backs the database up while the workload runs: the writer holds the database's write lock
#     while the volume is shadow-copied, so the copy is one committed state;
#  4. shows the backup as shadowcopy and as restic see it;
#  5. destroys the database and restores it: the writer checks it with `PRAGMA integrity_check`,
#     and the demo checks that the money adds up.
# Everything it made is removed at the end, also when a step fails.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$(id -u)" -ne 0 ]; then
    echo "demo: run as root: shadow copies need a snapshot-capable volume, and writers freeze applications" >&2
    exit 1
fi
scripts/install-deps.sh
# What the demo itself uses: mkfs.btrfs for its loop-backed volume, Python for the application, and
# restic to show that restic reads what shadowcopy wrote.
need=()
command -v mkfs.btrfs >/dev/null 2>&1 || need+=(btrfs-progs)
command -v python3 >/dev/null 2>&1 || need+=(python3)
command -v restic >/dev/null 2>&1 || need+=(restic)
if ((${#need[@]})); then
    echo "demo: installing ${need[*]}"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi
cargo build --release --quiet -p shadowcopy-cli
sc="$PWD/target/release/shadowcopy"

step() { printf '\n\033[1m$ %s\033[0m\n' "$*"; }

work=$(mktemp -d /var/tmp/shadowcopy-demo.XXXXXX)
workload_pid=
made_volume=
cleanup() {
    [ -n "$workload_pid" ] && kill "$workload_pid" 2>/dev/null && wait "$workload_pid" 2>/dev/null
    if [ -n "$made_volume" ]; then
        umount "$work/volume" 2>/dev/null || umount -l "$work/volume" 2>/dev/null || true
    fi
    rm -rf "$work"
    [ -n "${data:-}" ] && [ -z "$made_volume" ] && rm -rf "$data"
    return 0
}
trap cleanup EXIT

# 1. The volume.
if [ -n "${SHADOWCOPY_DEMO_VOLUME:-}" ]; then
    volume="$SHADOWCOPY_DEMO_VOLUME"
    echo "demo: using $volume (SHADOWCOPY_DEMO_VOLUME)"
else
    capable=$(findmnt -rn -o TARGET,FSTYPE | awk '$2 == "btrfs" || $2 == "xfs" {print $1}' | head -n 3 | xargs)
    if [ -n "$capable" ]; then
        echo "demo: this machine has file systems that can be shadow-copied ($capable), but the demo"
        echo "      writes into none of them unless SHADOWCOPY_DEMO_VOLUME names one;"
    else
        echo "demo: this machine has no file system that can be shadow-copied (btrfs, or xfs with"
        echo "      reflink; $(findmnt -rn -o FSTYPE --target /var/tmp) holds /var/tmp);"
    fi
    echo "      it makes a 512 MiB btrfs file system on a loop device ($work/volume.img) instead"
    truncate -s 512M "$work/volume.img"
    mkfs.btrfs -q "$work/volume.img" 2>/dev/null
    mkdir "$work/volume"
    mount -o loop "$work/volume.img" "$work/volume"
    made_volume=yes
    volume="$work/volume"
fi
data="$volume/shadowcopy-demo-app"
mkdir -p "$data"

# 2. The application and its writer.
db="$data/bank.db"
python3 - "$db" <<'EOF'
import sqlite3, sys
db = sqlite3.connect(sys.argv[1])
db.execute("PRAGMA journal_mode=WAL")
db.execute("CREATE TABLE accounts (id INTEGER PRIMARY KEY, balance INTEGER NOT NULL)")
db.executemany("INSERT INTO accounts VALUES (?, 1000)", [(i,) for i in range(1000)])
db.commit()
EOF
cat >"$work/workload.py" <<'EOF'
import random, sqlite3, sys, time
db = sqlite3.connect(sys.argv[1], timeout=30)
while True:
    a, b = random.sample(range(1000), 2)
    amount = random.randint(1, 50)
    with db:
        db.execute("UPDATE accounts SET balance = balance - ? WHERE id = ?", (amount, a))
        db.execute("UPDATE accounts SET balance = balance + ? WHERE id = ?", (amount, b))
    time.sleep(0.001)
EOF
python3 "$work/workload.py" "$db" &
workload_pid=$!
mkdir -p "$work/writers.d"
cat >"$work/writers.d/bank.toml" <<EOF
kind = "sqlite"
name = "bank"

[[sqlite.databases]]
path = "$db"
component = "accounts"
EOF
cat >"$work/shadowcopyd.toml" <<EOF
[service]
state_dir = "$work/state"
writers_dir = "$work/writers.d"
EOF
# Embedded mode is what runs when no shadowcopyd answers; with one running, ask for it by name.
embedded=(--config "$work/shadowcopyd.toml")
[ -S /run/shadowcopy/shadowcopyd.sock ] && embedded+=(--embedded)
export RESTIC_PASSWORD="demo password"
repo="$work/repo"

step shadowcopy backup --repo "$repo" --component bank:accounts
"$sc" backup --repo "$repo" --component bank:accounts "${embedded[@]}"
sleep 1
step shadowcopy backup --repo "$repo" --component bank:accounts --type incremental
"$sc" backup --repo "$repo" --component bank:accounts --type incremental "${embedded[@]}"

# 4. What is in the repository.
step shadowcopy backups list --repo "$repo"
"$sc" backups list --repo "$repo"
last=$("$sc" --json backups list --repo "$repo" | python3 -c 'import json,sys; print(json.load(sys.stdin)[-1]["backup_id"])')
step shadowcopy backups show --repo "$repo" "${last:0:12}"
"$sc" backups show --repo "$repo" "${last:0:12}"
if command -v restic >/dev/null 2>&1; then
    step restic -r "$repo" snapshots
    restic -r "$repo" snapshots
fi

# 5. The disaster and the restore: the application is stopped first (SQLite has no service the
#    writer could stop for it, so its restore method is RESTORE_IF_CAN_REPLACE, RSV-2).
kill "$workload_pid"; wait "$workload_pid" 2>/dev/null || true; workload_pid=
step "echo garbage > bank.db   # the database is destroyed"
echo "garbage" >"$db"
rm -f "$db-wal" "$db-shm"
step shadowcopy restore --repo "$repo" --backup "${last:0:12}"
"$sc" restore --repo "$repo" --backup "${last:0:12}" "${embedded[@]}"
step "sqlite3 bank.db 'PRAGMA integrity_check; SELECT count(*), sum(balance) FROM accounts'"
python3 - "$db" <<'EOF'
import sqlite3, sys
db = sqlite3.connect(sys.argv[1])
print(db.execute("PRAGMA integrity_check").fetchone()[0])
count, total = db.execute("SELECT count(*), sum(balance) FROM accounts").fetchone()
print(f"{count} accounts holding {total}")
assert (count, total) == (1000, 1000 * 1000), "the restored bank does not add up"
EOF
echo
echo "demo: the restored database is intact and every transfer in it is whole."
