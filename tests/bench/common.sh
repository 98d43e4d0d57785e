# common.sh - helpers shared by the benchmark scripts (bench.sh,
# children.sh), sourced, never run.
#
# The sourcing script sets first: ROOT (the checkout), WORK (its work
# directory; WORK/data is removed on exit unless BENCH_KEEP=1), LOGS,
# CLUSTERD and BENCH_CLUSTER (build/bin/...), ETCD_TOOLS (where the etcd
# side's Go tools are built), and optionally BENCH_TAG (the prefix of
# warnings, "bench").  Sourcing installs the EXIT trap that stops every
# process started with start().
#
# What is here:
#   start / ours / forget / stop    processes, recorded and stopped by PID
#   free_port                       an unused loopback TCP port in PORT
#   pctl / div / field / num0       statistics and formatting
#   figure / fig / target           "figure NAME VALUE UNIT" lines, targets
#   cd_node / cd_up / cd_down       a 3-parent clusterd (CD_EXTRA: more flags)
#   et_member / et_up               an etcd of 1 or 3 members
#   build_etcd_tools                etcd's benchmark tool and etcd-failover
#   server_logs                     error and warning counts of server logs

say() { printf '%s\n' "$*"; }
warn() { printf '%s: %s\n' "${BENCH_TAG:-bench}" "$*" >&2; }
die() {
    warn "$*"
    exit 1
}

# --- processes: every one started here is recorded and stopped by PID ----
# Servers are disowned once started, so that bash reaps them itself and
# does not print "Killed" for each leader kill; a PID is signalled only
# while /proc shows it still runs the program started under it.
declare -A LIVE=() PROG=()

# start NAME LOG CMD...: run CMD in the background; its PID in STARTED.
start() {
    local name=$1 log=$2
    shift 2
    "$@" >>"$log" 2>&1 &
    STARTED=$!
    disown "$STARTED"
    LIVE[$STARTED]=$name
    PROG[$STARTED]=$1
}

# ours PID: the process is alive and still the program we started.
ours() {
    local cmd
    { cmd=$(tr '\0' ' ' <"/proc/$1/cmdline"); } 2>/dev/null || return 1
    [ -n "${PROG[$1]:-}" ] && [[ $cmd == "${PROG[$1]}"* ]]
}

# forget PID: the process was killed (by a probe); wait until it is gone.
forget() {
    local i
    for ((i = 0; i < 100; i++)); do
        ours "$1" || break
        sleep 0.05
    done
    unset "LIVE[$1]" "PROG[$1]"
}

# stop PID...: SIGTERM, up to 10 s, then SIGKILL.
stop() {
    local pid i
    for pid in "$@"; do
        ours "$pid" && kill -TERM "$pid" 2>/dev/null
    done
    for pid in "$@"; do
        for ((i = 0; i < 100; i++)); do
            ours "$pid" || break
            sleep 0.1
        done
        if ours "$pid"; then
            warn "${LIVE[$pid]:-pid $pid} ignored SIGTERM for 10 s: SIGKILL"
            kill -KILL "$pid" 2>/dev/null
            for ((i = 0; i < 50; i++)); do
                ours "$pid" || break
                sleep 0.1
            done
        fi
        unset "LIVE[$pid]" "PROG[$pid]"
    done
}

cleanup() {
    local pids=("${!LIVE[@]}")
    if [ ${#pids[@]} -gt 0 ]; then
        stop "${pids[@]}"
    fi
    if [ "${BENCH_KEEP:-0}" != 1 ]; then
        rm -rf "$WORK/data"
    fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# --- ports ----------------------------------------------------------------
USED_PORTS=" "
# free_port: an unused loopback TCP port in PORT.
free_port() {
    local p
    while :; do
        p=$((20000 + RANDOM % 40000))
        case $USED_PORTS in *" $p "*) continue ;; esac
        if [ -z "$(ss -Htan "( sport = :$p )" 2>/dev/null)" ]; then
            USED_PORTS+="$p "
            PORT=$p
            return
        fi
    done
}

# --- statistics -----------------------------------------------------------
# pctl P FILE: etcd's percentile rule over one number per line.
pctl() {
    sort -g "$2" | awk -v p="$1" '{ v[NR - 1] = $1 }
        END { if (NR == 0) { print "nan"; exit }
              for (i = 0; i < NR; i++) if (i * 100 / NR >= p) { print v[i]; exit }
              print v[NR - 1] }'
}
# div A B [FMT]
div() { awk -v a="$1" -v b="$2" -v f="${3:-%.2f}" 'BEGIN { if (b + 0 == 0 || a == "" || a == "nan") print "nan"; else printf f "\n", a / b }'; }
# field NAME LINE: the value of NAME=value in a bench_cluster line.
field() { sed -n "s/.*\\b$1=\\([^ ]*\\).*/\\1/p" <<<"$2"; }
# num0 X: X rounded to an integer, "-" when absent.
num0() { awk -v x="$1" 'BEGIN { if (x == "" || x == "nan") print "-"; else printf "%.0f\n", x }'; }
FIGURES=()
figure() { FIGURES+=("figure $1 $2 $3"); }
# fig NAME: the value of a recorded figure.
fig() { printf '%s\n' "${FIGURES[@]}" | awk -v n="$1" '$2 == n { print $3 }'; }
# target TEXT VALUE OP LIMIT: one line of the targets table (OP: >= <= > <).
target() {
    local verdict
    if [ -z "$2" ] || [ "$2" = nan ]; then
        verdict="not measured"
    elif awk -v v="$2" -v l="$4" -v op="$3" 'BEGIN { exit !((op == ">=" && v >= l) || (op == "<=" && v <= l) || (op == ">" && v > l) || (op == "<" && v < l)) }'; then
        verdict=met
    else
        verdict="NOT met"
    fi
    printf '  %-52s %10s  %s\n' "$1" "$2" "$verdict"
}

# --- clusterd -------------------------------------------------------------
CD_PIDS=()
CD_API=()
CD_RAFT=()
CD_EPS=""
CD_DIR=""
CD_PROFILE=""
CD_EXTRA=() # flags every node gets, e.g. (--set max_connections=4096)

cd_node() { # INDEX [FLAGS...]: start (or restart) node INDEX
    local i=$1
    shift
    start "clusterd $CD_PROFILE n$((i + 1))" "$LOGS/clusterd-$CD_PROFILE-n$((i + 1)).log" \
        "$CLUSTERD" --data "$CD_DIR/n$((i + 1))" --raft "127.0.0.1:${CD_RAFT[i]}" \
        --api "127.0.0.1:${CD_API[i]}" --profile "$CD_PROFILE" "${CD_EXTRA[@]}" "$@"
    CD_PIDS[i]=$STARTED
}

cd_up() { # PROFILE
    CD_PROFILE=$1
    CD_DIR=$WORK/data/clusterd-$1
    mkdir -p "$CD_DIR"
    local i
    for i in 0 1 2; do
        free_port
        CD_RAFT[i]=$PORT
        free_port
        CD_API[i]=$PORT
    done
    CD_EPS="127.0.0.1:${CD_API[0]},127.0.0.1:${CD_API[1]},127.0.0.1:${CD_API[2]}"
    cd_node 0 --bootstrap
    for ((i = 0; i < 100; i++)); do
        [ -s "$CD_DIR/n1/join-token" ] && break
        kill -0 "${CD_PIDS[0]}" 2>/dev/null || die "clusterd n1 exited (see $LOGS)"
        sleep 0.1
    done
    [ -s "$CD_DIR/n1/join-token" ] || die "no join token from clusterd n1 after 10 s"
    local token
    token=$(cat "$CD_DIR/n1/join-token")
    cd_node 1 --join "127.0.0.1:${CD_API[0]}" --token "$token"
    cd_node 2 --join "127.0.0.1:${CD_API[0]}" --token "$token"
    "$BENCH_CLUSTER" wait --endpoints "$CD_EPS" --voters 3 --timeout-s 60 ||
        die "clusterd ($1) did not form a 3-voter cluster (see $LOGS)"
}

cd_down() {
    stop "${CD_PIDS[@]}"
    CD_PIDS=()
}

# --- etcd -----------------------------------------------------------------
ET_PIDS=()
ET_CLIENT=()
ET_PEER=()
ET_EPS=""
ET_URLS=""
ET_DIR=""
ET_CLUSTER=""

et_member() { # INDEX: start (or restart) member INDEX
    local i=$1 n="e$(($1 + 1))"
    start "etcd $n" "$LOGS/etcd-$n.log" \
        etcd --name "$n" --data-dir "$ET_DIR/$n" \
        --listen-client-urls "http://127.0.0.1:${ET_CLIENT[i]}" \
        --advertise-client-urls "http://127.0.0.1:${ET_CLIENT[i]}" \
        --listen-peer-urls "http://127.0.0.1:${ET_PEER[i]}" \
        --initial-advertise-peer-urls "http://127.0.0.1:${ET_PEER[i]}" \
        --initial-cluster "$ET_CLUSTER" --initial-cluster-state new \
        --initial-cluster-token "bench-$$" --logger zap --log-outputs stderr \
        --log-level warn
    ET_PIDS[i]=$STARTED
}

et_up() { # [MEMBERS]: 3 unless told (1 for a single-node etcd)
    local n=${1:-3} i
    ET_DIR=$WORK/data/etcd
    mkdir -p "$ET_DIR"
    ET_CLUSTER=""
    ET_EPS=""
    for ((i = 0; i < n; i++)); do
        free_port
        ET_CLIENT[i]=$PORT
        free_port
        ET_PEER[i]=$PORT
        ET_CLUSTER+="${ET_CLUSTER:+,}e$((i + 1))=http://127.0.0.1:${ET_PEER[i]}"
        ET_EPS+="${ET_EPS:+,}127.0.0.1:${ET_CLIENT[i]}"
    done
    ET_URLS="http://${ET_EPS//,/,http://}"
    for ((i = 0; i < n; i++)); do et_member "$i"; done
    "$ETCD_TOOLS/etcd-failover" wait --endpoints "$ET_URLS" --timeout-s 60 ||
        die "etcd did not form a cluster (see $LOGS)"
}

# --- build the etcd side --------------------------------------------------
# etcd's own benchmark tool and etcd-failover, from the module proxy at the
# version pinned in tests/bench/etcd-benchmark/go.mod.  On failure
# ETCD_SKIP says why.
build_etcd_tools() {
    local go
    go=$(command -v go || echo /usr/local/go/bin/go)
    [ -x "$go" ] || {
        ETCD_SKIP="no Go toolchain"
        return 1
    }
    command -v etcd >/dev/null || {
        ETCD_SKIP="no etcd binary (Debian etcd-server)"
        return 1
    }
    mkdir -p "$ETCD_TOOLS"
    if ! (cd "$ROOT/tests/bench/etcd-benchmark" &&
        GOFLAGS=-buildvcs=false "$go" build -o "$ETCD_TOOLS/benchmark" go.etcd.io/etcd/tools/benchmark &&
        GOFLAGS=-buildvcs=false "$go" build -o "$ETCD_TOOLS/etcd-failover" ./etcd-failover) \
        >"$LOGS/go-build.log" 2>&1; then
        ETCD_SKIP="etcd's benchmark tool did not build (see $LOGS/go-build.log)"
        return 1
    fi
}

# --- what the servers said --------------------------------------------------
server_logs() {
    local f n_err n_warn
    for f in "$LOGS"/clusterd-*.log; do
        [ -e "$f" ] || continue
        n_err=$(grep -c -E ' (error|fatal) |Assertion|Sanitizer|core dumped' "$f")
        n_warn=$(grep -c ' warn ' "$f")
        if [ "$n_err" != 0 ]; then
            warn "$(basename "$f"): $n_err error lines, e.g.: $(grep -m1 -E ' (error|fatal) |Assertion|Sanitizer' "$f")"
        fi
        say "log $(basename "$f"): $n_err errors, $n_warn warnings"
    done
}
