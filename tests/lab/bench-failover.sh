#!/bin/bash
# bench-failover.sh - make bench-failover: how long requests through the VIP
# fail when the VIP holder is killed (kill -9) or paused (SIGSTOP), clusterd
# (profiles default and fast) side by side with keepalived 2.2.7 moving the
# same VIP in the same namespaces (VRRPv2 advert_int 1, VRRPv3 advert_int 0.1).
#
# Topology (tests/lab/lib.sh): hub namespace with a bridge, parents 1 2 3,
# client c.  The prober (build/tests/vip_probe, in the client namespace)
# takes t0, sends the nemesis signal itself, then tries a request through
# the VIP every 10 ms (fresh connection, FAILOVER_PROBE_TIMEOUT_MS per
# attempt) and prints the time of the first success.  clusterd: a put
# (cd_client_put); the client namespace rejects TCP to the nodes' own API
# addresses, so a not-leader redirect cannot bypass the VIP.  keepalived:
# a one-line echo service (vip_probe serve) in each node namespace; the
# nemesis hits the whole "node" (keepalived's two processes and the echo
# service), since a killed/paused keepalived alone leaves the VIP and a
# working service behind.
#
# Kill round: kill -9 the holder, measure, restart it, wait for 3 reachable
# voters (keepalived: the restarted MASTER preempts back) and one holder.
# Pause round: SIGSTOP, measure, SIGCONT, wait to converge.  After each
# round's convergence a second VIP holder counts as a double-holder window.
#
# Knobs: FAILOVER_ROUNDS (20; both nemeses), FAILOVER_KILLS, FAILOVER_PAUSES,
# FAILOVER_SYSTEMS ("cd-default cd-fast ka-v2 ka-v3"),
# FAILOVER_PROBE_TIMEOUT_MS (100), FAILOVER_LIMIT_MS (20000: a failover
# slower than this counts as a timeout, at this value), FAILOVER_WATCHDOG
# (1500 s), LAB_KEEP_DIR=1 keeps the logs.  Needs root.
set -u
cd "$(dirname "$0")/../.." || exit 1
BUILD=${BUILD:-build}
case $BUILD in /*) ;; *) BUILD=$(pwd)/$BUILD ;; esac
BIN=$BUILD/bin
PROBE=$BUILD/tests/vip_probe
if [ "$(id -u)" != 0 ]; then
    echo "bench-failover: skipped (needs root for network namespaces)"
    exit 0
fi
for f in "$BIN/clusterd" "$BIN/clusterctl" "$PROBE"; do
    [ -x "$f" ] || { echo "bench-failover: $f missing (make it first)"; exit 1; }
done

ROUNDS=${FAILOVER_ROUNDS:-20}
KILLS=${FAILOVER_KILLS:-$ROUNDS}
PAUSES=${FAILOVER_PAUSES:-$ROUNDS}
SYSTEMS=${FAILOVER_SYSTEMS:-cd-default cd-fast ka-v2 ka-v3}
PT=${FAILOVER_PROBE_TIMEOUT_MS:-100}
LIMIT=${FAILOVER_LIMIT_MS:-20000}
HAVE_KA=1
command -v keepalived >/dev/null || HAVE_KA=0

. tests/lab/lib.sh
lab_init fb
lab_watchdog "${FAILOVER_WATCHDOG:-1500}"
START=$SECONDS
lab_topology 1 2 3 c || { echo "bench-failover: topology failed"; exit 1; }
NODES="1 2 3"
VIP=$LAB_SUB.50
API_PORT=7101
ECHO_PORT=7201
RES=$LAB_DIR/results
mkdir -p "$RES"
DOUBLE=0
PROBLEMS=()
note() { echo "bench-failover: $*"; }
problem() { note "PROBLEM: $*"; PROBLEMS+=("$*"); }

# Only the VIP reaches a clusterd API from the client namespace.
for n in $NODES; do
    lab_in c iptables -w -A OUTPUT -p tcp -d "$(lab_addr "$n")" --dport "$API_PORT" \
        -j REJECT --reject-with tcp-reset
done

holders() { lab_vip_holders "$VIP" $NODES; }
one_holder() { [ "$(holders | wc -w)" = 1 ]; }
holder() { holders | awk '{print $1}'; }
check_double() { # SYS ROUND
    local h
    h=$(holders)
    if [ "$(echo "$h" | wc -w)" -gt 1 ]; then
        DOUBLE=$((DOUBLE + 1))
        problem "$1 $2: two VIP holders after convergence: $h"
    fi
}
record() { # SYS NEM ROUND OUTPUT
    local sys=$1 nem=$2 r=$3 out=$4 ms
    if [ -z "$out" ] || [ "${out%% *}" = timeout ]; then
        problem "$sys $nem round $r: no request through the VIP within $LIMIT ms ($out)"
        echo "$LIMIT" >>"$RES/$sys-$nem"
        echo "$r" >>"$RES/$sys-$nem.timeouts"
        return
    fi
    ms=${out%% *}
    echo "$ms" >>"$RES/$sys-$nem"
    printf '  %-10s %-5s %2d: %8s ms  (%s)\n' "$sys" "$nem" "$r" "$ms" "$out"
}

# --- clusterd ----------------------------------------------------------------
CD_PROFILE=
cd_dir() { echo "$LAB_DIR/$CD_PROFILE"; }
cd_api() { echo "$(lab_addr "$1"):$API_PORT"; }
cd_start() { # N [flags]
    local n=$1; shift
    lab_spawn "cd$n" "$n" "$(cd_dir)/n$n.log" "$BIN/clusterd" --data "$(cd_dir)/n$n" \
        --raft "$(lab_addr "$n"):7001" --api "$(cd_api "$n")" --profile "$CD_PROFILE" \
        --set "vip=$VIP/24" --set vip_interface=eth0 "$@"
}
cd_ctl() { lab_in 1 "$BIN/clusterctl" --endpoints "$(cd_api 1),$(cd_api 2),$(cd_api 3)" --timeout 2000 "$@"; }
cd_ready() { # three voters, all reachable
    local m
    m=$(cd_ctl -o json members 2>/dev/null) || return 1
    [ "$(echo "$m" | grep -o '"role":"voter"' | wc -l)" = 3 ] &&
        [ "$(echo "$m" | grep -o '"reachable":true' | wc -l)" = 3 ]
}
cd_probe_ok() { lab_in c "$PROBE" put "$VIP:$API_PORT" --timeout 1000 --limit 1000 >/dev/null; }
cd_converge() { # SYS ROUND
    lab_wait_for 30 cd_ready || { problem "$1 $2: no 3 reachable voters within 30 s"; return 1; }
    lab_wait_for 10 one_holder || problem "$1 $2: holders '$(holders)' 10 s after 3 voters"
    lab_wait_for 10 cd_probe_ok || { problem "$1 $2: no write through the VIP after convergence"; return 1; }
    check_double "$1" "$2"
}

claim_after() { # SYS NEM OLD T0_WALL_MS: ms from the nemesis to the new holder's claim log line
    local n line c
    for n in $(holders); do
        [ "$n" = "$3" ] && continue
        line=$(grep 'vip: claimed' "$(cd_dir)/n$n.log" | tail -1) || continue
        c=$(date -d "$(echo "$line" | awk '{print $1}')" +%s%3N 2>/dev/null) || continue
        [ "$c" -ge "$4" ] && { echo $((c - $4)) >>"$RES/$1-$2-claim"; echo "claim +$((c - $4)) ms by node $n"; return; }
    done
    echo "no claim line"
}

run_clusterd() { # PROFILE
    CD_PROFILE=$1
    local sys=cd-$1 r h pid out t
    mkdir -p "$(cd_dir)"
    note "$sys: forming 3 parents"
    cd_start 1 --bootstrap
    lab_wait_for 10 test -s "$(cd_dir)/n1/join-token" || { problem "$sys: no join token"; return 1; }
    local token
    token=$(cat "$(cd_dir)/n1/join-token")
    cd_start 2 --join "$(cd_api 1)" --token "$token"
    cd_start 3 --join "$(cd_api 1)" --token "$token"
    cd_converge "$sys" form || return 1
    for ((r = 1; r <= KILLS; r++)); do
        h=$(holder); pid=${LAB_PID[cd$h]}
        t=$(lab_now_ms)
        out=$(lab_in c "$PROBE" put "$VIP:$API_PORT" --timeout "$PT" --limit "$LIMIT" \
            --signal KILL --pids "$pid")
        lab_reap "cd$h"
        record "$sys" kill "$r" "$out (killed node $h; holders now: $(holders); $(claim_after "$sys" kill "$h" "$t"))"
        cd_start "$h"
        cd_converge "$sys" "kill $r"
    done
    for ((r = 1; r <= PAUSES; r++)); do
        h=$(holder); pid=${LAB_PID[cd$h]}
        t=$(lab_now_ms)
        out=$(lab_in c "$PROBE" put "$VIP:$API_PORT" --timeout "$PT" --limit "$LIMIT" \
            --signal STOP --pids "$pid")
        record "$sys" pause "$r" "$out (paused node $h; holders now: $(holders); $(claim_after "$sys" pause "$h" "$t"))"
        kill -CONT "$pid"
        t=$(lab_now_ms)
        # The resumed old leader must drop its copy at once.
        if lab_wait_for 3 one_holder; then
            echo "$(($(lab_now_ms) - t))" >>"$RES/$sys-resume-drop"
        else
            problem "$sys pause $r: node $h resumed, holders still '$(holders)' after 3 s"
        fi
        cd_converge "$sys" "pause $r"
    done
    if lab_arping_one_mac c "$VIP"; then note "$sys: arping: one MAC answers for the VIP"; else
        problem "$sys: arping -d: two or no MACs answer for $VIP"; fi
    if grep -E 'Assertion|AddressSanitizer|runtime error' "$(cd_dir)"/n*.log; then
        problem "$sys: assertion or sanitizer report in a node's log"
    fi
    for h in $NODES; do lab_stop "cd$h" TERM; done
    lab_vip_clear "$VIP" 24 $NODES
}

# --- keepalived --------------------------------------------------------------
KA_VER=
ka_dir() { echo "$LAB_DIR/ka-v$KA_VER"; }
ka_conf() { # N
    local n=$1 prio adv peers="" m
    case $n in 1) prio=150 ;; 2) prio=100 ;; *) prio=90 ;; esac
    adv=$([ "$KA_VER" = 3 ] && echo 0.1 || echo 1)
    for m in $NODES; do [ "$m" = "$n" ] || peers+="    $(lab_addr "$m")"$'\n'; done
    cat >"$(ka_dir)/n$n.conf" <<EOC
global_defs {
    router_id ${LAB_RUN}n$n
    vrrp_version $KA_VER
}
vrrp_instance VI_1 {
    state BACKUP
    interface eth0
    virtual_router_id 77
    priority $prio
    advert_int $adv
    unicast_src_ip $(lab_addr "$n")
    unicast_peer {
$peers    }
    virtual_ipaddress {
        $VIP/24 dev eth0
    }
}
EOC
}
ka_start() { # N
    local n=$1 d
    d=$(ka_dir)
    rm -f "$d/n$n.pid" "$d/n$n.vrrp.pid" "$d/n$n.chk.pid"
    lab_spawn "ka$n" "$n" "$d/n$n.log" keepalived -f "$d/n$n.conf" -n -l -D -P \
        -p "$d/n$n.pid" -r "$d/n$n.vrrp.pid" -c "$d/n$n.chk.pid"
    lab_spawn "echo$n" "$n" "$d/echo$n.log" "$PROBE" serve "0.0.0.0:$ECHO_PORT" "n$n"
    lab_wait_for 10 test -s "$d/n$n.vrrp.pid" || problem "ka-v$KA_VER: node $n: no VRRP child"
}
ka_vrrp_pid() { cat "$(ka_dir)/n$1.vrrp.pid" 2>/dev/null; }
ka_pids() { echo "$(ka_vrrp_pid "$1"),${LAB_PID[ka$1]},${LAB_PID[echo$1]}"; }
ka_probe_ok() { lab_in c "$PROBE" echo "$VIP:$ECHO_PORT" --timeout 500 --limit 500 >/dev/null; }
ka_holder_is_1() { [ "$(holders)" = "1 " ]; }
ka_converge() { # SYS ROUND
    lab_wait_for 20 ka_holder_is_1 || problem "$1 $2: holders '$(holders)' 20 s after restart"
    lab_wait_for 10 ka_probe_ok || { problem "$1 $2: no echo through the VIP"; return 1; }
    # Let the backups hear the master's adverts again (their timers restart).
    sleep "$([ "$KA_VER" = 3 ] && echo 0.5 || echo 2)"
    check_double "$1" "$2"
}
ka_stop_node() { # N: by PID, the VRRP child too
    local v
    v=$(ka_vrrp_pid "$1")
    lab_stop "ka$1" TERM
    [ -n "$v" ] && kill -0 "$v" 2>/dev/null && kill -9 "$v" 2>/dev/null
    lab_stop "echo$1" KILL
}

run_keepalived() { # VERSION
    KA_VER=$1
    local sys=ka-v$1 r h out v
    mkdir -p "$(ka_dir)"
    for h in $NODES; do ka_conf "$h"; done
    note "$sys: starting 3 keepalived (node 1 priority 150)"
    for h in $NODES; do ka_start "$h"; done
    ka_converge "$sys" start || return 1
    for ((r = 1; r <= KILLS; r++)); do
        h=$(holder)
        out=$(lab_in c "$PROBE" echo "$VIP:$ECHO_PORT" --timeout "$PT" --limit "$LIMIT" \
            --signal KILL --pids "$(ka_pids "$h")")
        lab_reap "ka$h"; lab_reap "echo$h"
        record "$sys" kill "$r" "$out (killed node $h; holders now: $(holders))"
        ka_start "$h"
        ka_converge "$sys" "kill $r"
    done
    for ((r = 1; r <= PAUSES; r++)); do
        h=$(holder)
        v=$(ka_pids "$h")
        out=$(lab_in c "$PROBE" echo "$VIP:$ECHO_PORT" --timeout "$PT" --limit "$LIMIT" \
            --signal STOP --pids "$v")
        record "$sys" pause "$r" "$out (paused node $h; holders now: $(holders))"
        kill -CONT ${v//,/ } 2>/dev/null
        ka_converge "$sys" "pause $r"
    done
    for h in $NODES; do ka_stop_node "$h"; done
    lab_vip_clear "$VIP" 24 $NODES
}

# --- run ---------------------------------------------------------------------
note "run $LAB_RUN, $KILLS kills + $PAUSES pauses per system, systems: $SYSTEMS"
for s in $SYSTEMS; do
    case $s in
    cd-default) run_clusterd default ;;
    cd-fast) run_clusterd fast ;;
    ka-v2 | ka-v3)
        if [ "$HAVE_KA" = 1 ]; then run_keepalived "${s#ka-v}"; else note "keepalived not installed: $s skipped"; fi ;;
    esac
done

# --- report ------------------------------------------------------------------
declare -A P50 P99 MAX N RATIO
for s in cd-default cd-fast ka-v2 ka-v3; do
    for nem in kill pause; do
        if [ -s "$RES/$s-$nem" ]; then
            read -r N[$s-$nem] P50[$s-$nem] P99[$s-$nem] MAX[$s-$nem] < <(lab_stats "$RES/$s-$nem")
        fi
    done
done
label() { case $1 in cd-default) echo "clusterd default" ;; cd-fast) echo "clusterd fast" ;;
    ka-v2) echo "keepalived advert 1" ;; ka-v3) echo "keepalived VRRPv3 0.1" ;; esac; }
echo
printf '%-24s %6s %8s %8s %8s   %6s %8s %8s %8s\n' "failover (ms)" "kills" "p50" "p99" "max" \
    "pauses" "p50" "p99" "max"
for s in cd-default cd-fast ka-v2 ka-v3; do
    [ -n "${N[$s-kill]:-}${N[$s-pause]:-}" ] || continue
    printf '%-24s %6s %8s %8s %8s   %6s %8s %8s %8s\n' "$(label $s)" \
        "${N[$s-kill]:--}" "${P50[$s-kill]:--}" "${P99[$s-kill]:--}" "${MAX[$s-kill]:--}" \
        "${N[$s-pause]:--}" "${P50[$s-pause]:--}" "${P99[$s-pause]:--}" "${MAX[$s-pause]:--}"
done
echo
echo "clusterd: nemesis to the new leader's 'vip: claimed' log line (ms; wall clock, from the harness):"
for s in cd-default cd-fast; do
    for nem in kill pause; do
        [ -s "$RES/$s-$nem-claim" ] || continue
        read -r n a b c < <(lab_stats "$RES/$s-$nem-claim")
        printf '  %-18s %-5s n=%-3s p50 %5s  p99 %5s  max %5s\n' "$(label $s)" "$nem" "$n" "$a" "$b" "$c"
        echo "${s#cd-}_${nem} $a $b" >>"$RES/claim-figures"
    done
done
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.2f", a / b; else print "-" }'; }
echo
echo "ratios keepalived / clusterd:"
for nem in kill pause; do
    for cd in default fast; do
        for kv in v2 v3; do
            for q in p50 p99; do
                if [ "$q" = p50 ]; then a=${P50[ka-$kv-$nem]:-}; b=${P50[cd-$cd-$nem]:-}; else
                    a=${P99[ka-$kv-$nem]:-}; b=${P99[cd-$cd-$nem]:-}; fi
                [ -n "$a" ] && [ -n "$b" ] || continue
                printf '  %-5s %-3s keepalived %s / clusterd %-7s = %s\n' "$nem" "$q" "$kv" "$cd" "$(ratio "$a" "$b")"
                RATIO[$nem-$cd-$kv-$q]=$(ratio "$a" "$b")
            done
        done
    done
done
echo
for s in cd-default cd-fast ka-v2 ka-v3; do
    for nem in kill pause; do
        [ -n "${N[$s-$nem]:-}" ] || continue
        case $s in cd-*) name=failover_${nem}_${s#cd-} ;; ka-*) name=keepalived_${nem}_${s#ka-} ;; esac
        for q in p50 p99 max; do
            case $q in p50) v=${P50[$s-$nem]} ;; p99) v=${P99[$s-$nem]} ;; max) v=${MAX[$s-$nem]} ;; esac
            echo "figure ${name}_${q}_ms $v ms"
        done
        echo "figure ${name}_timeouts $( [ -s "$RES/$s-$nem.timeouts" ] && wc -l <"$RES/$s-$nem.timeouts" || echo 0) count"
    done
done
# The issue's names.
[ -n "${P99[cd-fast-kill]:-}" ] && echo "figure vip_failover_kill_fast_p99_ms ${P99[cd-fast-kill]} ms"
[ -n "${P99[cd-fast-pause]:-}" ] && echo "figure vip_failover_pause_fast_p99_ms ${P99[cd-fast-pause]} ms"
[ -n "${P99[cd-default-kill]:-}" ] && echo "figure vip_failover_kill_default_p99_ms ${P99[cd-default-kill]} ms"
[ -n "${P99[ka-v2-kill]:-}" ] && echo "figure keepalived_default_p99_ms ${P99[ka-v2-kill]} ms"
[ -n "${P99[ka-v3-kill]:-}" ] && echo "figure keepalived_v3_fast_p99_ms ${P99[ka-v3-kill]} ms"
for s in cd-default cd-fast; do
    [ -s "$RES/$s-resume-drop" ] &&
        echo "figure failover_resume_drop_${s#cd-}_max_ms $(sort -n "$RES/$s-resume-drop" | tail -1) ms"
done
for k in "${!RATIO[@]}"; do
    IFS=- read -r nem cd kv q <<<"$k"
    echo "figure failover_ratio_${nem}_${cd}_vs_keepalived_${kv}_${q} ${RATIO[$k]} ratio"
done | sort
[ -s "$RES/claim-figures" ] && while read -r k a b; do
    echo "figure vip_claim_${k}_p50_ms $a ms"
    echo "figure vip_claim_${k}_p99_ms $b ms"
done <"$RES/claim-figures"
echo "figure double_holder_windows $DOUBLE count"
echo "figure bench_failover_seconds $((SECONDS - START)) s"
echo
if [ "${#PROBLEMS[@]}" -gt 0 ]; then
    note "${#PROBLEMS[@]} problem(s):"
    printf '  %s\n' "${PROBLEMS[@]}"
    LAB_KEEP_DIR=1
else
    note "no problems observed"
fi
note "done in $((SECONDS - START)) s"
exit 0
