#!/bin/bash
# make demo - a narrated tour of what clusterd does so far: the replicated
# store every node keeps, read by local programs with no daemon in the way.
# (The parent group, children and the VIP join this tour as they land.)
set -euo pipefail
BUILD=${1:-build}
BIN=$BUILD/bin
DIR=$(mktemp -d /tmp/clusterd-demo-XXXXXX)
DB=$DIR/state.mdb
trap 'rm -rf "$DIR"' EXIT

say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
run() { printf '$ %s\n' "$*"; "$@"; }

say "A parent's store is one LMDB file: $DB"
run $BIN/clusterd-store -d "$DB" put /policies/antispam/level high
run $BIN/clusterd-store -d "$DB" put /policies/antivirus/engine on
run $BIN/clusterd-store -d "$DB" put /cluster/children/1/hostname mx1.example
run $BIN/clusterd-store -d "$DB" put /cluster/trusted/192.0.2.10 mx1
run $BIN/clusterd-store -d "$DB" put /policies/antispam/level medium

say "Every key has create/mod revisions and a version, like etcd"
run $BIN/clusterd-store -d "$DB" range /policies/

say "Every change is kept in order: this is what children replay"
run $BIN/clusterd-store -d "$DB" changes 0

say "A local program reads through libclusterd: no IPC, no daemon needed"
run $BIN/clusterd-read -d "$DB" /policies/antispam/level
run $BIN/clusterd-read -d "$DB" --prefix /cluster/
run $BIN/clusterd-read -d "$DB" --status

say "Deleting a whole subtree is one revision"
run $BIN/clusterd-store -d "$DB" del --prefix /cluster/
run $BIN/clusterd-store -d "$DB" changes 5

say "Backup: a compact, checksummed snapshot (the same bytes seed a child)"
run $BIN/clusterd-store -d "$DB" snapshot "$DIR/backup.snap"
run $BIN/clusterd-store verify "$DIR/backup.snap"

say "A damaged backup is refused, and the store it was aimed at is untouched"
cp "$DIR/backup.snap" "$DIR/damaged.snap"
printf 'X' | dd of="$DIR/damaged.snap" bs=1 seek=5000 conv=notrunc status=none
run $BIN/clusterd-store -d "$DIR/other.mdb" put /only/here yes
if $BIN/clusterd-store -d "$DIR/other.mdb" restore "$DIR/damaged.snap"; then
    echo "demo: a damaged snapshot was accepted" >&2; exit 1
fi
run $BIN/clusterd-store -d "$DIR/other.mdb" get /only/here

say "Restore the good backup into that store; then check every invariant"
run $BIN/clusterd-store -d "$DIR/other.mdb" restore "$DIR/backup.snap"
run $BIN/clusterd-store -d "$DIR/other.mdb" range /
run $BIN/clusterd-store -d "$DIR/other.mdb" check

say "Done. Next: 'make check' runs every test."
