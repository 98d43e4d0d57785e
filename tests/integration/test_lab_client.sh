#!/bin/bash
# test_lab_client.sh - the fault lab's workload client and checker, proven
# as a pair on a real cluster, without namespaces (loopback, no root).
#
# Three parents (profile fast), the client (4 processes) for 10 s through
# all three API endpoints, kill -9 of the leader after 4 s (its restart 2 s
# later), a monitor reading one parent's store through libclusterd the
# whole time, then the final read and the checker, which must pass:
# linearizable, every acknowledged add in the final read, revisions
# monotonic, the kill followed by a successful operation within 10 s.
# Then the negative controls, which the checker must fail: the same
# history with one stale read added, and the final read without one
# acknowledged add.
#
# Skipped without build/lab-checker (no Go toolchain).  Every process is
# stopped by its PID (tests/bench/common.sh); the work directory is kept
# when a check fails.
set -u
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
BUILD=${BUILD:-build}
case $BUILD in /*) ;; *) BUILD=$ROOT/$BUILD ;; esac
CHECKER=$BUILD/lab-checker
LAB_CLIENT=$BUILD/tests/lab_client
if [ ! -x "$CHECKER" ]; then
    echo "test_lab_client: skipped (no $CHECKER: no Go toolchain)"
    exit 0
fi

WORK=$(mktemp -d /tmp/cd-labclient-XXXXXX)
LOGS=$WORK/logs
mkdir -p "$LOGS"
CLUSTERD=$BUILD/bin/clusterd
BENCH_CLUSTER=$BUILD/bin/bench_cluster
BENCH_TAG=test_lab_client
BENCH_KEEP=1
# shellcheck source=../bench/common.sh
source "$ROOT/tests/bench/common.sh"
FAILS=0
finish() {
    cleanup
    if [ "$FAILS" = 0 ] && [ -z "${CD_KEEP_TEST_DIR:-}" ]; then
        rm -rf "$WORK"
    else
        echo "test_lab_client: kept $WORK"
    fi
}
trap finish EXIT
fail() {
    echo "FAIL: $*"
    FAILS=$((FAILS + 1))
}
ok() { echo "ok: $*"; }
now() { "$LAB_CLIENT" --now; }

H=$WORK/history.jsonl
F=$WORK/final.jsonl
E=$WORK/events.jsonl
M=$WORK/monitor.jsonl
: >"$E"

cd_up fast
ok "3 parents: $CD_EPS"

start lab_client "$LOGS/lab_client.log" "$LAB_CLIENT" --endpoints "$CD_EPS" \
    --out "$H" --seed 7 --threads 4 --duration-s 10 --keys 3 --rotate 300 \
    --timeout-ms 300
CLIENT=$STARTED
start monitor "$LOGS/monitor.log" "$LAB_CLIENT" --child-monitor \
    "$CD_DIR/n1/state.mdb" --out "$M" --duration-s 11 --interval-ms 5
MONITOR=$STARTED

sleep 4
LEADER=-1
for i in 0 1 2; do
    if "$BUILD/bin/clusterctl" --endpoints "127.0.0.1:${CD_API[i]}" -o json \
        status 2>/dev/null | grep -q '"state":"leader"'; then
        LEADER=$i
    fi
done
if [ "$LEADER" = -1 ]; then
    fail "no leader found to kill"
else
    echo "{\"t\":$(now),\"event\":\"kill-leader\",\"node\":$((LEADER + 1))}" >>"$E"
    kill -9 "${CD_PIDS[LEADER]}"
    forget "${CD_PIDS[LEADER]}"
    ok "killed the leader n$((LEADER + 1))"
    sleep 2
    echo "{\"t\":$(now),\"event\":\"restart\",\"node\":$((LEADER + 1))}" >>"$E"
    cd_node "$LEADER"
fi

# The client and the monitor end by themselves (bounded by --duration-s).
for pid in "$CLIENT" "$MONITOR"; do
    for ((i = 0; i < 300; i++)); do
        ours "$pid" || break
        sleep 0.1
    done
    ours "$pid" && fail "${LIVE[$pid]} still running 30 s after its end"
done
cat "$LOGS/lab_client.log" "$LOGS/monitor.log"

if "$LAB_CLIENT" --final-read "$F" --endpoints "$CD_EPS" --timeout-ms 2000 \
    --final-timeout-s 30 2>>"$LOGS/final.log"; then
    ok "final read: $(wc -l <"$F") keys"
else
    fail "final read: $(cat "$LOGS/final.log")"
fi

n_ok=$(grep -c '"status":"ok"' "$H")
n_other=$(grep -c -v '"status":"ok"' "$H")
echo "history: $n_ok ok, $n_other fail or info"
[ "$n_ok" -gt 100 ] || fail "only $n_ok ok operations in 10 s"
for op in get put cas add; do
    grep -q "\"op\":\"$op\".*\"status\":\"ok\"" "$H" || fail "no ok $op in the history"
done
grep -q '"op":"cas".*"ok":true' "$H" || fail "no cas ever held"

# The real run: every check passes.
"$CHECKER" --history "$H" --final "$F" --child "$M" --events "$E" \
    --html "$WORK" --recovery-bound 10s >"$WORK/check.out" 2>&1
rc=$?
cat "$WORK/check.out"
if [ $rc = 0 ] && grep -q '^lab-checker: 4 passed, 0 failed' "$WORK/check.out"; then
    ok "checker passes the real history"
else
    fail "checker on the real history: exit $rc"
fi
grep -q '^figure lab_recovery_kill_leader_max_ms ' "$WORK/check.out" ||
    fail "no recovery figure for the leader kill"

# Negative control 1: a stale read.  A key with two ok puts; after every
# operation, a read returns the first of them, although the second was
# acknowledged before the read began.
KEY=$(grep '"op":"put"' "$H" | grep '"status":"ok"' |
    sed -n 's/.*"key":"\([^"]*\)".*/\1/p' | sort | uniq -d | head -1)
if [ -z "$KEY" ]; then
    fail "no key with two ok puts to build a stale read on"
else
    OLD=$(grep "\"op\":\"put\",\"key\":\"$KEY\"" "$H" | grep '"status":"ok"' |
        head -1 | sed -n 's/.*"value":"\([^"]*\)".*/\1/p')
    LAST=$(sed -n 's/.*"return":\([0-9]*\).*/\1/p' "$H" | sort -n | tail -1)
    cp "$H" "$WORK/stale.jsonl"
    echo "{\"process\":999999,\"op\":\"get\",\"key\":\"$KEY\",\"result\":\"$OLD\",\"call\":$((LAST + 1000)),\"return\":$((LAST + 2000)),\"status\":\"ok\"}" >>"$WORK/stale.jsonl"
    "$CHECKER" --history "$WORK/stale.jsonl" --html "$WORK/stale-html" \
        >"$WORK/stale.out" 2>&1
    rc=$?
    cat "$WORK/stale.out"
    if [ $rc = 1 ] && grep -q "^  key $KEY is not linearizable: timeline in " "$WORK/stale.out" &&
        ls "$WORK"/stale-html/lin*.html >/dev/null 2>&1; then
        ok "checker fails a stale read of $KEY (value $OLD), with a timeline"
    else
        fail "checker did not fail the stale read of $KEY (exit $rc)"
    fi
fi

# Negative control 2: an acknowledged add lost from the final read.
ADD=$(grep '"op":"add"' "$H" | grep '"status":"ok"' | head -1 |
    sed -n 's/.*"key":"\([^"]*\)".*/\1/p')
grep -v "\"key\":\"$ADD\"" "$F" >"$WORK/lost.jsonl"
"$CHECKER" --history "$H" --final "$WORK/lost.jsonl" >"$WORK/lost.out" 2>&1
rc=$?
grep -E '^(final-read|  /lab/set)' "$WORK/lost.out"
if [ $rc = 1 ] && grep -q '^final-read: FAIL' "$WORK/lost.out"; then
    ok "checker fails a final read without the acknowledged add $ADD"
else
    fail "checker did not fail a lost acknowledged add (exit $rc)"
fi

cd_down
server_logs
echo "test_lab_client: $FAILS failures"
[ "$FAILS" = 0 ]
