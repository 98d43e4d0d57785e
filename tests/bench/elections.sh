#!/bin/bash
# elections.sh - the false-election rate of each timing profile (make bench).
#
# For each profile, three healthy parents on 127.0.0.1 carry a steady write
# load (bench_cluster put, 16 clients) for ELECTIONS_SECONDS (60); nothing
# fails, so every election in that time is a false one: a follower that
# missed heartbeats because the machine was busy.  Reported as elections
# per minute (the rise of the Raft term, which counts every election round
# that reached a vote, over the run) and printed as
#   figure false_elections_<profile>_per_min VALUE 1/min
# Every process started here is stopped by its PID (trap on EXIT).
set -euo pipefail
BUILD=${BUILD:-build}
BIN=$(cd "$BUILD/bin" && pwd)
SECONDS_RUN=${ELECTIONS_SECONDS:-60}
DIR=$(mktemp -d /tmp/clusterd-elections-XXXXXX)
PIDS=()
cleanup() {
    for p in "${PIDS[@]}"; do kill -9 "$p" 2>/dev/null || true; done
    for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
    rm -rf "$DIR"
}
trap cleanup EXIT

free_base() { # a block of ports nobody listens on
    for _ in $(seq 1 50); do
        local b=$((30000 + (RANDOM % 250) * 100))
        if ! ss -ltn | awk '{print $4}' | grep -qE ":($b|$((b + 1))|$((b + 2))|$((b + 3))|$((b + 51))|$((b + 52))|$((b + 53)))$"; then
            echo "$b"; return
        fi
    done
    echo "elections: no free ports" >&2; exit 1
}

max_term() {
    "$BIN/clusterctl" --endpoints "$1" -o json status 2>/dev/null |
        sed -n 's/.*"term":\([0-9]*\).*/\1/p' | sort -n | tail -1
}

run_profile() {
    local profile=$1 base d eps
    base=$(free_base)
    d="$DIR/$profile"
    mkdir -p "$d"
    eps="127.0.0.1:$((base + 51)),127.0.0.1:$((base + 52)),127.0.0.1:$((base + 53))"
    for i in 1 2 3; do
        local how=()
        if [ "$i" = 1 ]; then how=(--bootstrap); else
            how=(--join "127.0.0.1:$((base + 51))" --token "$(cat "$d/n1/join-token")"); fi
        "$BIN/clusterd" --data "$d/n$i" --raft "127.0.0.1:$((base + i))" \
            --api "127.0.0.1:$((base + 50 + i))" --profile "$profile" "${how[@]}" \
            >"$d.n$i.log" 2>&1 &
        PIDS+=($!)
        if [ "$i" = 1 ]; then
            for _ in $(seq 1 100); do [ -s "$d/n1/join-token" ] && break; sleep 0.1; done
        fi
    done
    for _ in $(seq 1 300); do
        [ "$("$BIN/clusterctl" --endpoints "$eps" -o json members 2>/dev/null |
            grep -o '"role":"voter"' | wc -l)" = 3 ] && break
        sleep 0.1
    done
    sleep 1
    local t0 t1
    t0=$(max_term "$eps")
    "$BIN/bench_cluster" put --endpoints "$eps" --clients 16 --total 100000000 \
        --max-seconds "$SECONDS_RUN" >"$d.load.log" 2>&1 || true
    t1=$(max_term "$eps")
    local n=$((t1 - t0))
    local per_min
    per_min=$(awk -v n="$n" -v s="$SECONDS_RUN" 'BEGIN{printf "%.2f", n * 60 / s}')
    printf '%-8s %6s s %12s %14s\n' "$profile" "$SECONDS_RUN" "$n" "$per_min"
    echo "figure false_elections_${profile}_per_min $per_min 1/min" >>"$DIR/figures"
    for p in "${PIDS[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
    for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
    PIDS=()
}

echo "false elections under a steady 16-client write load, 3 healthy parents"
printf '%-8s %8s %12s %14s\n' profile run elections per-minute
: >"$DIR/figures"
run_profile default
run_profile fast
cat "$DIR/figures"
