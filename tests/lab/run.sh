#!/bin/bash
# tests/lab/run.sh - one run of the fault lab: a scenario under one seed.
#
#   run.sh SCENARIO SEED
#
# Topology (tests/lab/lib.sh): a hub namespace with a bridge; parents 1..N
# (LAB_PARENTS, 3 or 5), children k1 and k2, a client namespace c and an
# admin namespace a, each with its own veth; ip_forward=0 in every node.
# The client namespace reaches the parents' API only through the VIP.
#
# A run: write the seeded plan (tests/lab/plan.sh) -> form the cluster by
# join -> a child joins -> the workload (build/tests/lab_client, in c,
# through the VIP) and a child monitor (in k1) run for LAB_DURATION
# seconds while the nemesis executes the plan -> heal everything -> wait
# for convergence -> final read through the VIP -> stop the child and the
# parents -> check.  The checks:
#   - linearizability of the register history, every acknowledged set
#     add in the final read, children's revisions never going back and
#     their reads never failing, failover times (build/lab-checker);
#   - one VIP holder after convergence (addresses and `arping -d` from c);
#     no window in which two running parents held the VIP (per-node
#     address timeline from `ip -ts monitor address`, see vip_windows);
#   - every parent's store identical at the same revision, and the
#     child's cache identical to them;
#   - no assertion, sanitizer report or core file; no parent that exited
#     by itself except with 70 (the fail-safe exit on a store error) in a
#     scenario that breaks disks.
# The last line is "RESULT <scenario> <seed> pass|fail <seconds> <why>".
# Exit 0 on pass, 1 on a failed check, 2 when the run could not be set up.
#
# Knobs: LAB_DURATION (s; each scenario has its own, plan.sh), LAB_TAIL (s
# of workload after the plan's last step, 3), LAB_PARENTS
# (3), LAB_PROFILE (fast), LAB_RATE (operations a second per client thread,
# 250), LAB_THREADS (4),
# LAB_CONTROL (nosync | nolease: a negative control, see suite.sh),
# LAB_SAN (a sanitizer build dir instead of build/), LAB_KEEP_DIR=1,
# LAB_RUN_TIMEOUT (s, 180), LAB_VERBOSE=1.  Needs root.
set -u
cd "$(dirname "$0")/../.." || exit 2
SCEN=${1:?usage: run.sh SCENARIO SEED}
SEED=${2:?usage: run.sh SCENARIO SEED}
BUILD=${LAB_SAN:-${BUILD:-build}}
case $BUILD in /*) ;; *) BUILD=$(pwd)/$BUILD ;; esac
BIN=$BUILD/bin
TOOLS=$BUILD/tests
CHECKER=${LAB_CHECKER:-$(pwd)/build/lab-checker}
DURATION=${LAB_DURATION:-}
NPARENTS=${LAB_PARENTS:-3}
PROFILE=${LAB_PROFILE:-fast}
CONTROL=${LAB_CONTROL:-}
T_START=$SECONDS

if [ "$(id -u)" != 0 ]; then
    echo "RESULT $SCEN $SEED fail 0 needs root (network namespaces)"
    exit 2
fi
for f in "$BIN/clusterd" "$BIN/clusterctl" "$BIN/clusterd-child" "$BIN/clusterd-store" \
    "$TOOLS/lab_client" "$TOOLS/nfq_delay" "$TOOLS/lostwrites" \
    "$TOOLS/liblostwrites.so" "$TOOLS/vip_probe" "$CHECKER"; do
    [ -x "$f" ] || [ -f "$f" ] || {
        echo "RESULT $SCEN $SEED fail 0 missing $f (make lab builds it)"
        exit 2
    }
done

. tests/lab/lib.sh
. tests/lab/plan.sh
[ -n "$DURATION" ] || DURATION=$(lab_duration "$SCEN")
LAB_CLEANUP_HOOK=run_cleanup
lab_init lb
lab_watchdog "${LAB_RUN_TIMEOUT:-180}"
D=$LAB_DIR
LOG=$D/run.log
PROBLEMS=()
say() { echo "$(date -u +%H:%M:%S.%3N) $*" >>"$LOG"; [ -n "${LAB_VERBOSE:-}" ] && echo "lab: $*" >&2; return 0; }
problem() { say "PROBLEM: $*"; PROBLEMS+=("$*"); }
finish() { # pass|fail WHY
    local secs=$((SECONDS - T_START))
    echo "RESULT $SCEN $SEED $1 $secs ${2:-}"
    [ "$1" = pass ] && exit 0
    LAB_KEEP_DIR=1
    exit 1
}
setup_fail() { say "setup: $*"; echo "RESULT $SCEN $SEED fail $((SECONDS - T_START)) setup: $*"; LAB_KEEP_DIR=1; exit 2; }

PARENTS=$(seq 1 "$NPARENTS" | tr '\n' ' ')
lab_topology $PARENTS k1 k2 c a || setup_fail "topology"
VIP=$LAB_SUB.50
API_PORT=7101
RAFT_PORT=7001
RANDOM=$SEED # the harness's own choices (which follower) replay too

declare -A ST=()      # parent -> up | paused | killed | left | exited
declare -A JOINED=()  # parent -> 1 once its data dir belongs to the cluster
declare -A CLOCK=()   # parent -> libfaketime settings for its next start
declare -A PRELOAD=() # parent -> fiu | lost (extra preloads)
declare -A TMPFS=()   # parent -> 1 when its data dir is a small tmpfs
declare -A CST=()     # child -> up | left
CHILD_GEN=0
FAULT_DISK=0          # a disk nemesis ran: exit 70 is then expected
NEMESIS_EVENTS=$D/events.jsonl
: >"$NEMESIS_EVENTS"

addr() { lab_addr "$1"; }
api() { echo "$(addr "$1"):$API_PORT"; }
all_api() { local n s=""; for n in $PARENTS; do s+="${s:+,}$(api "$n")"; done; echo "$s"; }
now_ns() { "$TOOLS/lab_client" --now; }
event() { # KIND TARGET [DETAIL]: the nemesis log (monotonic ns, wall ms), written
    # once the fault has taken effect (the checker times recovery from it)
    printf '{"t":%s,"wall_ms":%s,"event":"%s","node":"%s","detail":"%s"}\n' \
        "$(now_ns)" "$(lab_now_ms)" "$1" "$2" "${3:-}" >>"$NEMESIS_EVENTS"
    say "nemesis: $1 ${2} ${3:-}"
}

# --- parents -----------------------------------------------------------------
parent_env() { # N: the environment its next start gets
    local n=$1 pre=()
    case ${PRELOAD[$n]:-} in
    *lost*)
        pre+=("$TOOLS/liblostwrites.so")
        echo "LOSTWRITES_DIR=$D/p$n"
        echo "LOSTWRITES_DIRS=posix"
        [ -n "${NOSYNC_ON:-}" ] && echo "LOSTWRITES_NOSYNC=1"
        ;;
    esac
    # libfiu's preload crashes a sanitizer build at start (SIGSEGV in
    # ASan's early interceptors): no EIO nemesis there.
    case ${PRELOAD[$n]:-}${LAB_SAN:+san} in
    *fiu)
        pre+=(/usr/lib/fiu/fiu_run_preload.so /usr/lib/fiu/fiu_posix_preload.so)
        echo "FIU_CTRL_FIFO=$D/fiu-p$n"
        echo "FIU_ENABLE="
        ;;
    esac
    if [ -n "${CLOCK[$n]:-}" ]; then
        pre+=(/usr/lib/x86_64-linux-gnu/faketime/libfaketimeMT.so.1)
        echo "${CLOCK[$n]}" | tr ' ' '\n' | sed 's/_/ /g'
    fi
    if [ ${#pre[@]} -gt 0 ]; then
        echo "LD_PRELOAD=${pre[*]}"
        # An ASan build refuses to run after other preloads otherwise.
        [ -n "${LAB_SAN:-}" ] && echo "ASAN_OPTIONS=verify_asan_link_order=0"
    fi
    return 0
}

start_parent() { # N
    local n=$1 args envs=()
    mkdir -p "$D/p$n"
    args=(--data "$D/p$n" --raft "$(addr "$n"):$RAFT_PORT" --api "$(api "$n")"
        --profile "$PROFILE" --set "vip=$VIP/24" --set vip_interface=eth0)
    [ "$CONTROL" = nolease ] && args+=(--set vip_unsafe_no_lease=yes)
    if [ -z "${JOINED[$n]:-}" ]; then
        if [ "$n" = 1 ] && [ -z "${TOKEN:-}" ]; then
            args+=(--bootstrap --set "voters=$NPARENTS")
        else
            args+=(--join "$(all_api)" --token "$(new_token)")
        fi
        JOINED[$n]=1
    fi
    mapfile -t envs < <(parent_env "$n")
    # Started from its data dir, so a core file would land there.
    lab_spawn "p$n" "$n" "$D/p$n.log" env -C "$D/p$n" "${envs[@]}" "$BIN/clusterd" "${args[@]}"
    ST[$n]=up
    printf '%s start %s\n' "$(lab_now_ms)" "$n" >>"$D/proc-timeline"
}

ctl() { # clusterctl from the admin namespace, straight to the parents
    lab_in a "$BIN/clusterctl" --endpoints "$(all_api)" --timeout "${CTL_TIMEOUT:-5000}" "$@"
}
new_token() {
    local t
    t=$(ctl token create 2>>"$LOG" | awk '{print $1}' | head -1)
    [ -n "$t" ] || t=$TOKEN
    echo "$t"
}

running() { # the parents whose process runs and is not paused
    local n out=""
    for n in $PARENTS; do [ "${ST[$n]}" = up ] && out+="$n "; done
    echo "$out"
}

leader() { # the parent leading now: the VIP holder, else its own word
    local n h s
    for h in $(lab_vip_holders "$VIP" $(running)); do echo "$h"; return; done
    for n in $(running); do
        s=$(lab_in a "$BIN/clusterctl" --endpoints "$(api "$n")" --timeout 300 -o json status 2>/dev/null |
            jq -r 'select(.state=="leader") | .id' 2>/dev/null)
        [ -n "$s" ] && { echo "$n"; return; }
    done
}
follower() { # a running parent that does not lead, chosen by the seed
    local l c=()
    l=$(leader)
    for n in $(running); do [ "$n" != "$l" ] && c+=("$n"); done
    [ ${#c[@]} -gt 0 ] && echo "${c[$((RANDOM % ${#c[@]}))]}"
}
target() { # leader | follower | small | N
    case $1 in leader) leader ;; follower) follower ;; small) echo "$SMALL" ;; *) echo "$1" ;; esac
}
lost_target() { # ROLE: that parent if it runs the lost-writes shim, else one that does
    local n m
    n=$(target "$1")
    case ${PRELOAD[$n]:-} in *lost*) echo "$n"; return ;; esac
    for m in $(running); do case ${PRELOAD[$m]:-} in *lost*) echo "$m"; return ;; esac; done
}

kill_parent() { # N SIG: the process only; the node's state is the caller's
    local n=$1
    lab_signal "p$n" "$2"
    [ "$2" = KILL ] && { lab_reap "p$n"; printf '%s stop %s\n' "$(lab_now_ms)" "$n" >>"$D/proc-timeline"; }
    return 0
}

# --- children ----------------------------------------------------------------
start_child() { # NAME [--token T]
    local k=$1; shift
    mkdir -p "$D/$k"
    lab_spawn "$k" "$k" "$D/$k.log" env -C "$D/$k" "$BIN/clusterd-child" --data "$D/$k" \
        --endpoints "$VIP:$API_PORT,$(all_api)" --set report_interval_ms=250 "$@"
    CST[$k]=up
}
start_monitor() { # CHILD: sample the child's cache revision (local reads)
    local k=$1
    CHILD_GEN=$((CHILD_GEN + 1))
    lab_wait_for 20 child_following "$k" || problem "child $k does not follow"
    lab_spawn "mon-$k" "$k" "$D/mon-$k.log" "$TOOLS/lab_client" --child-monitor "$D/$k/cache.mdb" \
        --out "$D/child-$k-$CHILD_GEN.jsonl" --duration-s $((DURATION + 120))
}
child_following() { # CHILD
    ctl -o json children 2>/dev/null | jq -e --arg h "$(addr "$1")" \
        '.children[] | select(any(.addresses[]; . == $h)) | select(.state=="following")' >/dev/null
}

# --- the network -----------------------------------------------------------------
drop_between() { # A B: no packet between parents A and B, both ways
    lab_in "$1" iptables -w -A INPUT -s "$(addr "$2")" -j DROP
    lab_in "$1" iptables -w -A OUTPUT -d "$(addr "$2")" -j DROP
    lab_in "$2" iptables -w -A INPUT -s "$(addr "$1")" -j DROP
    lab_in "$2" iptables -w -A OUTPUT -d "$(addr "$1")" -j DROP
}
heal_net() {
    local n
    for n in $PARENTS; do lab_stop "nfq$n" TERM; done
    for n in $PARENTS k1 k2; do
        lab_in "$n" iptables -w -F INPUT
        lab_in "$n" iptables -w -F OUTPUT
    done
    lab_in h nft delete table bridge lab 2>/dev/null
    return 0
}
nft_bridge() { # RULE...: a drop rule on the hub's bridge
    lab_in h nft list table bridge lab >/dev/null 2>&1 || {
        lab_in h nft add table bridge lab
        lab_in h nft add chain bridge lab fwd '{ type filter hook forward priority 0; }'
    }
    lab_in h nft add rule bridge lab fwd "$@"
}
shuffled() { # SEED WORDS...: the words in a seeded order
    local s=$1; shift
    printf '%s\n' "$@" | awk -v s="$s" 'BEGIN { srand(s) } { print rand() "\t" $0 }' | sort -n | cut -f2
}

# --- the nemesis -------------------------------------------------------------------
do_step() { # ACTION ARGS...
    local a=$1 n m x; shift
    case $a in
    kill)
        n=$(target "$1")
        [ -n "$n" ] || { say "nemesis: kill $1: no target"; return; }
        kill_parent "$n" KILL; ST[$n]=killed
        event kill "$n" "$1" ;;
    restart-killed)
        for n in $PARENTS; do
            if [ "${ST[$n]}" = killed ]; then event restart "$n"; start_parent "$n"; fi
        done ;;
    pause)
        n=$(target "$1")
        [ -n "$n" ] || return
        kill_parent "$n" STOP; ST[$n]=paused
        printf '%s stop %s\n' "$(lab_now_ms)" "$n" >>"$D/proc-timeline"
        event pause "$n" "$1" ;;
    resume-all)
        for n in $PARENTS; do
            if [ "${ST[$n]}" = paused ]; then
                event resume "$n"; kill_parent "$n" CONT; ST[$n]=up
                printf '%s start %s\n' "$(lab_now_ms)" "$n" >>"$D/proc-timeline"
            fi
        done ;;
    isolate)
        n=$(target "$1")
        [ -n "$n" ] || return
        if [ "$2" = all ]; then
            lab_in "$n" iptables -w -A INPUT -i eth0 -j DROP
            lab_in "$n" iptables -w -A OUTPUT -o eth0 -j DROP
        else
            for m in $PARENTS; do [ "$m" != "$n" ] && drop_between "$n" "$m"; done
        fi
        event isolate "$n" "$1 $2" ;;
    halves) # a seeded split, the smaller half first
        local order=() half
        mapfile -t order < <(shuffled "$1" $PARENTS)
        half=$(((${#order[@]} - 1) / 2))
        [ "$half" -lt 1 ] && half=1
        event partition "${order[*]:0:$half}" "| ${order[*]:$half}"
        for n in "${order[@]:0:$half}"; do
            for m in "${order[@]:$half}"; do drop_between "$n" "$m"; done
        done ;;
    ring) # each parent reaches its two neighbours in a seeded ring only
        local order=() i j k c=${#order[@]}
        mapfile -t order < <(shuffled "$1" $PARENTS)
        c=${#order[@]}
        event ring "${order[*]}"
        for ((i = 0; i < c; i++)); do
            for ((j = i + 1; j < c; j++)); do
                k=$(((j - i + c) % c))
                [ "$k" = 1 ] || [ "$k" = $((c - 1)) ] || drop_between "${order[$i]}" "${order[$j]}"
            done
        done ;;
    bridge) # two halves sharing one bridge node that sees both (5 parents)
        local order=() half
        mapfile -t order < <(shuffled "$1" $PARENTS)
        half=$((${#order[@]} / 2))
        event bridge "${order[*]:0:$half} | ${order[$half]} | ${order[*]:$((half + 1))}"
        for n in "${order[@]:0:$half}"; do
            for m in "${order[@]:$((half + 1))}"; do drop_between "$n" "$m"; done
        done ;;
    oneway) # packets from A to B dropped on the bridge, B to A pass
        n=$(target "$1"); m=$(target "$2")
        [ -n "$n" ] && [ -n "$m" ] || return
        event oneway "$n" "to $m"
        nft_bridge iifname "v$n" oifname "v$m" drop ;;
    slow-in) # NODE DELAY_MS: the node's incoming packets held DELAY_MS
        n=$(target "$1")
        [ -n "$n" ] || return
        event slow-in "$n" "$1 ${2} ms"
        lab_spawn "nfq$n" "$n" "$D/nfq$n.log" "$TOOLS/nfq_delay" --queue 7 --delay-ms "$2" \
            --jitter-ms 0 --loss 0 --seed 1
        lab_in "$n" iptables -w -I INPUT -i eth0 -j NFQUEUE --queue-num 7 --queue-bypass ;;
    heal-net)
        event heal-net all; heal_net ;;
    flaky) # DELAY_MS JITTER_MS LOSS SEED: every parent's eth0 through nfq_delay
        event flaky all "delay $1 jitter $2 loss $3"
        for n in $PARENTS; do
            lab_spawn "nfq$n" "$n" "$D/nfq$n.log" "$TOOLS/nfq_delay" --queue 7 --delay-ms "$1" \
                --jitter-ms "$2" --loss "$3" --seed "$(($4 + n))"
            lab_in "$n" iptables -w -I INPUT -i eth0 -j NFQUEUE --queue-num 7 --queue-bypass
            lab_in "$n" iptables -w -I OUTPUT -o eth0 -j NFQUEUE --queue-num 7 --queue-bypass
        done ;;
    flaky-off)
        event flaky-off all
        for n in $PARENTS; do
            lab_in "$n" iptables -w -D INPUT -i eth0 -j NFQUEUE --queue-num 7 --queue-bypass 2>/dev/null
            lab_in "$n" iptables -w -D OUTPUT -o eth0 -j NFQUEUE --queue-num 7 --queue-bypass 2>/dev/null
            lab_stop "nfq$n" TERM
        done ;;
    clock-rate) # restart a parent whose clocks (monotonic too) run at a rate
        n=$(target "$1")
        [ -n "$n" ] || return
        event clock-rate "$n" "$1 x$2"
        kill_parent "$n" TERM; lab_stop "p$n" TERM
        printf '%s stop %s\n' "$(lab_now_ms)" "$n" >>"$D/proc-timeline"
        CLOCK[$n]="FAKETIME=+0_x$2 FAKETIME_NO_CACHE=0"
        start_parent "$n" ;;
    clock-bump) # move a parent's wall clock (it runs with a timestamp file)
        n=$(target "$1")
        [ -n "$n" ] || return
        event clock-bump "$n" "$1 ${2}s"
        echo "$2" >"$D/faketime-p$n" ;; # libfaketime: "+N" / "-N" seconds
    fiu-eio) # the next fdatasync of that parent fails with EIO
        [ -n "${LAB_SAN:-}" ] && { say "nemesis: fiu-eio skipped (sanitizer build)"; return; }
        n=$(target "$1")
        [ -n "$n" ] || return
        event fiu-eio "$n" "$1"
        FAULT_DISK=1
        fiu-ctrl -f "$D/fiu-p$n" -c "enable name=posix/io/sync/*,failinfo=5" "${LAB_PID[p$n]}" 2>>"$LOG" ||
            say "fiu-ctrl failed for $n"
        FIU_ON=$n ;;
    fiu-off)
        n=${FIU_ON:-}
        [ -n "$n" ] && [ "${ST[$n]}" = up ] && lab_alive "p$n" &&
            fiu-ctrl -f "$D/fiu-p$n" -c "disable name=posix/io/sync/*" "${LAB_PID[p$n]}" 2>/dev/null
        FIU_ON=
        event fiu-off "${n:-none}"
        reap_exited ;;
    fill-disk) # fill the tmpfs under a parent's data dir
        n=$(target "$1")
        [ -n "$n" ] || return
        [ -n "${TMPFS[$n]:-}" ] || { say "fill-disk: $n has no tmpfs"; return; }
        event fill-disk "$n" "$1"
        FAULT_DISK=1
        dd if=/dev/zero of="$D/p$n/filler" bs=1M 2>/dev/null
        FILLED=$n ;;
    unfill-disk)
        [ -n "${FILLED:-}" ] && rm -f "$D/p$FILLED/filler"
        event unfill-disk "${FILLED:-none}"
        FILLED=
        reap_exited ;;
    lose-unsynced) # power loss of one parent: kill, roll back, restart
        n=$(lost_target "$1")
        [ -n "$n" ] || return
        event lose-unsynced "$n" "$1"
        kill_parent "$n" KILL
        "$TOOLS/lostwrites" rollback "$D/p$n" >>"$LOG" 2>&1 || problem "lostwrites rollback failed on $n"
        start_parent "$n" ;;
    power-loss) # every parent at once
        for n in $PARENTS; do
            [ "${ST[$n]}" = up ] || [ "${ST[$n]}" = paused ] || continue
            kill_parent "$n" KILL; ST[$n]=killed
        done
        event power-loss all
        for n in $PARENTS; do
            case ${PRELOAD[$n]:-} in *lost*) ;; *) continue ;; esac
            "$TOOLS/lostwrites" rollback "$D/p$n" >>"$LOG" 2>&1 || problem "lostwrites rollback failed on $n"
        done ;;
    power-on)
        event power-on all
        for n in $PARENTS; do [ "${ST[$n]}" = killed ] && start_parent "$n"; done ;;
    parent-leave) # the parent leaves the cluster; its data dir goes
        n=$(target "$1")
        [ -n "$n" ] || return
        event parent-leave "$n" "$1"
        if ! lab_in a "$BIN/clusterctl" --endpoints "$(all_api)" --timeout 10000 leave \
            --node "$(api "$n")" >>"$LOG" 2>&1; then
            problem "clusterctl leave --node $(api "$n") failed"
            return
        fi
        lab_stop "p$n" TERM
        printf '%s stop %s\n' "$(lab_now_ms)" "$n" >>"$D/proc-timeline"
        ST[$n]=left
        LEFT=$n ;;
    parent-rejoin)
        n=${LEFT:-}
        [ -n "$n" ] || return
        event parent-rejoin "$n"
        rm -rf "$D/p$n"
        unset "JOINED[$n]"
        start_parent "$n"
        LEFT= ;;
    child-join)
        event child-join k2
        start_child k2 --token "$(new_token)"
        start_monitor k2 ;;
    child-leave)
        event child-leave k1
        lab_in k1 "$BIN/clusterctl" --endpoints "$(all_api)" --timeout 10000 leave --child \
            --data "$D/k1" >>"$LOG" 2>&1 || problem "clusterctl leave --child on k1 failed"
        lab_stop "mon-k1" TERM
        lab_stop k1 TERM
        CST[k1]=left ;;
    child-rejoin)
        event child-rejoin k1
        rm -rf "$D/k1"
        start_child k1 --token "$(new_token)"
        start_monitor k1 ;;
    heal)
        event heal all
        heal_all ;;
    *) problem "unknown plan step: $a $*" ;;
    esac
}

reap_exited() { # a parent whose process ended by itself
    local n rc
    for n in $PARENTS; do
        [ "${ST[$n]}" = up ] || continue
        lab_alive "p$n" && continue
        wait "${LAB_PID[p$n]}" 2>/dev/null
        rc=$?
        unset "LAB_PID[p$n]"
        printf '%s stop %s\n' "$(lab_now_ms)" "$n" >>"$D/proc-timeline"
        event exited "$n" "status $rc"
        if [ "$rc" = 70 ] && [ "$FAULT_DISK" = 1 ]; then
            say "parent $n failed safe (exit 70) after a disk fault"
        else
            problem "parent $n exited by itself with status $rc"
        fi
        ST[$n]=killed
    done
}

heal_all() {
    local n
    heal_net
    [ -n "${FILLED:-}" ] && { rm -f "$D/p$FILLED/filler"; FILLED=; }
    for n in $PARENTS; do
        if [ "${ST[$n]}" = paused ]; then kill_parent "$n" CONT; ST[$n]=up
            printf '%s start %s\n' "$(lab_now_ms)" "$n" >>"$D/proc-timeline"; fi
    done
    [ -n "${FIU_ON:-}" ] && do_step fiu-off
    reap_exited
    for n in $PARENTS; do
        [ "${ST[$n]}" = killed ] && start_parent "$n"
    done
    [ -n "${LEFT:-}" ] && do_step parent-rejoin
    return 0
}

run_plan() { # PLANFILE: each step at its time from now
    local t0 ms rest now
    t0=$(lab_now_ms)
    while read -r ms rest; do
        now=$(lab_now_ms)
        [ $((t0 + ms)) -gt "$now" ] && sleep "$(awk -v d=$((t0 + ms - now)) 'BEGIN { printf "%.3f", d / 1000 }')"
        # shellcheck disable=SC2086
        do_step $rest
        reap_exited
    done <"$1"
}

# --- convergence ---------------------------------------------------------------------
voters_ok() { # every parent that should be in is a reachable voter, one leader
    local m want
    want=$(running | wc -w)
    [ "$want" -gt "$NPARENTS" ] && want=$NPARENTS
    m=$(CTL_TIMEOUT=2000 ctl -o json members 2>/dev/null) || return 1
    [ "$(echo "$m" | jq '[.members[] | select(.role=="voter" and .reachable)] | length' \
        2>/dev/null)" -ge "$want" ]
}
one_holder() { [ "$(lab_vip_holders "$VIP" $PARENTS | wc -w)" = 1 ]; }
vip_write_ok() { lab_in c "$TOOLS/vip_probe" put "$VIP:$API_PORT" --timeout 1000 --limit 1000 >/dev/null 2>&1; }
same_revision() { # every running parent applied the same revision
    local n r revs=""
    for n in $(running); do
        r=$(lab_in a "$BIN/clusterctl" --endpoints "$(api "$n")" --timeout 1000 -o json status 2>/dev/null |
            jq -r '.revision' 2>/dev/null)
        [ -n "$r" ] || return 1
        revs+="$r "
    done
    [ "$(echo "$revs" | tr ' ' '\n' | sed '/^$/d' | sort -u | wc -l)" = 1 ]
}

# --- the VIP timeline ------------------------------------------------------------------
# Windows in which two running parents held the VIP.  A parent holds it from
# the "add" of the address to its "Deleted" in `ip -ts monitor address` of its
# namespace; it counts as running between a start (or resume) and a stop
# (kill, pause, exit) in proc-timeline.  A killed or paused parent's copy is
# left behind by the fault itself (the kernel still answers ARP for it) and
# is the reason a new leader waits out the lease; it does not count.  The
# first VIP_GRACE_MS (250) after a start or resume do not count either: a
# restarted parent removes a stale copy at start, a resumed one drops it
# before it reads a request, and neither answers a client meanwhile.
vip_windows() {
    local n
    for n in $PARENTS; do
        awk -v n="$n" -v vip="$VIP/" '
            /^\[/ && index($0, " " vip) {
                ts = substr($1, 2, length($1) - 2)   # [YYYY-mm-ddTHH:MM:SS.uuuuuu]
                gsub(/[-T:]/, " ", ts); split(ts, p, " ")
                ms = mktime(p[1] " " p[2] " " p[3] " " p[4] " " p[5] " " int(p[6])) * 1000 + int((p[6] - int(p[6])) * 1000)
                printf "%.0f %s %s\n", ms, (index($0, "Deleted") ? "del" : "add"), n
            }' "$D/vipmon-$n.log"
    done >"$D/vip-timeline"
    sort -n -s -k1,1 "$D/vip-timeline" "$D/proc-timeline" | awk -v grace="${VIP_GRACE_MS:-250}" '
        function live(n, t) { return run[n] && t - since[n] >= grace }
        function check(t,   c, k, who) {
            c = 0; who = ""
            for (k in held) if (held[k] && live(k, t)) { c++; who = who " " k }
            if (c > 1 && !open) { open = 1; start = t; owners = who }
            if (c <= 1 && open) { open = 0; printf "window %.0f ms:%s from %.0f\n", t - start, owners, start; windows++ }
        }
        $2 == "add" { held[$3] = 1 } $2 == "del" { held[$3] = 0 }
        $2 == "start" { run[$3] = 1; since[$3] = $1 } $2 == "stop" { run[$3] = 0 }
        { check($1) }
        END { printf "windows %d\n", windows + 0 }'
}

# --- run ---------------------------------------------------------------------------------
run_cleanup() {
    [ -n "${LAB_DIR:-}" ] && [ -d "$LAB_DIR" ] && for n in $PARENTS; do
        [ -n "${TMPFS[$n]:-}" ] && umount -l "$LAB_DIR/p$n" 2>/dev/null
    done
    return 0
}

lab_plan "$SCEN" "$SEED" $((DURATION * 1000)) >"$D/plan" || setup_fail "no plan for $SCEN"
say "run $LAB_RUN: $SCEN seed $SEED, $NPARENTS parents, profile $PROFILE, ${DURATION}s${CONTROL:+, control $CONTROL}"
say "plan: $(tr '\n' ';' <"$D/plan")"

# Per-scenario arrangements made before the cluster starts.
case $SCEN in
clock | clock-disk)
    for n in $PARENTS; do
        echo "+0" >"$D/faketime-p$n"
        CLOCK[$n]="FAKETIME_TIMESTAMP_FILE=$D/faketime-p$n FAKETIME_NO_CACHE=1 FAKETIME_DONT_FAKE_MONOTONIC=1"
    done ;;
esac
case $SCEN in
disk | clock-disk | power-loss)
    for n in $PARENTS; do PRELOAD[$n]=lost; done ;;
esac
case $SCEN in
disk | clock-disk)
    for n in $PARENTS; do PRELOAD[$n]="${PRELOAD[$n]:-} fiu"; done
    FAULT_DISK=1 ;;
esac
SMALL=
if [ "$SCEN" = disk ]; then
    # The last parent's data dir is a small tmpfs that the plan fills up
    # ("small"); it runs without the lost-writes shim, whose undo log must
    # live on the data's own file system and would run out of space too.
    SMALL=$NPARENTS
    mkdir -p "$D/p$SMALL"
    mount -t tmpfs -o size=96m tmpfs "$D/p$SMALL" || setup_fail "tmpfs for $SMALL"
    TMPFS[$SMALL]=1
    PRELOAD[$SMALL]=fiu
fi
[ "$CONTROL" = nosync ] && for n in $PARENTS; do PRELOAD[$n]=lost; done
NOSYNC_ON=

for n in $PARENTS; do
    lab_spawn "vipmon$n" "$n" "$D/vipmon-$n.log" ip -ts monitor address
done
: >"$D/proc-timeline"
lab_in c iptables -w -A OUTPUT -d "$VIP" -j ACCEPT
lab_in c iptables -w -A OUTPUT -p tcp -d "$LAB_SUB.0/24" --dport "$API_PORT" -j REJECT --reject-with tcp-reset

# Form the cluster: node 1 bootstraps, the others join with its token.
TOKEN=
start_parent 1
lab_wait_for 15 test -s "$D/p1/join-token" || setup_fail "no join token from parent 1"
TOKEN=$(cat "$D/p1/join-token")
for n in $PARENTS; do [ "$n" = 1 ] || start_parent "$n"; done
lab_wait_for 40 voters_ok || setup_fail "no $NPARENTS reachable voters"
lab_wait_for 15 one_holder || setup_fail "no VIP holder"
lab_wait_for 15 vip_write_ok || setup_fail "no write through the VIP"
start_child k1 --token "$(new_token)"
start_monitor k1
if [ "$CONTROL" = nosync ]; then
    # The control: a rolling restart into parents that sync nothing from
    # now on (the cluster and its identities were made durable before).
    NOSYNC_ON=1
    for n in $PARENTS; do
        lab_stop "p$n" TERM
        echo "$(lab_now_ms) stop $n" >>"$D/proc-timeline"
        start_parent "$n"
        lab_wait_for 20 voters_ok || setup_fail "no voters after restarting $n without syncs"
    done
    lab_wait_for 15 vip_write_ok || setup_fail "no write through the VIP after the restarts"
    say "control: every parent now runs with LOSTWRITES_NOSYNC=1"
fi
say "formed in $((SECONDS - T_START)) s"
T_FORMED=$SECONDS

# The workload and the nemesis.
# The clients run DURATION s, and on for LAB_TAIL s (3) after the plan's
# last step: a step that ran late (a restart under a sanitizer build) must
# still be followed by requests, or the checker cannot see the recovery.
T_WORK=$SECONDS
lab_spawn client c "$D/client.log" "$TOOLS/lab_client" --endpoints "$VIP:$API_PORT" \
    --seed "$SEED" --threads "${LAB_THREADS:-4}" --rate "${LAB_RATE:-250}" \
    --duration-s $((DURATION + 120)) --max-ops 200000 \
    --timeout-ms 1000 --out "$D/history.jsonl"
run_plan "$D/plan"
END_WORK=$((SECONDS + ${LAB_TAIL:-3}))
[ "$END_WORK" -ge $((T_WORK + DURATION)) ] || END_WORK=$((T_WORK + DURATION))
while [ "$SECONDS" -lt "$END_WORK" ] && ! lab_exited "${LAB_PID[client]}"; do sleep 0.1; done
lab_exited "${LAB_PID[client]}" && problem "the client exited before the workload's end (client.log)"
lab_stop client TERM || problem "the client did not stop within $LAB_STOP_GRACE s of SIGTERM"

# Heal (the plan's last step did) and converge.
heal_all
if ! lab_wait_for 45 voters_ok; then
    problem "no $NPARENTS reachable voters 45 s after healing"
    { ctl -o json members; ctl -o json status; } >>"$LOG" 2>&1
fi
lab_wait_for 15 one_holder || problem "VIP holders after healing: '$(lab_vip_holders "$VIP" $PARENTS)'"
lab_wait_for 15 vip_write_ok || problem "no write through the VIP after healing"
say "converged ($((SECONDS - T_FORMED)) s after forming)"
lab_in c "$TOOLS/lab_client" --endpoints "$VIP:$API_PORT" --timeout-ms 2000 \
    --final-read "$D/final.jsonl" >>"$D/client.log" 2>&1 || problem "final read failed"
say "final read done"
FINAL_REV=$(lab_in a "$BIN/clusterctl" --endpoints "$(all_api)" -o json status 2>/dev/null |
    jq -s 'map(.revision) | max')
lab_wait_for 20 same_revision || problem "parents did not reach the same revision"
for k in k1 k2; do
    [ "${CST[$k]:-}" = up ] || continue
    lab_wait_for 20 bash -c "[ \"\$('$BIN/clusterd-store' -d '$D/$k/cache.mdb' status 2>/dev/null |
        awk '/^revision/ {print \$2}')\" -ge ${FINAL_REV:-0} ]" ||
        problem "child $k did not reach revision $FINAL_REV"
done
say "stores at one revision"
if lab_arping_one_mac c "$VIP"; then say "arping: one MAC answers for the VIP"; else
    problem "arping -d: two or no MACs answer for $VIP"; fi

# Stop everything the run started (children, then parents, then monitors).
hung=$(lab_stop_all TERM mon-k1 mon-k2 k1 k2)
# Followers first, then the leader: it hands over to no one and stops
# after its transfer guard, once.
keys=()
L=$(leader)
for n in $PARENTS; do [ "${ST[$n]}" = up ] && [ "$n" != "$L" ] && keys+=("p$n"); done
t=$(lab_now_ms)
for n in $PARENTS; do [ "$n" != "$L" ] && echo "$t stop $n"; done >>"$D/proc-timeline"
hung+=" $(lab_stop_all TERM "${keys[@]}")"
if [ -n "$L" ]; then
    echo "$(lab_now_ms) stop $L" >>"$D/proc-timeline"
    hung+=" $(lab_stop_all TERM "p$L")"
fi
[ -z "${hung// /}" ] || problem "still running $LAB_STOP_GRACE s after SIGTERM (killed; where each was blocked: hung-KEY.txt): $hung"
sleep 0.2
lab_stop_all TERM $(for n in $PARENTS; do echo "vipmon$n"; done) >/dev/null

# Stores: the same revision and content on every parent, and on the children.
declare -A DIG=()
for n in $PARENTS; do
    [ -f "$D/p$n/state.mdb" ] || continue
    DIG[p$n]="$("$BIN/clusterd-store" -d "$D/p$n/state.mdb" status 2>/dev/null | awk '/^revision/ {print $2}') $(
        "$BIN/clusterd-store" -d "$D/p$n/state.mdb" range 2>/dev/null | sha256sum | cut -c1-16)"
    "$BIN/clusterd-store" -d "$D/p$n/state.mdb" check >>"$LOG" 2>&1 || problem "store check failed on parent $n"
done
for k in k1 k2; do
    [ "${CST[$k]:-}" = up ] && [ -f "$D/$k/cache.mdb" ] || continue
    DIG[$k]="$("$BIN/clusterd-store" -d "$D/$k/cache.mdb" status 2>/dev/null | awk '/^revision/ {print $2}') $(
        "$BIN/clusterd-store" -d "$D/$k/cache.mdb" range 2>/dev/null | sha256sum | cut -c1-16)"
done
for x in "${!DIG[@]}"; do say "store $x: ${DIG[$x]}"; done
[ "$(printf '%s\n' "${DIG[@]}" | sort -u | wc -l)" = 1 ] ||
    problem "stores differ: $(for x in "${!DIG[@]}"; do printf '%s=%s; ' "$x" "${DIG[$x]}"; done)"

# The VIP timeline.
vip_windows >"$D/vip-windows"
W=$(awk '/^windows/ {print $2}' "$D/vip-windows")
[ "${W:-1}" = 0 ] || problem "two running VIP holders: $(grep '^window ' "$D/vip-windows" | head -3 | tr '\n' ';')"

# Logs: no assertion, sanitizer report or core file.  One exception, kept
# visible: a LeakSanitizer report at exit whose every stack lies in libraft
# and libuv alone, with the AppendEntries entries arrays libraft decodes
# among them.  libraft 0.22.1 drops the AppendEntries that reach a follower
# while it installs a snapshot without freeing them (docs/lab.md, "What the
# lab found"); a leak with any frame of ours still fails the run.
dep_leak_only() { # LOG: every leak LeakSanitizer reports is a known one of
    # libraft 0.22.1's (docs/lab.md), each record's stack entirely in libraft
    # and libuv: prints which ("entries", "truncate" or both); status 1 else.
    #   entries   AppendEntries dropped during a snapshot install: the
    #             decoded entries arrays (realloc'd in libraft) among them
    #   truncate  a log truncation still waiting on its write barrier when
    #             raft_close runs: the request (malloc'd by UvTruncate) and
    #             its barrier (calloc'd by uvBarrierCreate), 88 bytes; the
    #             offsets are those call sites in Debian's 0.22.1-1~bpo12+1
    grep -q 'ERROR: LeakSanitizer' "$1" || return 1
    grep -q -E 'Assertion|ERROR: AddressSanitizer|runtime error:|ThreadSanitizer' "$1" && return 1
    awk -v ver="$(dpkg-query -W -f='${Version}' libraft0 2>/dev/null)" '
        function close_rec() {
            if (!rec) return
            if (site ~ /^realloc libraft\.so/) entries = 1
            else if (ver == "0.22.1-1~bpo12+1" &&
                     (site ~ /^malloc libraft\.so\.0\+0x29033\)/ ||
                      site ~ /^calloc libraft\.so\.0\+0x1af9c\)/)) truncate = 1
            else other = 1  # allowed beside the entries leak only (its buffers)
            rec = 0
        }
        /ERROR: LeakSanitizer/ { on = 1 }
        on && /(Direct|Indirect) leak of/ { close_rec(); rec = 1; site = ""; alloc = "" }
        on && rec && /^ *#[0-9]+ / {
            if ($0 !~ /asan_malloc_linux|libraft\.so|libuv\.so/) bad = 1
            if ($0 ~ /__interceptor_/) { alloc = $0; sub(/.*__interceptor_/, "", alloc); sub(/ .*/, "", alloc) }
            else if (site == "" && alloc != "") { site = $0; sub(/.*\//, "", site); site = alloc " " site }
        }
        /^SUMMARY/ { close_rec(); on = 0 }
        END {
            if (bad || (other && !entries) || !(entries || truncate)) exit 1
            print (entries ? "entries" : "") (entries && truncate ? "," : "") (truncate ? "truncate" : "")
        }' "$1"
}
SAN_LOGS=""
for f in $(grep -l -E 'Assertion|AddressSanitizer|LeakSanitizer|runtime error:|ThreadSanitizer' "$D"/*.log 2>/dev/null); do
    if kind=$(dep_leak_only "$f"); then
        say "known libraft leak ($kind; docs/lab.md) in $(basename "$f"): $(grep -m1 '^SUMMARY' "$f")"
        echo "figure ${SCEN//-/_}_libraft_leak_logs 1 count" >>"$D/figures"
    else
        SAN_LOGS+="$(basename "$f") "
    fi
done
[ -z "$SAN_LOGS" ] || problem "assertion or sanitizer report in $SAN_LOGS" 
CORES=$(find "$D" -name 'core*' -type f 2>/dev/null | head -3)
[ -z "$CORES" ] || problem "core files: $CORES"

# The history checkers.
mkdir -p "$D/checker"
"$CHECKER" --history "$D/history.jsonl" --final "$D/final.jsonl" --events "$NEMESIS_EVENTS" \
    $(for f in "$D"/child-*.jsonl; do [ -f "$f" ] && printf -- '--child %s ' "$f"; done) \
    --html "$D/checker" --recovery-bound "${LAB_RECOVERY_BOUND:-15s}" >"$D/checker.out" 2>&1
rc=$?
cat "$D/checker.out" >>"$LOG"
[ "$rc" = 0 ] || problem "checker: $(grep -v '^figure' "$D/checker.out" | grep -i -E 'fail|violat|lost|error' | head -3 | tr '\n' ';')"
grep '^figure' "$D/checker.out" | sed "s/^figure /figure ${SCEN//-/_}_/" >"$D/figures"
echo "figure ${SCEN//-/_}_vip_double_windows ${W:-0} count" >>"$D/figures"
cat "$D/figures"

if [ ${#PROBLEMS[@]} -eq 0 ]; then
    finish pass "$(grep -c . "$D/history.jsonl" 2>/dev/null) ops"
fi
printf 'problem: %s\n' "${PROBLEMS[@]}"
finish fail "${PROBLEMS[0]} (+$((${#PROBLEMS[@]} - 1)) more; kept $D)"
