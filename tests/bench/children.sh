#!/bin/bash
# children.sh - the children's figures (make bench-children): how fast a
# change reaches every child, how fast a child far behind catches up, and
# how fast programs on a child read its cache, next to etcd 3.4's
# serializable reads measured in the same run.
#
#   BUILD=build tests/bench/children.sh
#
# Knobs (environment): BENCH_FANOUT_PUTS (50 puts per fan-out run),
# BENCH_READ_SECONDS (5: each cache read run; etcd's runs are sized to
# about 3 s from a pilot), BENCH_KEEP=1 keeps the data directories.
#
# What runs, all on 127.0.0.1, every server started here and stopped by its
# PID (the EXIT trap of common.sh stops whatever is still running, also on
# failure); each tool run is bounded by timeout(1), so the whole run stays
# within a few minutes even when something hangs:
#   - a 3-parent clusterd, profile fast, --set max_connections=4096 (each
#     parent serves a third of the children plus clients);
#   - build/bin/bench_children (tests/bench/bench_children.c):
#       fanout: 100, then 1,000 children simulated in one process, each a
#         real child connection (CHILD_JOIN with the first parent's join
#         token, then HELLO and the pushed CHANGES frames, spread over the
#         three parents round-robin); BENCH_FANOUT_PUTS puts 20 ms apart on
#         the leader; a sample is the time from sending a put to the
#         child's read of its event, one per child and put; every child
#         must see every put;
#       catchup: one child (the real follower library, agents/follower.h)
#         makes its cache, stops; 100,000 changes (1,000 transactions of
#         100 puts, ~100-byte values) are written; the time from
#         follower_run() until the cache has the head revision;
#   - the parents are then stopped, and on a quiet machine:
#       reads: point reads of random keys of that cache on one thread
#         through libclusterd: clusterd_get (the plain API: a view and a
#         copy per read; the figure) and clusterd_view_get (zero-copy, one
#         view per 1,000 reads);
#       a single-node etcd 3.4 (Debian's etcd-server) with 5,000 keys of
#         the same sizes (etcd's "benchmark put"), one more key read with
#         "benchmark range KEY --consistency s" (serializable: served by
#         the member without consensus), with 1 client on 1 connection
#         and with 64 clients on 8 connections; the better rate is the
#         figure.  etcd's tools are built from the module proxy as for
#         bench.sh (tests/bench/etcd-benchmark).
#
# Targets (reported, never enforced): 1,000 children p99 < 200 ms; 100k
# changes caught up in < 1 s; cache reads >= 100x etcd's serializable
# reads.  Every figure is printed as "figure NAME VALUE UNIT" at the end.
# The exit status is 1 when a stage failed (not for a missed target).
set -u

BUILD=${BUILD:-build}
FANOUT_PUTS=${BENCH_FANOUT_PUTS:-50}
READ_SECONDS=${BENCH_READ_SECONDS:-5}
CATCHUP_CHANGES=100000
ET_KEYS=5000
KEY_SIZE=20 # about the length of /bench/catchup/<n>
VALUE_SIZE=100

ROOT=$(pwd)
case $BUILD in /*) ABS_BUILD=$BUILD ;; *) ABS_BUILD=$ROOT/$BUILD ;; esac
CLUSTERD=$ABS_BUILD/bin/clusterd
BENCH_CLUSTER=$ABS_BUILD/bin/bench_cluster
BENCH_CHILDREN=$ABS_BUILD/bin/bench_children
ETCD_TOOLS=$ABS_BUILD/etcd-bench
WORK=$ABS_BUILD/bench-children
LOGS=$WORK/logs
RESULTS=$WORK/results
BENCH_TAG=bench-children

# Processes, ports, statistics, figures, clusterd and etcd start-up.
. "$(dirname "${BASH_SOURCE[0]}")/common.sh"

FAILED=0
# stage NAME TIMEOUT_S CMD...: run a tool, its stdout in RESULTS/NAME.txt,
# its stderr in LOGS/NAME.log; on failure say so, show the log's end, and
# mark the run failed.
stage() {
    local name=$1 t=$2
    shift 2
    local rc=0
    timeout "$t" "$@" >"$RESULTS/$name.txt" 2>"$LOGS/$name.log" || rc=$?
    if [ "$rc" != 0 ]; then
        warn "$name failed (exit $rc$([ "$rc" = 124 ] && echo ": timed out"); see $LOGS/$name.log):"
        tail -n 5 "$LOGS/$name.log" | sed 's/^/    /' >&2
        FAILED=1
        return 1
    fi
}

# line NAME PREFIX: the first line of RESULTS/NAME.txt starting with PREFIX.
line() { grep -m1 "^$2 " "$RESULTS/$1.txt" 2>/dev/null; }

# --- etcd: serializable reads ---------------------------------------------
# et_reads CLIENTS CONNS TOTAL: "rate errors" of one run, or fails.
et_reads() {
    local f=$RESULTS/etcd-range-$1-$3.txt rate errors
    timeout 120 "$ETCD_TOOLS/benchmark" --endpoints "$ET_EPS" --clients "$1" \
        --conns "$2" --precise range "$READ_KEY" --consistency s --total "$3" \
        >"$f" 2>>"$LOGS/etcd-benchmark.log" || {
        warn "etcd benchmark range failed (see $f)"
        return 1
    }
    rate=$(grep -a 'Requests/sec' "$f" | awk '{ printf "%.1f", $2 }')
    errors=$(sed -n '/Error distribution/,$p' "$f" | awk '/\[[0-9]+\]/ { gsub(/[][]/, "", $1); s += $1 } END { print s + 0 }')
    [ -n "$rate" ] || {
        warn "no result in $f"
        return 1
    }
    echo "$rate $errors"
}

# et_measure CLIENTS CONNS PILOT: a pilot run, then one of about 3 s;
# "rate errors" of the latter.
et_measure() {
    local r total
    r=$(et_reads "$1" "$2" "$3") || return 1
    total=$(awk -v r="${r%% *}" -v p="$3" 'BEGIN { t = int(r * 3); if (t < p) t = p; if (t > 2000000) t = 2000000; print t }')
    et_reads "$1" "$2" "$total"
}

# === the run ==============================================================
for b in "$CLUSTERD" "$BENCH_CLUSTER" "$BENCH_CHILDREN"; do
    [ -x "$b" ] || die "build $b first"
done
rm -rf "$WORK"
mkdir -p "$LOGS" "$RESULTS" "$WORK/data"
T_START=$(date +%s)

ETCD_SKIP=""
say "== children benchmark: 3 clusterd parents (profile fast), one process simulating the children, loopback, $(nproc) cores"
build_etcd_tools || warn "etcd side skipped: $ETCD_SKIP"

CD_EXTRA=(--set max_connections=4096)
cd_up fast
TOKEN=$(cat "$CD_DIR/n1/join-token")
say "clusterd up: $CD_EPS"

for n in 100 1000; do
    say "-- fan-out: $n children, $FANOUT_PUTS puts"
    stage "fanout-$n" $((90 + n / 10)) "$BENCH_CHILDREN" fanout --endpoints "$CD_EPS" \
        --token "$TOKEN" --children "$n" --puts "$FANOUT_PUTS" --timeout-s $((60 + n / 10))
    sed 's/^/   /' "$RESULTS/fanout-$n.txt"
done

say "-- catch-up: one child $CATCHUP_CHANGES changes behind"
CACHE_DIR=$WORK/data/child
stage catchup 240 "$BENCH_CHILDREN" catchup --endpoints "$CD_EPS" --token "$TOKEN" \
    --changes $CATCHUP_CHANGES --per-txn 100 --value-size $VALUE_SIZE --dir "$CACHE_DIR" \
    --timeout-s 60
sed 's/^/   /' "$RESULTS/catchup.txt"
cd_down

say "-- cache reads, one thread, ${READ_SECONDS} s per API (parents stopped)"
if [ -e "$CACHE_DIR/cache.mdb" ]; then
    stage reads $((READ_SECONDS * 2 + 60)) "$BENCH_CHILDREN" reads --cache "$CACHE_DIR/cache.mdb" \
        --seconds "$READ_SECONDS" --keys-prefix /bench/catchup/
    sed 's/^/   /' "$RESULTS/reads.txt"
else
    warn "no cache to read (the catch-up failed)"
    FAILED=1
fi

ET1="" ET64=""
READ_KEY=/bench/catchup/4242
if [ -z "$ETCD_SKIP" ]; then
    say "-- etcd serializable reads: $ET_KEYS keys, one read again and again"
    et_up 1
    if timeout 120 "$ETCD_TOOLS/benchmark" --endpoints "$ET_EPS" --clients 16 --conns 4 \
        put --key-size $KEY_SIZE --val-size $VALUE_SIZE --key-space-size $ET_KEYS \
        --sequential-keys --total $ET_KEYS >"$RESULTS/etcd-put.txt" 2>>"$LOGS/etcd-benchmark.log" &&
        ETCDCTL_API=3 timeout 30 etcdctl --endpoints "$ET_EPS" put "$READ_KEY" \
            "$(head -c $VALUE_SIZE /dev/zero | tr '\0' v)" >/dev/null 2>>"$LOGS/etcdctl.log"; then
        ET1=$(et_measure 1 1 2000) || FAILED=1
        say "   1 client, 1 conn:     ${ET1:-failed} (reads/s errors)"
        ET64=$(et_measure 64 8 20000) || FAILED=1
        say "   64 clients, 8 conns:  ${ET64:-failed} (reads/s errors)"
    else
        warn "could not load etcd (see $LOGS/etcd-benchmark.log, $LOGS/etcdctl.log)"
        FAILED=1
    fi
    stop "${ET_PIDS[@]}"
fi

# === report ===============================================================
say ""
say "== propagation: put on the leader -> its event read at every child ($FANOUT_PUTS puts, 20 ms apart)"
printf '%-9s %8s %8s %8s %8s %8s %10s %10s %8s\n' children samples missing "p50 ms" "p99 ms" \
    "max ms" "all p50" "all max" "put p50"
for n in 100 1000; do
    l=$(line "fanout-$n" fanout) || continue
    printf '%-9s %8s %8s %8s %8s %8s %10s %10s %8s\n' "$n" "$(field samples "$l")" \
        "$(field missing "$l")" "$(field p50_ms "$l")" "$(field p99_ms "$l")" \
        "$(field max_ms "$l")" "$(field every_p50_ms "$l")" "$(field every_max_ms "$l")" \
        "$(field put_p50_ms "$l")"
    [ "$(field missing "$l")" = 0 ] || warn "$n children: $(field missing "$l") samples missing"
    figure "fanout_${n}_p50_ms" "$(field p50_ms "$l")" ms
    figure "fanout_${n}_p99_ms" "$(field p99_ms "$l")" ms
done
say "(all: per put, until the last child had it; put: the put's own round trip, the commit)"
if l=$(line fanout-1000 fanout); then
    say "1000 children by parent:"
    grep '^fanout_parent ' "$RESULTS/fanout-1000.txt" | while read -r p; do
        printf '  %-22s leader %-3s %5s children  p50 %8s ms  p99 %8s ms  max %8s ms\n' \
            "$(field endpoint "$p")" "$(field leader "$p")" "$(field children "$p")" \
            "$(field p50_ms "$p")" "$(field p99_ms "$p")" "$(field max_ms "$p")"
    done
    say "(joins $(field join_s "$l") s, connects $(field connect_s "$l") s, BUSY answers $(field busy "$l"), streams resumed $(field reconnects "$l"), heartbeats $(field heartbeats "$l"))"
fi

say ""
say "== catch-up: one child $CATCHUP_CHANGES changes behind (transactions of 100 puts, ${VALUE_SIZE}-byte values), real follower"
printf '%-10s %12s %10s %12s %8s %10s\n' changes bytes ms changes/s MB/s revisions
if l=$(line catchup catchup); then
    printf '%-10s %12s %10s %12s %8s %10s\n' "$(field changes "$l")" "$(field bytes "$l")" \
        "$(field ms "$l")" "$(field changes_per_s "$l")" "$(field mb_per_s "$l")" "$(field revisions "$l")"
    figure catchup_100k_ms "$(field ms "$l")" ms
fi

say ""
say "== point reads on one thread (cache: random keys of $(field keys "$(line reads reads)"); etcd: one key of $ET_KEYS, serializable)"
printf '%-50s %12s %10s\n' reader reads/s ns/read
rd=$(line reads reads) || rd=""
if [ -n "$rd" ]; then
    printf '%-50s %12s %10s\n' "cache, clusterd_get (plain API; the figure)" \
        "$(field get_per_s "$rd")" "$(field get_ns "$rd")"
    printf '%-50s %12s %10s\n' "cache, clusterd_view_get (zero-copy, 1000 a view)" \
        "$(field view_per_s "$rd")" "$(field view_ns "$rd")"
    figure cache_reads_per_s "$(field get_per_s "$rd")" 1/s
fi
et_best=""
for r in "1 client, 1 conn|$ET1" "64 clients, 8 conns|$ET64"; do
    label=${r%%|*} v=${r#*|}
    [ -n "$v" ] || continue
    read -r rate errs <<<"$v"
    printf '%-50s %12s %10s\n' "etcd 3.4 serializable range, $label" "$(num0 "$rate")" \
        "$(div 1000000000 "$rate" %.0f)"
    [ "$errs" = 0 ] || warn "etcd, $label: $errs failed reads"
    et_best=$(awk -v a="$rate" -v b="$et_best" 'BEGIN { print (b == "" || a > b) ? a : b }')
done
if [ -n "$et_best" ]; then
    figure etcd_serializable_reads_per_s "$(num0 "$et_best")" 1/s
    [ -n "$rd" ] && figure cache_read_ratio_vs_etcd "$(div "$(field get_per_s "$rd")" "$et_best" %.1f)" ratio
fi
say "(etcd: the better of the two is the figure; its ns/read is wall time over reads)"

say ""
say "== targets"
target "fan-out p99, 1000 children < 200 ms" "$(fig fanout_1000_p99_ms)" "<" 200
target "catch-up of 100k changes < 1000 ms" "$(fig catchup_100k_ms)" "<" 1000
target "cache reads >= 100x etcd serializable (ratio)" "$(fig cache_read_ratio_vs_etcd)" ">=" 100

say ""
server_logs
say "logs and raw results: $WORK"
say "bench-children: $(($(date +%s) - T_START)) s"
say ""
printf '%s\n' "${FIGURES[@]}"
exit "$FAILED"
