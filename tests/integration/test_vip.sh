#!/bin/bash
# test_vip.sh - the virtual IP follows the leader, in network namespaces.
#
# A hub namespace with a bridge; three parents and a client, each in its
# own namespace on 10.77.x.0/24 (x from the run id), ip_forward off in the
# nodes.  Checks, through the VIP from the client namespace:
#   - one holder, the leader; a write through the VIP works;
#   - kill -9 of the leader: a new holder, writes go on; the killed node
#     restarts and removes its stale copy: one holder again, and arping
#     sees one MAC;
#   - SIGSTOP of the leader: a new holder; SIGCONT: the old one drops it at
#     once (one holder within a second);
#   - the leader cut off from its peers: it releases (lease lapsed) BEFORE
#     the new leader claims (log timestamps on one machine clock);
#   - SIGTERM of the leader: it releases, hands over, the next one claims.
# Needs root (namespaces).  Every namespace and process is removed on exit.
set -u

BUILD=${BUILD:-build}
case $BUILD in /*) ;; *) BUILD=$(pwd)/$BUILD ;; esac
BIN=$BUILD/bin
if [ "$(id -u)" != 0 ]; then
    echo "test_vip: skipped (needs root for network namespaces)"
    exit 0
fi

RUN=cv$$
NET=$((100 + $$ % 100))
SUB=10.$NET.77
VIP=$SUB.50
DIR=$(mktemp -d /tmp/cd-vip-XXXXXX)
declare -A PID
FAILS=0

ns() { echo "${RUN}$1"; } # ns h|c|1|2|3
stop_node() { # N SIGNAL: stop node N and reap it, SIGKILL after 15 s
    local n=$1 sig=$2 i
    kill "-$sig" "${PID[$n]}" 2>/dev/null
    for ((i = 0; i < 150; i++)); do
        kill -0 "${PID[$n]}" 2>/dev/null || break
        sleep 0.1
    done
    if kill -0 "${PID[$n]}" 2>/dev/null; then
        fail "node $n ignored SIG$sig for 15 s"
        kill -9 "${PID[$n]}"
    fi
    wait "${PID[$n]}" 2>/dev/null
    unset "PID[$n]"
}
in_ns() { local n=$1; shift; ip netns exec "$(ns "$n")" "$@"; }

cleanup() {
    for k in "${!PID[@]}"; do
        kill -CONT "${PID[$k]}" 2>/dev/null
        kill -9 "${PID[$k]}" 2>/dev/null
    done
    for k in "${!PID[@]}"; do wait "${PID[$k]}" 2>/dev/null; done
    for n in 1 2 3 c h; do
        for p in $(ip netns pids "$(ns $n)" 2>/dev/null); do kill -9 "$p" 2>/dev/null; done
        ip netns del "$(ns $n)" 2>/dev/null
    done
    if [ "$FAILS" = 0 ] && [ -z "${CD_KEEP_TEST_DIR:-}" ]; then
        rm -rf "$DIR"
    else
        echo "test_vip: kept $DIR"
    fi
}
trap cleanup EXIT
trap 'exit 1' INT TERM

fail() { echo "FAIL: $*"; FAILS=$((FAILS + 1)); }
ok() { echo "ok: $*"; }

# --- topology --------------------------------------------------------------
ip netns add "$(ns h)" || exit 1
ip -n "$(ns h)" link add br0 type bridge
ip -n "$(ns h)" link set br0 up
ip -n "$(ns h)" link set lo up
for n in 1 2 3 c; do
    ip netns add "$(ns $n)"
    ip link add eth0 netns "$(ns $n)" type veth peer name "v$n" netns "$(ns h)"
    ip -n "$(ns h)" link set "v$n" master br0 up
    in_ns "$n" sysctl -qw net.ipv4.ip_forward=0 net.ipv4.conf.all.send_redirects=0
    host=$([ "$n" = c ] && echo 100 || echo "$n")
    ip -n "$(ns $n)" addr add "$SUB.$host/24" dev eth0
    ip -n "$(ns $n)" link set eth0 up
    ip -n "$(ns $n)" link set lo up
done

raft() { echo "$SUB.$1:7001"; }
api() { echo "$SUB.$1:7101"; }
EPS="$VIP:7101,$(api 1),$(api 2),$(api 3)"
ctl() { in_ns c "$BIN/clusterctl" --endpoints "$EPS" --timeout "${T:-10000}" "$@"; }

start() { # start N [flags]
    local n=$1; shift
    # ip netns exec execs clusterd: $! is clusterd's own PID.
    ip netns exec "$(ns "$n")" "$BIN/clusterd" --data "$DIR/n$n" --raft "$(raft "$n")" \
        --api "$(api "$n")" --profile fast --set "vip=$VIP/24" \
        --set vip_interface=eth0 ${VIP_EXTRA:-} "$@" >>"$DIR/n$n.log" 2>&1 &
    PID[$n]=$!
}

holders() { # the nodes whose eth0 carries the VIP
    local n out=""
    for n in 1 2 3; do
        if ip -n "$(ns $n)" -4 addr show dev eth0 | grep -q " $VIP/"; then out+="$n "; fi
    done
    echo "$out"
}

wait_for() { # SECONDS COMMAND...
    local deadline=$((SECONDS + $1)); shift
    until "$@" >/dev/null 2>&1; do
        [ $SECONDS -ge $deadline ] && return 1
        sleep 0.05
    done
}

not_held_by() { ! ip -n "$(ns "$1")" -4 addr show dev eth0 | grep -q " $VIP/"; }
held_by_other() { holders | tr ' ' '\n' | grep -v "^$1\$" | grep -q .; }
one_holder() { [ "$(holders | wc -w)" = 1 ]; }
holder() { holders | awk '{print $1}'; }
leader_is_holder() {
    local h
    h=$(holder)
    [ -n "$h" ] && ctl -o json status 2>/dev/null | grep -q "\"leader_api\":\"$(api "$h")\""
}
vip_write() { T=3000 in_ns c "$BIN/clusterctl" --endpoints "$VIP:7101" --timeout 3000 put "$1" "$2"; }
voters3() { [ "$(ctl -o json members | grep -o '"role":"voter"' | wc -l)" = 3 ]; }
ts_of() { # LOGFILE PATTERN: the first matching line's time, in ms
    local line
    line=$(grep -m1 -- "$2" "$1") || return 1
    date -d "$(echo "$line" | awk '{print $1}')" +%s%3N
}

# --- form ------------------------------------------------------------------
start 1 --bootstrap
wait_for 10 test -s "$DIR/n1/join-token" || { fail "no join token"; exit 1; }
TOKEN=$(cat "$DIR/n1/join-token")
start 2 --join "$(api 1)" --token "$TOKEN"
start 3 --join "$(api 1)" --token "$TOKEN"
wait_for 30 voters3 || { fail "no three voters"; exit 1; }
if wait_for 10 one_holder && wait_for 5 leader_is_holder; then
    ok "one holder, the leader (node $(holder))"
else
    fail "holders: '$(holders)'"
fi
wait_for 10 vip_write /vip/a 1 && ok "write through the VIP" || fail "write through the VIP"

# --- kill -9 -----------------------------------------------------------------
OLD=$(holder)
stop_node "$OLD" KILL
t0=$(date +%s%3N)
if wait_for 15 vip_write /vip/b 2; then
    ok "kill -9 of node $OLD: writes through the VIP again after $(($(date +%s%3N) - t0)) ms"
else
    fail "no write through the VIP after killing node $OLD"
fi
NEW=$(holders | tr ' ' '\n' | grep -v "^$OLD\$" | head -1)
[ -n "$NEW" ] && ok "node $NEW claimed it (the dead node $OLD still has a stale copy: '$(holders)')" ||
    fail "no new holder: '$(holders)'"
start "$OLD"
wait_for 10 one_holder && ok "restarted node $OLD removed its stale copy" || fail "holders after restart: '$(holders)'"
if in_ns c arping -q -d -i eth0 -c 2 -w 3 "$VIP" >/dev/null 2>&1; then
    ok "arping: one MAC answers for the VIP"
else
    fail "arping -d: duplicate or no answer for $VIP"
fi
wait_for 30 voters3

# --- pause -------------------------------------------------------------------
OLD=$(holder)
kill -STOP "${PID[$OLD]}"
if wait_for 15 vip_write /vip/c 3; then ok "node $OLD paused: writes through the VIP go on"; else fail "no write with node $OLD paused"; fi
kill -CONT "${PID[$OLD]}"
if wait_for 1 one_holder; then
    ok "node $OLD resumed and dropped it at once (holder: $(holder))"
else
    sleep 1
    fail "two holders after resuming node $OLD: '$(holders)'"
fi
wait_for 30 voters3

# --- the leader cut off ------------------------------------------------------
OLD=$(holder)
for n in 1 2 3; do
    [ "$n" = "$OLD" ] && continue
    in_ns "$OLD" iptables -w -A INPUT -s "$SUB.$n" -j DROP
    in_ns "$OLD" iptables -w -A OUTPUT -d "$SUB.$n" -j DROP
done
if wait_for 15 not_held_by "$OLD"; then
    ok "node $OLD cut off: released the VIP"
else
    fail "node $OLD cut off but still holds the VIP"
fi
wait_for 15 held_by_other "$OLD"
NEW=$(holders | tr ' ' '\n' | grep -v "^$OLD\$" | head -1)
rel=$(grep 'vip: released' "$DIR/n$OLD.log" | grep 'lease lapsed' | tail -1 | awk '{print $1}')
cla=$(grep 'vip: claimed' "$DIR/n${NEW:-0}.log" 2>/dev/null | tail -1 | awk '{print $1}')
if [ -n "$rel" ] && [ -n "$cla" ]; then
    r=$(date -d "$rel" +%s%3N); c=$(date -d "$cla" +%s%3N)
    if [ "$r" -lt "$c" ]; then
        ok "lease: node $OLD released ($rel) $((c - r)) ms before node $NEW claimed ($cla)"
    else
        fail "node $NEW claimed ($cla) before node $OLD released ($rel)"
    fi
else
    fail "no release/claim pair in the logs (released '$rel', claimed '$cla' by '${NEW:-none}')"
fi
in_ns "$OLD" iptables -w -F INPUT
in_ns "$OLD" iptables -w -F OUTPUT
wait_for 30 voters3
wait_for 10 one_holder || fail "after healing: '$(holders)'"

# --- graceful stop -------------------------------------------------------------
OLD=$(holder)
stop_node "$OLD" TERM
if grep -q 'vip: released.*handing leadership over' "$DIR/n$OLD.log" && wait_for 10 one_holder &&
    [ "$(holder)" != "$OLD" ]; then
    ok "SIGTERM: node $OLD released before handing over; node $(holder) holds it"
else
    fail "graceful stop: holders '$(holders)'"
fi
wait_for 10 vip_write /vip/d 4 && ok "write through the VIP after the handover" || fail "no write after the handover"

# --- nothing bad in the logs ---------------------------------------------------
if grep -E 'Assertion|AddressSanitizer|runtime error' "$DIR"/n*.log; then
    fail "a node's log has an assertion or sanitizer report"
fi
echo "test_vip: $FAILS failure(s)"
[ "$FAILS" = 0 ]
