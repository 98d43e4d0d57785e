#!/bin/bash
# test_nfq_delay.sh - the lab's NFQUEUE delayer (tests/tools/nfq_delay.c)
# between two network namespaces joined by a veth pair.
#
# Node a queues everything it sends to and receives from b (OUTPUT and
# INPUT rules, --queue-bypass); udp_ping from a to an echo server in b
# measures round trips, losses and reordering:
#   - delay 50 ms on both directions: every round trip >= 100 ms, none lost;
#   - jitter: echoes arrive out of order;
#   - loss 0.3 on both directions: about half the round trips lost, and the
#     same seed gives the same schedule (--trace) twice;
#   - at most --max-held packets held, the rest let through at once;
#   - SIGTERM with a packet held for 3 s: it is let through at once, the
#     counters are printed, exit 0;
#   - kill -9: traffic flows again without delay (queue-bypass).
# Needs root (namespaces, iptables).  Everything is removed on exit.
set -u

BUILD=${BUILD:-build}
case $BUILD in /*) ;; *) BUILD=$(pwd)/$BUILD ;; esac
TOOLS=$BUILD/tests
if [ "$(id -u)" != 0 ]; then
    echo "test_nfq_delay: skipped (needs root for network namespaces)"
    exit 0
fi

RUN=nq$$
SUB=10.$((100 + $$ % 100)).79
A=$SUB.1
B=$SUB.2
QUEUE=$((1000 + $$ % 1000))
DIR=$(mktemp -d /tmp/cd-nfq-XXXXXX)
declare -A PID=()
FAILS=0

ns() { echo "${RUN}$1"; }
in_ns() { local n=$1; shift; ip netns exec "$(ns "$n")" "$@"; }
fail() { echo "FAIL: $*"; FAILS=$((FAILS + 1)); }
ok() { echo "ok: $*"; }

cleanup() {
    local k
    for k in "${!PID[@]}"; do kill -9 "${PID[$k]}" 2>/dev/null; done
    for k in "${!PID[@]}"; do wait "${PID[$k]}" 2>/dev/null; done
    for k in a b; do
        for p in $(ip netns pids "$(ns $k)" 2>/dev/null); do kill -9 "$p" 2>/dev/null; done
        ip netns del "$(ns $k)" 2>/dev/null
    done
    if [ "$FAILS" = 0 ] && [ -z "${CD_KEEP_TEST_DIR:-}" ]; then
        rm -rf "$DIR"
    else
        echo "test_nfq_delay: kept $DIR"
    fi
}
trap cleanup EXIT
trap 'exit 1' INT TERM

ip netns add "$(ns a)" || exit 1
ip netns add "$(ns b)" || exit 1
ip link add eth0 netns "$(ns a)" type veth peer name eth0 netns "$(ns b)" || exit 1
ip -n "$(ns a)" addr add "$A/24" dev eth0
ip -n "$(ns b)" addr add "$B/24" dev eth0
for k in a b; do
    ip -n "$(ns $k)" link set eth0 up
    ip -n "$(ns $k)" link set lo up
done
in_ns a iptables -w -A OUTPUT -d "$B" -j NFQUEUE --queue-num "$QUEUE" --queue-bypass || exit 1
in_ns a iptables -w -A INPUT -s "$B" -j NFQUEUE --queue-num "$QUEUE" --queue-bypass || exit 1

ip netns exec "$(ns b)" "$TOOLS/udp_ping" serve "$B:7000" 2>>"$DIR/echo.log" &
PID[echo]=$!

delayer() { # LOGNAME ARGS... [>FILE]: start nfq_delay in a, wait until bound
    local log=$DIR/$1.log i; shift
    # ip netns exec execs the program: $! is nfq_delay itself.
    ip netns exec "$(ns a)" "$TOOLS/nfq_delay" --queue "$QUEUE" "$@" 2>"$log" &
    PID[nfq]=$!
    for ((i = 0; i < 100; i++)); do
        grep -qs "^nfq_delay: queue .*seed" "$log" && return 0
        kill -0 "${PID[nfq]}" 2>/dev/null || break
        sleep 0.05
    done
    fail "nfq_delay did not start: $(cat "$log")"
    return 1
}
stop_delayer() { # SIGNAL: the exit status is left in $STATUS
    kill "-$1" "${PID[nfq]}" 2>/dev/null
    { wait "${PID[nfq]}"; } 2>/dev/null
    STATUS=$?
    unset "PID[nfq]"
}
probe() { in_ns a "$TOOLS/udp_ping" "$B:7000" "$@"; }
field() { # NAME LINE: the number after NAME
    awk -v k="$1" '{for (i = 1; i < NF; i++) if ($i == k) { print $(i + 1); exit }}' <<<"$2"
}
# below X LIMIT: X < LIMIT, as decimals
below() { awk -v x="$1" -v l="$2" 'BEGIN { exit !(x < l) }'; }

# The echo server answers (no rules matter yet: nothing holds the queue,
# so the bypass lets packets through).
for ((i = 0; i < 50; i++)); do
    r=$(probe --count 1 --wait-ms 200)
    [ "$(field received "$r")" = 1 ] && break
done
base=$(probe --count 10 --interval-ms 20)
echo "baseline: $base"
if [ "$(field received "$base")" != 10 ] || ! below "$(field avg "$base")" 20; then
    fail "baseline round trips: $base"
fi

# --- delay ---------------------------------------------------------------
delayer delay --delay-ms 50 --jitter-ms 0 --seed 1 || exit 1
r=$(probe --count 20 --interval-ms 20)
echo "delay 50 ms: $r"
stop_delayer TERM
if [ "$(field received "$r")" != 20 ]; then
    fail "delay: packets lost: $r"
elif below "$(field min "$r")" 100; then
    fail "delay: a round trip under 2 x 50 ms: $r"
elif ! below "$(field avg "$r")" 160; then
    fail "delay: round trips far above 100 ms (timers late?): $r"
else
    ok "delay 50 ms each way: round trips $(field min "$r")-$(field max "$r") ms"
fi

# --- jitter: reordering ----------------------------------------------------
delayer jitter --delay-ms 50 --jitter-ms 40 --seed 2 || exit 1
r=$(probe --count 100 --interval-ms 5)
echo "delay 50 +- 40 ms: $r"
stop_delayer TERM
if [ "$(field received "$r")" != 100 ]; then
    fail "jitter: packets lost: $r"
elif [ "$(field reordered "$r")" -lt 5 ]; then
    fail "jitter: hardly any reordering: $r"
elif below "$(field min "$r")" 20 || ! below "$(field max "$r")" 250; then
    fail "jitter: round trips outside 2 x [10, 90] ms (+ slack): $r"
else
    ok "jitter reorders: $(field reordered "$r") of 100 echoes out of order"
fi

# --- loss, and the seed ------------------------------------------------------
# The schedule (--trace: drop or delay per packet number) depends on the
# seed and the packet's number only, whatever the traffic's timing.
for run in 1 2; do
    delayer "loss$run" --loss 0.3 --jitter-ms 5 --seed 7 --trace >"$DIR/trace$run" || exit 1
    r=$(probe --count 100 --interval-ms 5 --wait-ms 500)
    stop_delayer TERM
    echo "loss 0.3 (run $run): $r"
    echo "  $(grep stopped "$DIR/loss$run.log")"
    lost=$(field lost "$r")
    # 1 - 0.7^2 = 51% of round trips; the bounds are 5 sigma wide.
    if [ "$lost" -lt 25 ] || [ "$lost" -gt 77 ]; then
        fail "loss 0.3 each way lost $lost of 100 round trips"
    fi
done
n=$(cat "$DIR/trace1" "$DIR/trace2" | wc -l)
if [ "$(wc -l <"$DIR/trace1")" -lt 100 ] || [ "$(wc -l <"$DIR/trace2")" -lt 100 ] ||
    ! cmp -s <(head -n 100 "$DIR/trace1") <(head -n 100 "$DIR/trace2"); then
    fail "seed 7 gave two different schedules (see $DIR/trace1, trace2)"
else
    ok "loss: about half the round trips lost; seed 7 gave the same schedule twice ($n packets)"
fi

# --- the cap on held packets ---------------------------------------------------
delayer cap --delay-ms 3000 --max-held 4 --seed 5 || exit 1
r=$(probe --count 20 --interval-ms 5 --wait-ms 300)
stop_delayer TERM
stopped=$(grep stopped "$DIR/cap.log")
echo "held 3 s, at most 4: $r"
echo "  $stopped"
if [ "$(field received "$r")" -lt 10 ] || [[ $stopped != *"max held 4,"* ]] ||
    [[ $stopped == *"over the cap 0,"* ]]; then
    fail "cap: packets beyond the 4th were not let through at once"
else
    ok "cap: at most 4 held, the rest let through at once and counted"
fi

# --- SIGTERM lets held packets through ---------------------------------------
delayer hold --delay-ms 3000 --seed 3 || exit 1
ip netns exec "$(ns a)" "$TOOLS/udp_ping" "$B:7000" --count 1 --wait-ms 5000 >"$DIR/held.out" &
PID[probe]=$!
sleep 0.5
stop_delayer TERM
wait "${PID[probe]}"
unset "PID[probe]"
r=$(cat "$DIR/held.out")
stopped=$(grep stopped "$DIR/hold.log")
echo "held 3 s, SIGTERM after 0.5 s: $r"
echo "  $stopped"
if [ "$STATUS" != 0 ]; then
    fail "SIGTERM: exit status $STATUS"
elif [ "$(field received "$r")" != 1 ] || ! below "$(field max "$r")" 2000; then
    fail "SIGTERM: the held packet was not let through at once: $r"
elif [[ $stopped != *"accepted at stop 1"* ]]; then
    fail "SIGTERM: counters: $stopped"
else
    ok "SIGTERM accepts what is held (round trip $(field max "$r") ms) and prints counters"
fi

# --- kill -9: the bypass -------------------------------------------------------
delayer kill --delay-ms 3000 --seed 4 || exit 1
r=$(probe --count 1 --wait-ms 300)
if [ "$(field received "$r")" != 0 ]; then
    fail "kill: packets were not held before the kill: $r"
fi
stop_delayer KILL
r=$(probe --count 10 --interval-ms 20 --wait-ms 1000)
echo "after kill -9: $r"
if [ "$(field received "$r")" != 10 ] || ! below "$(field avg "$r")" 20; then
    fail "kill -9: traffic does not flow freely again: $r"
else
    ok "kill -9: traffic flows again (queue-bypass)"
fi

# --- usage -------------------------------------------------------------------
"$TOOLS/nfq_delay" --queue 1 --loss 2 >/dev/null 2>&1
[ $? = 2 ] || fail "a loss of 2 was not refused as bad usage"

if [ "$FAILS" = 0 ]; then
    echo "test_nfq_delay: all passed"
else
    echo "test_nfq_delay: $FAILS failed"
fi
[ "$FAILS" = 0 ]
