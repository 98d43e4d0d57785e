#!/bin/bash
# bench.sh - clusterd against etcd 3.4, side by side in one run (make bench).
#
#   BUILD=build tests/bench/bench.sh
#
# Knobs (environment): BENCH_SECONDS (5: target length of each measured load
# run), BENCH_ROUNDS (3 measured runs per system and client count),
# BENCH_CLIENTS ("1 16 256"), BENCH_KILLS (20: leader kills per system and
# profile), BENCH_TRANSFERS (20), BENCH_MAX_OPS (300000: cap on one run's
# puts), BENCH_PROBE_MS (50: bound of one failover probe put), BENCH_KEEP=1
# keeps the data directories.
#
# What runs, all on 127.0.0.1, every server started here and stopped by its
# PID (a trap on EXIT stops whatever is still running):
#   - a 3-parent clusterd (profile default): node 1 --bootstrap, nodes 2 and
#     3 --join with node 1's first join token; ready once STATUS on every
#     node names the same leader, MEMBERS lists 3 voters and every node has
#     applied what the leader had committed;
#   - a 3-member etcd 3.4 (Debian's etcd-server, its default timing:
#     heartbeat 100 ms, election 1000 ms, the same as clusterd's default
#     profile), data on the same disk.
#
# Method, identical on both sides:
#   Load.  N clients (1, 16, 256), each with its own connection, put
#   256-byte values (one fixed value) to random 16-byte keys out of 100,000.
#   Requests come from one shared budget; each client sends its next put
#   when the previous one is answered.  The rate is the successful puts over
#   the wall time from the start to the last answer; p50/p99 are taken over
#   every successful put's latency with etcd's rule (the first sorted sample
#   i with i*100/n >= p).  etcd is loaded with its own tool, "benchmark put"
#   (go.etcd.io/etcd/tools/benchmark, built from the Go module proxy at the
#   version pinned in tests/bench/etcd-benchmark/go.mod), with
#   --clients N --conns N --target-leader: one gRPC connection per client,
#   all to the leader, as clusterd's clients end up at its leader.
#   clusterd is loaded by build/bin/bench_cluster (cluster/client.h), one
#   thread and one struct cd_client per client.  etcd's tool stops after a
#   count, so both sides run a short pilot (max(500, 20 N) puts, which also
#   warms the cluster) and then BENCH_ROUNDS runs of rate(pilot) *
#   BENCH_SECONDS puts, alternating clusterd and etcd run by run, so that a
#   disk that changes speed (or a neighbour that takes the CPU) affects both
#   alike.  Reported: the median over the rounds of the rate, of p50 and of
#   p99.
#
#   Failover.  Leader kills with kill -9, BENCH_KILLS times per system and
#   profile: a probe client of all three members (already connected, one
#   put done) finds the leader, SIGKILLs it (the PID this script started),
#   then puts until a put succeeds through any member; each try is bounded
#   by BENCH_PROBE_MS (50 ms) and failed tries are 5 ms apart, so the figure
#   (kill -> the first successful put's answer) is the cluster's outage to
#   within ~55 ms rather than the client library's retry pauses (with 250 ms
#   tries both sides' samples bunch at multiples of 255 ms); a put takes 1-3
#   ms on a settled cluster here, so 50 ms cuts no try that could succeed.
#   The script then restarts the killed node from its data directory (no
#   --bootstrap/--join for clusterd) and waits until the cluster is whole
#   again (as above), plus 0.5 s, before the next kill.  clusterd runs this
#   with --profile default and with a fresh cluster in --profile fast; etcd
#   with its defaults.  The probes are bench_cluster failover and
#   tests/bench/etcd-benchmark/etcd-failover (clientv3 of the same pinned
#   tree): same loop, same bounds.  p99 of 20 samples is their maximum.
#
#   Leader transfer.  clusterd's TRANSFER request to the leader (to any
#   voter): its round trip (the leader answers once it knows the new leader),
#   and the time until the first put after it succeeds (a put through the
#   client library, with its own retry pauses).  etcd has no counterpart
#   here (its move-leader needs a target and is not what clusterd's SIGTERM
#   path does).
#
# Every figure is printed as "figure NAME VALUE UNIT" besides the tables.
set -u

BUILD=${BUILD:-build}
BENCH_SECONDS=${BENCH_SECONDS:-5}
BENCH_CLIENTS=${BENCH_CLIENTS:-"1 16 256"}
BENCH_KILLS=${BENCH_KILLS:-20}
BENCH_TRANSFERS=${BENCH_TRANSFERS:-20}
BENCH_MAX_OPS=${BENCH_MAX_OPS:-300000}
BENCH_ROUNDS=${BENCH_ROUNDS:-3}
KEYS=100000
KEY_SIZE=16
VALUE_SIZE=256
PROBE_MS=${BENCH_PROBE_MS:-50}

ROOT=$(pwd)
case $BUILD in /*) ABS_BUILD=$BUILD ;; *) ABS_BUILD=$ROOT/$BUILD ;; esac
CLUSTERD=$ABS_BUILD/bin/clusterd
BENCH_CLUSTER=$ABS_BUILD/bin/bench_cluster
ETCD_TOOLS=$ABS_BUILD/etcd-bench
WORK=$ABS_BUILD/bench-cluster
LOGS=$WORK/logs
RESULTS=$WORK/results

# Processes, ports, statistics, figures, clusterd and etcd start-up.
. "$(dirname "${BASH_SOURCE[0]}")/common.sh"

# --- load runs ------------------------------------------------------------
# Each prints "rate p50_us p99_us errors" or fails.
cd_load() { # CLIENTS TOTAL
    local out
    out=$("$BENCH_CLUSTER" put --endpoints "$CD_EPS" --clients "$1" --total "$2" \
        --max-seconds $((BENCH_SECONDS * 4 + 10)) --keys $KEYS \
        --key-size $KEY_SIZE --value-size $VALUE_SIZE 2>>"$LOGS/bench_cluster.log") || {
        warn "bench_cluster put failed: $out"
        return 1
    }
    echo "$(field rate "$out") $(field p50_us "$out") $(field p99_us "$out") $(field errors "$out")"
}

et_load() { # CLIENTS TOTAL
    local f=$RESULTS/etcd-put-$1-$2.txt
    timeout $((BENCH_SECONDS * 10 + 60)) "$ETCD_TOOLS/benchmark" --endpoints "$ET_EPS" \
        --target-leader --clients "$1" --conns "$1" --precise \
        put --key-size $KEY_SIZE --val-size $VALUE_SIZE --key-space-size $KEYS \
        --total "$2" >"$f" 2>>"$LOGS/etcd-benchmark.log" || {
        warn "etcd benchmark failed (see $f)"
        return 1
    }
    local rate p50 p99 errors
    rate=$(grep -a 'Requests/sec' "$f" | awk '{ printf "%.1f", $2 }')
    p50=$(grep -a ' 50% in ' "$f" | awk '{ printf "%.0f", $3 * 1e6 }')
    p99=$(grep -a ' 99% in ' "$f" | awk '{ printf "%.0f", $3 * 1e6 }')
    errors=$(sed -n '/Error distribution/,$p' "$f" | awk '/\[[0-9]+\]/ { gsub(/[][]/, "", $1); s += $1 } END { print s + 0 }')
    [ -n "$rate" ] || {
        warn "no result in $f"
        return 1
    }
    echo "$rate ${p50:-nan} ${p99:-nan} $errors"
}

# total_for RATE: the measured run's budget.
total_for() {
    awk -v r="$1" -v s="$BENCH_SECONDS" -v m="$BENCH_MAX_OPS" -v c="$2" 'BEGIN {
        t = int(r * s); if (t < 10 * c) t = 10 * c; if (t < 200) t = 200; if (t > m) t = m; print t }'
}

# --- failover runs --------------------------------------------------------
cd_failover() { # OUTFILE
    local k out ms idx
    : >"$1"
    for ((k = 1; k <= BENCH_KILLS; k++)); do
        local pids="${CD_PIDS[*]}"
        out=$("$BENCH_CLUSTER" failover --endpoints "$CD_EPS" --pids "${pids// /,}" \
            --probe-ms $PROBE_MS --timeout-s 30 2>>"$LOGS/bench_cluster.log")
        ms=$(awk '/^failover_ms/ { print $2 }' <<<"$out")
        idx=$(awk '/^failover_ms/ { print $4 }' <<<"$out")
        [ -n "$idx" ] || die "clusterd ($CD_PROFILE) failover probe failed (see $LOGS/bench_cluster.log)"
        forget "${CD_PIDS[idx]}"
        [ "$ms" != -1 ] || die "clusterd ($CD_PROFILE): no write within 30 s of a leader kill"
        echo "$ms" >>"$1"
        printf '  kill %2d: node n%d, first write after %s ms\n' "$k" $((idx + 1)) "$ms"
        cd_node "$idx"
        "$BENCH_CLUSTER" wait --endpoints "$CD_EPS" --voters 3 --timeout-s 60 ||
            die "clusterd ($CD_PROFILE) not whole again after restarting n$((idx + 1))"
        sleep 0.5
    done
}

et_failover() { # OUTFILE
    local k out ms idx
    : >"$1"
    for ((k = 1; k <= BENCH_KILLS; k++)); do
        local pids="${ET_PIDS[*]}"
        out=$("$ETCD_TOOLS/etcd-failover" failover --endpoints "$ET_URLS" \
            --pids "${pids// /,}" --probe-ms $PROBE_MS --timeout-s 30 2>>"$LOGS/etcd-failover.log")
        ms=$(awk '/^failover_ms/ { print $2 }' <<<"$out")
        idx=$(awk '/^failover_ms/ { print $4 }' <<<"$out")
        [ -n "$idx" ] || die "etcd failover probe failed (see $LOGS/etcd-failover.log)"
        forget "${ET_PIDS[idx]}"
        [ "$ms" != -1 ] || die "etcd: no write within 30 s of a leader kill"
        echo "$ms" >>"$1"
        printf '  kill %2d: member e%d, first write after %s ms\n' "$k" $((idx + 1)) "$ms"
        et_member "$idx"
        "$ETCD_TOOLS/etcd-failover" wait --endpoints "$ET_URLS" --timeout-s 60 ||
            die "etcd not whole again after restarting e$((idx + 1))"
        sleep 0.5
    done
}

# === the run ==============================================================
[ -x "$CLUSTERD" ] && [ -x "$BENCH_CLUSTER" ] || die "build clusterd and bench_cluster first"
rm -rf "$WORK"
mkdir -p "$LOGS" "$RESULTS" "$WORK/data"
T_START=$(date +%s)

ETCD_SKIP=""
say "== cluster benchmark: clusterd (3 parents) vs etcd $(etcd --version 2>/dev/null | awk '/etcd Version/ { print $3 }') (3 members), loopback, $(nproc) cores"
build_etcd_tools || warn "etcd side skipped: $ETCD_SKIP"

cd_up default
say "clusterd up: $CD_EPS"
if [ -z "$ETCD_SKIP" ]; then
    et_up
    say "etcd up: $ET_EPS"
fi

# --- throughput and latency ---
say ""
say "-- puts: ${VALUE_SIZE}-byte values, random ${KEY_SIZE}-byte keys of $KEYS; $BENCH_ROUNDS rounds of ~${BENCH_SECONDS} s per system"
say "   (each: rate/s p50_us p99_us errors)"
declare -A R=()
# median COLUMN FILE
median() { awk -v c="$1" '{ print $c }' "$2" | sort -g | awk '{ v[NR] = $1 } END { if (NR == 0) print "nan"; else if (NR % 2) print v[(NR + 1) / 2]; else print (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
for c in $BENCH_CLIENTS; do
    pilot=$((20 * c))
    [ $pilot -ge 500 ] || pilot=500
    r=$(cd_load "$c" "$pilot") || die "clusterd pilot run ($c clients) failed"
    cd_total=$(total_for "${r%% *}" "$c")
    if [ -z "$ETCD_SKIP" ]; then
        r=$(et_load "$c" "$pilot") || die "etcd pilot run ($c clients) failed"
        et_total=$(total_for "${r%% *}" "$c")
    fi
    : >"$RESULTS/put-clusterd-$c.txt"
    : >"$RESULTS/put-etcd-$c.txt"
    for ((round = 1; round <= BENCH_ROUNDS; round++)); do
        r=$(cd_load "$c" "$cd_total") || die "clusterd run ($c clients) failed"
        echo "$r" >>"$RESULTS/put-clusterd-$c.txt"
        printf '  %3d clients, round %d: clusterd %7s puts: %-32s' "$c" "$round" "$cd_total" "$r"
        if [ -z "$ETCD_SKIP" ]; then
            r=$(et_load "$c" "$et_total") || die "etcd run ($c clients) failed"
            echo "$r" >>"$RESULTS/put-etcd-$c.txt"
            printf ' etcd %7s puts: %s' "$et_total" "$r"
        fi
        printf '\n'
    done
    f=$RESULTS/put-clusterd-$c.txt
    R[cd_$c]="$(median 1 "$f") $(median 2 "$f") $(median 3 "$f") $(awk '{ s += $4 } END { print s + 0 }' "$f")"
    f=$RESULTS/put-etcd-$c.txt
    [ -s "$f" ] && R[et_$c]="$(median 1 "$f") $(median 2 "$f") $(median 3 "$f") $(awk '{ s += $4 } END { print s + 0 }' "$f")"
done

# --- leader transfer (default profile) ---
transfer_run() { # OUTPREFIX
    # The put after it: one call with the client's usual 5 s bound, so that
    # its time includes the client library's own pauses.
    "$BENCH_CLUSTER" transfer --endpoints "$CD_EPS" --count "$BENCH_TRANSFERS" \
        --probe-ms 5000 >"$1.txt" 2>>"$LOGS/bench_cluster.log" ||
        warn "some leader transfers failed (see $LOGS/bench_cluster.log)"
    awk '/^transfer_ms/ { print $2 }' "$1.txt" >"$1-rtt.txt"
    awk '/^transfer_ms/ { print $4 }' "$1.txt" >"$1-write.txt"
}
say ""
say "-- leader transfer, profile default: $BENCH_TRANSFERS transfers"
transfer_run "$RESULTS/transfer-default"
"$BENCH_CLUSTER" wait --endpoints "$CD_EPS" --voters 3 --timeout-s 60 ||
    die "clusterd not whole after the transfers"

# --- failover ---
say ""
say "-- failover, clusterd profile default: $BENCH_KILLS leader kills"
cd_failover "$RESULTS/failover-default.txt"
cd_down

say ""
say "-- failover, clusterd profile fast: $BENCH_KILLS leader kills (fresh cluster)"
cd_up fast
say "-- leader transfer, profile fast: $BENCH_TRANSFERS transfers"
transfer_run "$RESULTS/transfer-fast"
"$BENCH_CLUSTER" wait --endpoints "$CD_EPS" --voters 3 --timeout-s 60 ||
    die "clusterd not whole after the transfers"
cd_failover "$RESULTS/failover-fast.txt"
cd_down

if [ -z "$ETCD_SKIP" ]; then
    say ""
    say "-- failover, etcd defaults: $BENCH_KILLS leader kills"
    et_failover "$RESULTS/failover-etcd.txt"
    stop "${ET_PIDS[@]}"
fi

# === report ===============================================================
say ""
say "== puts (clusterd profile default, etcd defaults; medians of $BENCH_ROUNDS rounds)"
printf '%-8s | %12s %9s %9s | %12s %9s %9s | %8s %8s %8s\n' clients \
    "clusterd/s" "p50 us" "p99 us" "etcd/s" "p50 us" "p99 us" "rate x" "p50 x" "p99 x"
for c in $BENCH_CLIENTS; do
    read -r crate cp50 cp99 cerr <<<"${R[cd_$c]}"
    erate=nan ep50=nan ep99=nan eerr=0
    [ -n "${R[et_$c]:-}" ] && read -r erate ep50 ep99 eerr <<<"${R[et_$c]}"
    printf '%-8s | %12.0f %9.0f %9.0f | %12s %9s %9s | %8s %8s %8s\n' "$c" "$crate" "$cp50" "$cp99" \
        "$(num0 "$erate")" "$(num0 "$ep50")" "$(num0 "$ep99")" \
        "$(div "$crate" "$erate")" "$(div "$cp50" "$ep50")" "$(div "$cp99" "$ep99")"
    [ "${cerr:-0}" = 0 ] || warn "clusterd, $c clients: $cerr failed puts"
    [ "${eerr:-0}" = 0 ] || warn "etcd, $c clients: $eerr failed puts"
    figure "write_per_s_$c" "$(printf '%.0f' "$crate")" 1/s
    figure "put_p50_us_$c" "$(num0 "$cp50")" us
    figure "put_p99_us_$c" "$(num0 "$cp99")" us
    if [ -n "${R[et_$c]:-}" ]; then
        figure "etcd_write_per_s_$c" "$(printf '%.0f' "$erate")" 1/s
        figure "etcd_put_p50_us_$c" "$(num0 "$ep50")" us
        figure "etcd_put_p99_us_$c" "$(num0 "$ep99")" us
        figure "write_ratio_vs_etcd_$c" "$(div "$crate" "$erate")" ratio
    fi
done
say "(x: clusterd / etcd; for the rate higher is better for clusterd, for latencies lower)"

say ""
say "== failover: kill -9 of the leader -> first successful put through any member"
printf '%-26s %6s %9s %9s %9s %9s\n' system kills "p50 ms" "p99 ms" "min ms" "max ms"
fo_row() { # LABEL FILE FIGUREPREFIX
    [ -s "$2" ] || return
    local p50 p99 mn mx
    p50=$(pctl 50 "$2")
    p99=$(pctl 99 "$2")
    mn=$(sort -g "$2" | head -1)
    mx=$(sort -g "$2" | tail -1)
    printf '%-26s %6d %9.0f %9.0f %9.0f %9.0f\n' "$1" "$(wc -l <"$2")" "$p50" "$p99" "$mn" "$mx"
    figure "${3}_p50_ms" "$(printf '%.0f' "$p50")" ms
    figure "${3}_p99_ms" "$(printf '%.0f' "$p99")" ms
}
fo_row "clusterd, profile fast" "$RESULTS/failover-fast.txt" failover_fast
fo_row "clusterd, profile default" "$RESULTS/failover-default.txt" failover_default
fo_row "etcd 3.4, defaults" "$RESULTS/failover-etcd.txt" etcd_failover
say "(p99 of $BENCH_KILLS samples by etcd's rule is their maximum)"

say ""
say "== leader transfer (TRANSFER round trip; then the first put that succeeds)"
printf '%-26s %6s %9s %9s %12s %12s\n' profile count "p50 ms" "p99 ms" "write p50" "write p99"
for p in default fast; do
    f=$RESULTS/transfer-$p
    [ -s "$f-rtt.txt" ] || continue
    printf '%-26s %6d %9.1f %9.1f %12.1f %12.1f\n' "$p" "$(wc -l <"$f-rtt.txt")" \
        "$(pctl 50 "$f-rtt.txt")" "$(pctl 99 "$f-rtt.txt")" \
        "$(pctl 50 "$f-write.txt")" "$(pctl 99 "$f-write.txt")"
done
if [ -s "$RESULTS/transfer-default-rtt.txt" ]; then
    figure leader_transfer_ms "$(printf '%.1f' "$(pctl 50 "$RESULTS/transfer-default-rtt.txt")")" ms
    figure leader_transfer_p99_ms "$(printf '%.1f' "$(pctl 99 "$RESULTS/transfer-default-rtt.txt")")" ms
    figure leader_transfer_write_ms "$(printf '%.1f' "$(pctl 50 "$RESULTS/transfer-default-write.txt")")" ms
fi
if [ -s "$RESULTS/transfer-fast-rtt.txt" ]; then
    figure leader_transfer_fast_ms "$(printf '%.1f' "$(pctl 50 "$RESULTS/transfer-fast-rtt.txt")")" ms
fi

# --- targets ---
say ""
say "== targets"
target "write rate at 256 clients >= 2x etcd (ratio)" "$(fig write_ratio_vs_etcd_256)" ">=" 2
target "1-client put p50 <= etcd's (clusterd/etcd)" "$(div "$(fig put_p50_us_1)" "$(fig etcd_put_p50_us_1)")" "<=" 1
target "failover p99, profile fast <= 500 ms" "$(fig failover_fast_p99_ms)" "<=" 500
target "failover p99, profile default <= 1500 ms" "$(fig failover_default_p99_ms)" "<=" 1500
target "leader transfer (p50) <= 50 ms" "$(fig leader_transfer_ms)" "<=" 50

# --- what the servers said ---
say ""
server_logs
say "logs and raw samples: $WORK"
say "bench: $(($(date +%s) - T_START)) s"
say ""
printf '%s\n' "${FIGURES[@]}"
