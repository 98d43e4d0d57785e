#!/bin/bash
# make demo - a narrated tour of clusterd: three parents on loopback formed
# by join, configuration written once and read everywhere, the leader
# killed and replaced, the old leader back as a follower, a graceful
# handover, backups (by hand and scheduled), a local program reading
# without any daemon, children through a total outage, and every parent
# lost for good: a backup restored into new parents, which the child
# follows again by itself.
# Every process it starts is stopped by its PID when it ends.
set -euo pipefail
BUILD=${1:-build}
BIN=$(cd "$BUILD/bin" && pwd)
DIR=$(mktemp -d /tmp/clusterd-demo-XXXXXX)
BASE=$((27000 + ($$ % 100) * 10))
declare -A PID

cleanup() {
    for i in "${!PID[@]}"; do
        kill -9 "${PID[$i]}" 2>/dev/null || true
        wait "${PID[$i]}" 2>/dev/null || true
    done
    rm -rf "$DIR"
}
trap cleanup EXIT

say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
run() { printf '$ %s\n' "$*"; "$@"; }
raft() { echo "127.0.0.1:$((BASE + $1))"; }
api() { echo "127.0.0.1:$((BASE + 100 + $1))"; }
ENDPOINTS="$(api 1),$(api 2),$(api 3)"
export CLUSTERD_ENDPOINTS=$ENDPOINTS
ctl() { "$BIN/clusterctl" --timeout 10000 "$@"; }

child() { # child N [flags...]: clusterd-child with its data in c<N>
    local n=$1; shift
    "$BIN/clusterd-child" --data "$DIR/c$n" --set report_interval_ms=1000 \
        --set "check=smtp tcp $(api 1)" --set "check=scanner process-name clusterd-child" \
        "$@" >>"$DIR/c$n.log" 2>&1 &
    PID[c$n]=$!
}

start() { # start N [flags...]
    local n=$1; shift
    "$BIN/clusterd" --data "$DIR/p$n" --raft "$(raft "$n")" --api "$(api "$n")" \
        --profile fast "$@" >>"$DIR/p$n.log" 2>&1 &
    PID[$n]=$!
}

wait_for() { # wait_for SECONDS COMMAND...
    local deadline=$((SECONDS + $1)); shift
    until "$@" >/dev/null 2>&1; do
        if [ $SECONDS -ge $deadline ]; then
            echo "demo: timed out waiting for: $*" >&2
            tail -n 20 "$DIR"/p*.log >&2
            exit 1
        fi
        sleep 0.1
    done
}

voters() { ctl -o json members | grep -o '"role":"voter"' | wc -l; }
three_voters() { [ "$(voters)" = 3 ]; }
leader_id() { ctl -o json status 2>/dev/null | sed -n 's/.*"leader_id":\([0-9]*\).*/\1/p' | head -1; }

say "Parent 1 creates the cluster (clusterd --bootstrap)"
start 1 --bootstrap
wait_for 10 test -s "$DIR/p1/join-token"
TOKEN=$(cat "$DIR/p1/join-token")
echo "the first join token is in $DIR/p1/join-token (valid 24 h)"

say "Parents 2 and 3 join with the token: no ids, no files edited by hand"
start 2 --join "$(api 1)" --token "$TOKEN"
start 3 --join "$(api 1)" --token "$TOKEN"
wait_for 30 three_voters
run ctl members

say "Configuration goes in once, through the leader, and is on every parent"
run ctl put /policies/antispam/level high
run ctl put /policies/antivirus/engine on
run ctl put /policies/relay/allowed 192.0.2.0/24
run ctl range /policies/
run ctl status

OLD=$(leader_id)
say "Kill -9 the leader (parent $OLD): the others elect a new one"
T0=$(date +%s%N)
kill -9 "${PID[$OLD]}"
wait "${PID[$OLD]}" 2>/dev/null || true
unset "PID[$OLD]"
ctl put /demo/after-failover yes >/dev/null
T1=$(date +%s%N)
echo "first write acknowledged after the kill: $(( (T1 - T0) / 1000000 )) ms"
run ctl status || echo "(status exits non-zero while a parent is unreachable)"
run ctl get /policies/antispam/level

say "Parent $OLD restarts from its data directory and rejoins as a follower"
start "$OLD"
wait_for 20 three_voters
wait_for 20 ctl --endpoints "$(api "$OLD")" get --serializable /demo/after-failover
run ctl --endpoints "$(api "$OLD")" get --serializable /demo/after-failover
run ctl members

say "A graceful handover (what SIGTERM on the leader does before exiting)"
run ctl leader transfer
run ctl status

say "Backup: the cluster's data, streamed from a parent, checked offline"
run ctl snapshot save "$DIR/backup.snap"
run ctl snapshot verify "$DIR/backup.snap"

say "Scheduled backups: kept in the cluster, taken by whichever parent leads"
run ctl backup schedule --every 1h --dir "$DIR/backups" --retain 3 --now

say "A local program reads a parent's store through libclusterd: no daemon in the way"
run "$BIN/clusterd-read" -d "$DIR/p2/state.mdb" /policies/antispam/level
run "$BIN/clusterd-read" -d "$DIR/p2/state.mdb" --status

say "Two children join: registered through Raft, ids assigned by the cluster"
run ctl token create --ttl 600 >/dev/null
CTOKEN=$(ctl -o json token create --ttl 600 | sed -n 's/.*"token":"\([0-9a-f]*\)".*/\1/p')
run ctl join --child --token "$CTOKEN" --data "$DIR/c1" --app-version mailscan-9.1
child 1
echo "\$ clusterd-child --data $DIR/c2 --endpoints $ENDPOINTS --token <token>   (joins on first start)"
child 2 --endpoints "$ENDPOINTS" --token "$CTOKEN"
wait_for 20 test -s "$DIR/c2/child"
run ctl put /policies/antispam/level maximum
wait_for 10 bash -c "[ \"\$('$BIN/clusterctl' get --local='$DIR/c1/cache.mdb' /policies/antispam/level)\" = maximum ]"
wait_for 10 bash -c "[ \"\$('$BIN/clusterctl' get --local='$DIR/c2/cache.mdb' /policies/antispam/level)\" = maximum ]"
sleep 1.5
run ctl children
run ctl get /cluster/health/1

say "Programs on a child read its cache through libclusterd: no IPC, no parent"
run "$BIN/clusterd-read" -d "$DIR/c1/cache.mdb" /policies/antispam/level
run ctl -o json get --local="$DIR/c2/cache.mdb" /policies/relay/allowed

say "Total parent outage: kill -9 every parent; the children keep serving"
for i in 1 2 3; do
    if [ -n "${PID[$i]:-}" ]; then kill -9 "${PID[$i]}"; wait "${PID[$i]}" 2>/dev/null || true; unset "PID[$i]"; fi
done
sleep 4
run "$BIN/clusterd-read" -d "$DIR/c1/cache.mdb" --status
run ctl -o json get --local="$DIR/c2/cache.mdb" /policies/antispam/level
grep -h 'degraded' "$DIR"/c1.log | tail -1

say "Child 1 reboots while every parent is still down: it serves from its cache"
kill -TERM "${PID[c1]}"; wait "${PID[c1]}" 2>/dev/null || true
child 1
sleep 1
run ctl get --local="$DIR/c1/cache.mdb" /policies/antispam/level

say "The parents come back: the children catch up by themselves"
for i in 1 2 3; do start "$i"; done
wait_for 30 three_voters
run ctl put /policies/antispam/level adaptive
wait_for 20 bash -c "[ \"\$('$BIN/clusterctl' get --local='$DIR/c1/cache.mdb' /policies/antispam/level)\" = adaptive ]"
wait_for 20 bash -c "[ \"\$('$BIN/clusterctl' get --local='$DIR/c2/cache.mdb' /policies/antispam/level)\" = adaptive ]"
run ctl get --local="$DIR/c1/cache.mdb" /policies/antispam/level
run ctl get --local="$DIR/c2/cache.mdb" /policies/antispam/level
sleep 2
run ctl children

say "Child 2 leaves: deregistered, its daemon stops following"
run ctl leave --child --data "$DIR/c2"
st=0; wait "${PID[c2]}" 2>/dev/null || st=$?
echo "clusterd-child 2 exited with status $st (3: deregistered; systemd does not restart it)"
unset "PID[c2]"
run ctl children

say "Every parent is lost for good; a backup remains"
run ctl backup now
BACKUP=$(ctl -o json backup status | sed -n 's/.*"last":{[^}]*"file":"\([^"]*\)".*/\1/p')
run ctl put /policies/antispam/level lost-with-the-parents
wait_for 20 bash -c "[ \"\$('$BIN/clusterctl' get --local='$DIR/c1/cache.mdb' /policies/antispam/level)\" = lost-with-the-parents ]"
for i in 1 2 3; do
    if [ -n "${PID[$i]:-}" ]; then kill -9 "${PID[$i]}"; wait "${PID[$i]}" 2>/dev/null || true; unset "PID[$i]"; fi
    rm -rf "$DIR/p$i"
done
echo "child 1 still serves: $("$BIN/clusterctl" get --local="$DIR/c1/cache.mdb" /policies/antispam/level)"

say "New parents from the backup: same cluster id, a new history; the child reattaches by itself"
echo "\$ clusterd ... --bootstrap --restore $BACKUP"
start 1 --bootstrap --restore "$BACKUP"
wait_for 10 test -s "$DIR/p1/join-token"
TOKEN=$(cat "$DIR/p1/join-token")
start 2 --join "$(api 1)" --token "$TOKEN"
start 3 --join "$(api 1)" --token "$TOKEN"
wait_for 30 three_voters
wait_for 20 bash -c "[ \"\$('$BIN/clusterctl' get --local='$DIR/c1/cache.mdb' /policies/antispam/level)\" = adaptive ]"
run ctl get --local="$DIR/c1/cache.mdb" /policies/antispam/level
grep -h 'cache replaced' "$DIR/c1.log" | tail -1
run ctl put /policies/antispam/level restored
wait_for 20 bash -c "[ \"\$('$BIN/clusterctl' get --local='$DIR/c1/cache.mdb' /policies/antispam/level)\" = restored ]"
run ctl get --local="$DIR/c1/cache.mdb" /policies/antispam/level
sleep 1.5
run ctl children

say "Stopping everything (SIGTERM: the leader hands over first)"
for i in "${!PID[@]}"; do kill -TERM "${PID[$i]}"; done
for i in "${!PID[@]}"; do wait "${PID[$i]}" 2>/dev/null || true; unset "PID[$i]"; done
echo "done. Next: 'make check' runs every test."
