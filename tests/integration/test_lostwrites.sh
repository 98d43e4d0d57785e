#!/bin/bash
# test_lostwrites.sh - the power-loss shim (tests/tools/lostwrites.c) on
# small writers (tests/tools/lostwrites_writer.c): each runs under
# LD_PRELOAD=liblostwrites.so until it has acknowledged its writes, is
# killed -9, and its directory is rolled back with `lostwrites rollback`.
#   - plain pwrite: no sync -> the file is back as it was; fdatasync after
#     each write, or an O_DSYNC descriptor -> every write kept; one
#     fdatasync in the middle -> kept up to it; LOSTWRITES_NOSYNC=1 (the
#     control) -> lost despite the syncs;
#   - kernel AIO through syscall(), O_DIRECT: without RWF_DSYNC lost, with
#     it kept, with it under the control lost;
#   - the store (LMDB): default flags (STORE_DURABLE_EACH) keep every
#     acknowledged commit and `clusterd-store check` passes; DEFERRED (what
#     parents use, with the Raft log in front) loses at most the last one;
#     NONE (MDB_NOSYNC) loses acknowledged commits;
#   - names: with LOSTWRITES_DIRS=posix a create, rename, unlink, replace
#     and mkdir are all undone unless the directories are fsynced; in the
#     default journal model the files' fsyncs commit them.
# Needs no root; every process is stopped by its PID, the directory removed.
set -u

BUILD=${BUILD:-build}
case $BUILD in /*) ;; *) BUILD=$(pwd)/$BUILD ;; esac
SHIM=$BUILD/tests/liblostwrites.so
LW=$BUILD/tests/lostwrites
WRITER=$BUILD/tests/lostwrites_writer
STORE=$BUILD/bin/clusterd-store
DIR=$(mktemp -d /tmp/cd-lostwrites-XXXXXX)
WPID=
FAILS=0
CASE=0

cleanup() {
    if [ -n "$WPID" ]; then
        kill -9 "$WPID" 2>/dev/null
        wait "$WPID" 2>/dev/null
    fi
    if [ "$FAILS" = 0 ] && [ -z "${CD_KEEP_TEST_DIR:-}" ]; then
        rm -rf "$DIR"
    else
        echo "test_lostwrites: kept $DIR"
    fi
}
trap cleanup EXIT
trap 'exit 1' INT TERM

fail() { echo "FAIL: $*"; FAILS=$((FAILS + 1)); }
ok() { echo "ok: $*"; }

# run D OUT [VAR=VALUE...] -- ARGS...: the writer under the shim on
# directory D (none: without it) until it says done, or until LINES acks
# when LINES is set; then kill -9.
run() {
    local d=$1 out=$2 i envs=()
    shift 2
    while [ "$1" != -- ]; do envs+=("$1"); shift; done
    shift
    if [ "$d" = none ]; then
        env "${envs[@]}" "$WRITER" "$@" >"$out" 2>"$out.err" &
    else
        env LD_PRELOAD="$SHIM" LOSTWRITES_DIR="$d" "${envs[@]}" "$WRITER" "$@" \
            >"$out" 2>"$out.err" &
    fi
    WPID=$!
    for ((i = 0; i < 600; i++)); do
        if [ -n "${LINES_WANTED:-}" ]; then
            [ "$(grep -c '^ack' "$out")" -ge "$LINES_WANTED" ] && break
        else
            grep -q '^done' "$out" && break
        fi
        kill -0 "$WPID" 2>/dev/null || break
        sleep 0.05
    done
    kill -9 "$WPID" 2>/dev/null
    { wait "$WPID"; } 2>/dev/null
    WPID=
    if ! grep -q '^ack' "$out"; then
        fail "writer $*: no acknowledgement ($(cat "$out.err"))"
    fi
}
rollback() {
    if ! "$LW" rollback "$1" >>"$DIR/rollback.log" 2>&1; then
        fail "rollback of $1: $(tail -3 "$DIR/rollback.log")"
    fi
}
same() { cmp -s "$1" "$2"; }

# --- plain writes --------------------------------------------------------------
mkdir "$DIR/ref" "$DIR/p"
head -c 4096 /dev/zero | tr '\0' A >"$DIR/orig"
# The reference: what 50 records over the 4 KiB file look like.
cp "$DIR/orig" "$DIR/ref/f"
run none "$DIR/ref.out" -- plain "$DIR/ref/f" 50
head -c 2500 "$DIR/ref/f" >"$DIR/half"
tail -c +2501 "$DIR/orig" >>"$DIR/half"

plain_case() { # WANT NAME [VAR=VALUE...] -- ARGS...
    local want=$1 name=$2
    shift 2
    cp "$DIR/orig" "$DIR/p/f"
    CASE=$((CASE + 1))
    run "$DIR/p" "$DIR/plain$CASE.out" "$@"
    rollback "$DIR/p"
    if same "$DIR/p/f" "$want"; then
        ok "plain: $name"
    else
        fail "plain: $name: the file is not $(basename "$want") after the rollback"
    fi
}
plain_case "$DIR/orig" "no sync: every write undone" -- plain "$DIR/p/f" 50
plain_case "$DIR/ref/f" "fdatasync after each: all kept" -- plain "$DIR/p/f" 50 --fdatasync
plain_case "$DIR/ref/f" "O_DSYNC: all kept" -- plain "$DIR/p/f" 50 --dsync
plain_case "$DIR/half" "one fdatasync after 25: kept up to it" -- plain "$DIR/p/f" 50 --sync-at 25
plain_case "$DIR/orig" "LOSTWRITES_NOSYNC with fdatasync: undone" LOSTWRITES_NOSYNC=1 -- \
    plain "$DIR/p/f" 50 --fdatasync
plain_case "$DIR/orig" "LOSTWRITES_NOSYNC with O_DSYNC: undone" LOSTWRITES_NOSYNC=1 -- \
    plain "$DIR/p/f" 50 --dsync
# A file the writer creates and never syncs is gone.
rm -f "$DIR/p/f"
run "$DIR/p" "$DIR/new.out" -- plain "$DIR/p/f" 5
rollback "$DIR/p"
if [ -e "$DIR/p/f" ]; then
    fail "plain: a created, never synced file survived"
else
    ok "plain: a created, never synced file is gone"
fi

# --- kernel AIO through syscall(), O_DIRECT ------------------------------------
mkdir "$DIR/aref" "$DIR/a"
head -c 16384 /dev/zero | tr '\0' Z >"$DIR/aorig"
cp "$DIR/aorig" "$DIR/aref/f"
run none "$DIR/aref.out" -- aio "$DIR/aref/f" 8 --dsync
if ! grep -q '^done' "$DIR/aref.out"; then
    echo "aio: skipped (O_DIRECT or AIO unsupported here: $(cat "$DIR/aref.out.err"))"
else
    aio_case() { # WANT NAME [VAR=VALUE...] -- ARGS...
        local want=$1 name=$2
        shift 2
        cp "$DIR/aorig" "$DIR/a/f"
        run "$DIR/a" "$DIR/aio.out" "$@"
        rollback "$DIR/a"
        if same "$DIR/a/f" "$want"; then
            ok "aio: $name"
        else
            fail "aio: $name: the file is not $(basename "$want") after the rollback"
        fi
    }
    aio_case "$DIR/aorig" "no RWF_DSYNC: undone" -- aio "$DIR/a/f" 8
    aio_case "$DIR/aref/f" "RWF_DSYNC: kept" -- aio "$DIR/a/f" 8 --dsync
    aio_case "$DIR/aorig" "RWF_DSYNC under LOSTWRITES_NOSYNC: undone" LOSTWRITES_NOSYNC=1 -- \
        aio "$DIR/a/f" 8 --dsync
fi

# --- the store (LMDB) --------------------------------------------------------------
# store_case MODE [VAR=VALUE...]: a store holding /pre, then a writer under
# the shim, killed after 300 acknowledged commits.  Sets ACKED (the last
# acknowledged number), MISSING (acknowledged keys absent), CHECK (the
# exit status of clusterd-store check) and LOG_BYTES (the undo log's size
# at the kill).
store_case() {
    local mode=$1
    shift
    rm -rf "$DIR/s"
    mkdir "$DIR/s"
    "$STORE" -d "$DIR/s/state.mdb" put /pre x >/dev/null || fail "store: put /pre"
    LINES_WANTED=300 run "$DIR/s" "$DIR/store-$mode.out" "$@" -- \
        store "$DIR/s/state.mdb" "$mode" 1000000
    LOG_BYTES=$(stat -c %s "$DIR/s.lostwrites/undo.log" 2>/dev/null || echo 0)
    rollback "$DIR/s"
    ACKED=$(grep '^ack' "$DIR/store-$mode.out" | tail -1 | cut -d' ' -f2)
    "$STORE" -d "$DIR/s/state.mdb" check >"$DIR/check-$mode.log" 2>&1
    CHECK=$?
    MISSING=$("$STORE" -d "$DIR/s/state.mdb" range /k/ 10000000 2>/dev/null |
        awk -v last="$ACKED" '$1 ~ /^\/k\// { have[substr($1, 4) + 0] = 1 }
            END { m = 0; for (i = 0; i <= last; i++) if (!(i in have)) { m++; gone = i }
                  print m, (m ? gone : -1) }')
    LOST_LAST=${MISSING#* }
    MISSING=${MISSING% *}
    PRE=$("$STORE" -d "$DIR/s/state.mdb" get /pre 2>/dev/null)
}
store_case each
if [ "$MISSING" = 0 ] && [ "$CHECK" = 0 ] && [ "$PRE" = x ]; then
    ok "store, default flags: all $((ACKED + 1)) acknowledged commits kept, check passes"
else
    fail "store, default flags: $MISSING of $((ACKED + 1)) acknowledged commits lost, check $CHECK ($(head -3 "$DIR/check-each.log"))"
fi
# The same with the log rewritten many times (a 64 KiB limit instead of 32
# MiB): the rewritten log undoes the same.
store_case each LOSTWRITES_LOG_LIMIT=65536
if [ "$MISSING" = 0 ] && [ "$CHECK" = 0 ] && [ "$PRE" = x ] &&
    [ "$LOG_BYTES" -lt 200000 ] && [ "$LOG_BYTES" -gt 0 ]; then
    ok "store, default flags, log compacted ($LOG_BYTES bytes at the kill): all $((ACKED + 1)) kept"
else
    fail "store, compacted log: $MISSING of $((ACKED + 1)) lost, check $CHECK, log $LOG_BYTES bytes"
fi
store_case none LOSTWRITES_LOG_LIMIT=65536
if [ "$MISSING" = "$((ACKED + 1))" ] && [ "$PRE" = x ]; then
    ok "store, MDB_NOSYNC, log compacted: all $MISSING acknowledged commits lost, /pre kept"
else
    fail "store, MDB_NOSYNC, compacted log: lost $MISSING of $((ACKED + 1)); /pre: '$PRE'"
fi
store_case deferred
if [ "$CHECK" = 0 ] && [ "$PRE" = x ] &&
    { [ "$MISSING" = 0 ] || { [ "$MISSING" = 1 ] && [ "$LOST_LAST" = "$ACKED" ]; }; }; then
    ok "store, DEFERRED: at most the last acknowledged commit lost ($MISSING of $((ACKED + 1))), check passes"
else
    fail "store, DEFERRED: $MISSING of $((ACKED + 1)) lost (the last lost: $LOST_LAST), check $CHECK"
fi
store_case none
if [ "$MISSING" -gt 0 ] && [ "$PRE" = x ]; then
    ok "store, MDB_NOSYNC (the control): $MISSING of $((ACKED + 1)) acknowledged commits lost"
else
    fail "store, MDB_NOSYNC: lost $MISSING of $((ACKED + 1)) acknowledged commits (want > 0; /pre: '$PRE')"
fi

# --- names ---------------------------------------------------------------------------
names_case() { # NAME WANT(old|new) [VAR=VALUE...] -- [--fsync-dir]
    local name=$1 want=$2 n=$DIR/n got
    shift 2
    rm -rf "$n"
    mkdir "$n"
    echo old >"$n/old"
    echo gone >"$n/gone"
    echo victim >"$n/victim"
    run "$n" "$DIR/names.out" "$@" names "$n" ${EXTRA:-}
    rollback "$n"
    got=$(cd "$n" && for f in $(find . -mindepth 1 | sort); do
        if [ -d "$f" ]; then echo "$f/"; else echo "$f=$(cat "$f")"; fi
    done | tr '\n' ' ')
    local old_state="./gone=gone ./old=old ./victim=victim "
    local new_state="./new=new ./renamed=old ./sub/ ./sub/f=f ./victim=replacement "
    local expect=$old_state
    [ "$want" = new ] && expect=$new_state
    if [ "$got" = "$expect" ]; then
        ok "names: $name"
    else
        fail "names: $name: got '$got', want '$expect'"
    fi
}
names_case "posix, directories not synced: all undone" old LOSTWRITES_DIRS=posix --
EXTRA=--fsync-dir names_case "posix, directories synced: all kept" new LOSTWRITES_DIRS=posix --
names_case "journal, files synced: all kept" new --
names_case "journal under LOSTWRITES_NOSYNC: all undone" old LOSTWRITES_NOSYNC=1 --

# --- usage and a live process ---------------------------------------------------------
"$LW" frobnicate "$DIR" >/dev/null 2>&1
[ $? = 2 ] || fail "an unknown command was not refused as bad usage"
mkdir "$DIR/live"
LD_PRELOAD="$SHIM" LOSTWRITES_DIR="$DIR/live" "$WRITER" plain "$DIR/live/f" 1 >"$DIR/live.out" 2>&1 &
WPID=$!
for ((i = 0; i < 100; i++)); do grep -q '^done' "$DIR/live.out" && break; sleep 0.05; done
if "$LW" rollback "$DIR/live" >/dev/null 2>&1; then
    fail "a rollback ran while the process under the shim was alive"
else
    ok "a rollback refuses to run under a live process"
fi
kill -9 "$WPID"
{ wait "$WPID"; } 2>/dev/null
WPID=

if [ "$FAILS" = 0 ]; then
    echo "test_lostwrites: all passed"
else
    echo "test_lostwrites: $FAILS failed"
fi
[ "$FAILS" = 0 ]
