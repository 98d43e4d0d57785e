# tests/lab/lib.sh - the fault lab's namespace topology, for bash scripts to
# source (bench-failover.sh now; make lab later).  See ../shared/LAB.md.
#
#   lab_init PREFIX          run id, subnet, temp dir, the EXIT/INT/TERM traps
#   lab_topology N...        hub namespace + bridge, one veth'd namespace per
#                            name (eth0 = $LAB_SUB.<host>), ip_forward=0
#   lab_spawn KEY NS LOG CMD...   start CMD in namespace NS, PID in LAB_PID[KEY]
#   lab_signal KEY SIG / lab_stop KEY [SIG]   by the recorded PID only
#   lab_watchdog SECONDS     end the run (cleanup included) when it overruns
#
# Everything is named ${LAB_RUN}<name>; lab_cleanup (the EXIT trap) stops
# every recorded PID, then whatever is left in the run's namespaces (by
# PID, from `ip netns pids`), and deletes the namespaces.  Nothing is
# created in the root namespace.

LAB_RUN=
LAB_SUB=
LAB_DIR=
LAB_NS=()          # every namespace created, hub last to delete
LAB_WATCHDOG=
declare -gA LAB_PID=()
declare -gA LAB_HOST=() # name -> host part of its address
LAB_KEEP_DIR=${LAB_KEEP_DIR:-}
LAB_CLEANUP_HOOK=${LAB_CLEANUP_HOOK:-}

lab_init() { # PREFIX
    LAB_RUN="${1}$$"
    local net=$((100 + $$ % 100))
    LAB_SUB=${LAB_SUB_OVERRIDE:-10.$net.78}
    LAB_DIR=$(mktemp -d "/tmp/${LAB_RUN}-XXXXXX")
    trap lab_cleanup EXIT
    trap 'echo "lab: interrupted" >&2; exit 1' INT TERM HUP
}

lab_ns() { echo "${LAB_RUN}$1"; }
lab_in() { local n=$1; shift; ip netns exec "$(lab_ns "$n")" "$@"; }
lab_addr() { echo "$LAB_SUB.${LAB_HOST[$1]}"; }

lab_topology() { # NAME... (host numbers: 1,2,3... for digits, 100+ for others)
    local h n host other=100
    h=$(lab_ns h)
    ip netns add "$h" || return 1
    LAB_NS+=("h")
    ip -n "$h" link set lo up
    ip -n "$h" link add br0 type bridge
    ip -n "$h" link set br0 up
    for n in "$@"; do
        ip netns add "$(lab_ns "$n")" || return 1
        LAB_NS=("$n" "${LAB_NS[@]}")
        if [[ $n =~ ^[0-9]+$ ]]; then host=$n; else host=$other; other=$((other + 1)); fi
        LAB_HOST[$n]=$host
        ip link add eth0 netns "$(lab_ns "$n")" type veth peer name "v$n" netns "$h" || return 1
        ip -n "$h" link set "v$n" master br0 up
        lab_in "$n" sysctl -qw net.ipv4.ip_forward=0 net.ipv4.conf.all.send_redirects=0 \
            net.ipv4.conf.default.send_redirects=0
        ip -n "$(lab_ns "$n")" addr add "$LAB_SUB.$host/24" dev eth0
        ip -n "$(lab_ns "$n")" link set eth0 up
        ip -n "$(lab_ns "$n")" link set lo up
    done
}

lab_spawn() { # KEY NS LOGFILE CMD...: ip netns exec execs CMD, so $! is CMD's PID
    local key=$1 n=$2 log=$3; shift 3
    ip netns exec "$(lab_ns "$n")" "$@" >>"$log" 2>&1 &
    LAB_PID[$key]=$!
}

lab_alive() { [ -n "${LAB_PID[$1]:-}" ] && kill -0 "${LAB_PID[$1]}" 2>/dev/null; }
lab_signal() { [ -n "${LAB_PID[$1]:-}" ] && kill "-$2" "${LAB_PID[$1]}" 2>/dev/null; }

# Seconds a process gets to exit after its signal.
LAB_STOP_GRACE=${LAB_STOP_GRACE:-10}

lab_exited() { # PID: gone, or a zombie.  lab_stop_all runs in a command
    # substitution, a subshell whose wait cannot reap the run's processes
    # (the main shell's children): kill -0 succeeds on their zombies.
    local st
    st=$(cat "/proc/$1/stat" 2>/dev/null) || return 0
    st=${st##*) }
    [ "${st%% *}" = Z ]
}

lab_hung_report() { # KEY PID: where each thread of a process that ignored its
    # stop signal is blocked, for the run's directory (hung-KEY.txt)
    local t f
    {
        echo "$1 (pid $2) still running ${LAB_STOP_GRACE} s after its signal"
        for t in /proc/"$2"/task/*; do
            echo "-- thread ${t##*/}: $(cut -d' ' -f3 "$t/stat" 2>/dev/null)" \
                "wchan=$(cat "$t/wchan" 2>/dev/null) syscall=$(cat "$t/syscall" 2>/dev/null)"
            cat "$t/stack" 2>/dev/null
        done
        for f in /proc/"$2"/fd/*; do echo "fd ${f##*/} -> $(readlink "$f")"; done
        t=$(awk '/^TracerPid:/ {print $2}' /proc/"$2"/status 2>/dev/null)
        if [ -n "$t" ] && [ "$t" != 0 ]; then
            echo "-- traced by $t: $(tr '\0' ' ' </proc/"$t"/cmdline 2>/dev/null)" \
                "state $(cut -d' ' -f3 /proc/"$t"/stat 2>/dev/null)" \
                "wchan=$(cat /proc/"$t"/wchan 2>/dev/null) syscall=$(cat /proc/"$t"/syscall 2>/dev/null)"
            cat /proc/"$t"/stack 2>/dev/null
            grep -E '^(State|PPid|Tgid|SigPnd|ShdPnd|SigBlk|SigIgn|SigCgt)' /proc/"$t"/status 2>/dev/null
        fi
        grep -E '^(SigPnd|ShdPnd|SigBlk|SigIgn|SigCgt)' /proc/"$2"/status 2>/dev/null
        if command -v gdb >/dev/null; then
            echo "-- gdb: every thread's stack"
            timeout 20 gdb -p "$2" -batch -nx -ex 'thread apply all bt' </dev/null 2>&1 | grep -v '^\[New LWP'
        fi
        echo "-- /proc/locks (posix and flock locks of every process)"
        cat /proc/locks
    } >"$LAB_DIR/hung-$1.txt" 2>&1
}

lab_stopped() { # PID: in a job-control stop (SIGSTOP'd: state T)
    local st
    st=$(cat "/proc/$1/stat" 2>/dev/null) || return 1
    st=${st##*) }
    [ "${st%% *}" = T ]
}

lab_wake() { # PID: SIGCONT, only to a process that is stopped.  SIGCONT
    # discards a pending SIGSTOP: sent to a sanitizer build during its exit,
    # it cancels the stop LeakSanitizer's ptrace attach is waiting for, and
    # the process spins for ever (the extended suite's child monitor did).
    lab_stopped "$1" && kill -CONT "$1" 2>/dev/null
    return 0
}

lab_stop() { # KEY [SIG] [nosignal]: signal by PID (unless nosignal: it has
    # been), SIGKILL after LAB_STOP_GRACE s, reap, forget; returns 1 when it
    # took the SIGKILL
    local key=$1 sig=${2:-TERM} pid=${LAB_PID[$1]:-} i rc=0
    [ -n "$pid" ] || return 0
    if [ "${3:-}" != nosignal ]; then
        lab_wake "$pid"
        kill "-$sig" "$pid" 2>/dev/null
    fi
    for ((i = 0; i < LAB_STOP_GRACE * 10; i++)); do
        lab_exited "$pid" && break
        sleep 0.1
    done
    lab_exited "$pid" || { lab_hung_report "$key" "$pid"; kill -9 "$pid" 2>/dev/null; rc=1; }
    { wait "$pid"; } 2>/dev/null
    unset "LAB_PID[$key]"
    return $rc
}

lab_stop_all() { # SIG KEY...: signal them all at once (each once), then
    # stop each as lab_stop; prints the keys that needed SIGKILL
    local sig=$1 k; shift
    for k in "$@"; do
        [ -n "${LAB_PID[$k]:-}" ] || continue
        lab_wake "${LAB_PID[$k]}"
        lab_signal "$k" "$sig"
    done
    for k in "$@"; do lab_stop "$k" "$sig" nosignal || echo "$k"; done
}

lab_reap() { # KEY: the process is gone (killed elsewhere): reap it, forget it
    local pid=${LAB_PID[$1]:-}
    [ -n "$pid" ] && { wait "$pid"; } 2>/dev/null
    unset "LAB_PID[$1]"
}

lab_watchdog() { # SECONDS (its sleep holds none of the run's output open)
    local self=$$
    (
        sleep "$1" </dev/null >/dev/null 2>&1 &
        echo $! >"$LAB_DIR/watchdog.sleep"
        wait
        echo "lab: watchdog: run exceeded $1 s" >&2
        kill -TERM "$self"
    ) &
    LAB_WATCHDOG=$!
}

lab_cleanup() {
    local rc=$? k p n
    trap - EXIT INT TERM HUP
    [ -n "$LAB_CLEANUP_HOOK" ] && $LAB_CLEANUP_HOOK
    if [ -n "$LAB_WATCHDOG" ]; then
        kill "$LAB_WATCHDOG" 2>/dev/null
        wait "$LAB_WATCHDOG" 2>/dev/null
        p=$(cat "$LAB_DIR/watchdog.sleep" 2>/dev/null)
        [ -n "$p" ] && kill "$p" 2>/dev/null
    fi
    for k in "${!LAB_PID[@]}"; do
        kill -CONT "${LAB_PID[$k]}" 2>/dev/null
        kill -9 "${LAB_PID[$k]}" 2>/dev/null
    done
    for k in "${!LAB_PID[@]}"; do { wait "${LAB_PID[$k]}"; } 2>/dev/null; done
    for n in "${LAB_NS[@]}"; do
        for p in $(ip netns pids "$(lab_ns "$n")" 2>/dev/null); do
            kill -CONT "$p" 2>/dev/null
            kill -9 "$p" 2>/dev/null
        done
    done
    for n in "${LAB_NS[@]}"; do ip netns del "$(lab_ns "$n")" 2>/dev/null; done
    if [ -n "$LAB_DIR" ]; then
        if [ "$rc" = 0 ] && [ -z "$LAB_KEEP_DIR" ]; then
            rm -rf "$LAB_DIR"
        else
            echo "lab: kept $LAB_DIR" >&2
        fi
    fi
    exit "$rc"
}

lab_wait_for() { # SECONDS COMMAND...
    local deadline=$((SECONDS + $1)); shift
    until "$@" >/dev/null 2>&1; do
        [ $SECONDS -ge $deadline ] && return 1
        sleep 0.05
    done
}

lab_now_ms() { date +%s%3N; }

# --- the VIP ---------------------------------------------------------------
lab_vip_holders() { # VIP NODE...: the nodes whose eth0 carries VIP
    local vip=$1 n out=""; shift
    for n in "$@"; do
        ip -n "$(lab_ns "$n")" -4 addr show dev eth0 | grep -q " $vip/" && out+="$n "
    done
    echo "$out"
}
lab_vip_clear() { # VIP PREFIXLEN NODE...: remove any copy left behind
    local vip=$1 len=$2 n; shift 2
    for n in "$@"; do ip -n "$(lab_ns "$n")" addr del "$vip/$len" dev eth0 2>/dev/null; done
    return 0
}
lab_arping_one_mac() { # NS VIP: exit 0 when exactly one MAC answers
    lab_in "$1" arping -q -d -i eth0 -c 2 -W 0.3 -w 2 "$2" >/dev/null 2>&1
}

# --- numbers ---------------------------------------------------------------
lab_stats() { # FILE: "n p50 p99 max" over its first column (nearest rank)
    sort -n "$1" | awk '{v[NR] = $1}
        END {
            if (NR == 0) { print "0 - - -"; exit }
            i50 = int(NR * 0.50 + 0.999999); i99 = int(NR * 0.99 + 0.999999)
            printf "%d %.0f %.0f %.0f\n", NR, v[i50], v[i99], v[NR]
        }'
}
