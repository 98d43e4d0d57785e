#!/bin/bash
# make compose-test: deploy/compose/compose.yaml on this machine's Docker
# engine.  3 parents, 2 children and the VIP on a bridge network: wait for
# 3 voters, write through the VIP, stop the leader's container, check that
# the VIP moved and writes go on, that the children kept serving, restart
# the container and check it rejoined; everything is torn down at the end,
# on failure too.  Needs the image (make image; IMAGE=clusterd:latest).
set -euo pipefail
cd "$(dirname "$0")/../.."
export CLUSTERD_IMAGE=${IMAGE:-clusterd:latest}
PROJECT=${COMPOSE_PROJECT:-clusterd-compose-test}
FILE=deploy/compose/compose.yaml
VIP=172.28.10.10
T_START=$SECONDS

if docker compose version >/dev/null 2>&1; then
    COMPOSE=(docker compose -f "$FILE" -p "$PROJECT")
elif command -v docker-compose >/dev/null 2>&1; then
    COMPOSE=(docker-compose -f "$FILE" -p "$PROJECT")
else
    echo "compose-test: neither 'docker compose' nor docker-compose (make deps)" >&2
    exit 1
fi
CLIENT=$PROJECT-client

say() { printf '\n== %s (%ds)\n' "$*" $((SECONDS - T_START)); }
fail() {
    echo "compose-test: FAIL: $*" >&2
    exit 1
}

teardown() {
    local rc=$?
    trap - EXIT INT TERM
    if [ $rc != 0 ]; then
        echo "--- logs (last lines of each container)" >&2
        for s in p1 p2 p3 child1 child2; do
            id=$("${COMPOSE[@]}" ps -q "$s" 2>/dev/null || true)
            [ -n "$id" ] || continue
            echo "--- $s" >&2
            docker logs --tail 25 "$id" 2>&1 | sed 's/^/  /' >&2 || true
        done
    fi
    docker rm -f -v "$CLIENT" >/dev/null 2>&1 || true
    "${COMPOSE[@]}" down -v --remove-orphans -t 5 >/dev/null 2>&1 || true
    if [ $rc = 0 ]; then
        echo "compose-test: passed in $((SECONDS - T_START)) s"
    else
        echo "compose-test: failed (exit $rc) after $((SECONDS - T_START)) s" >&2
    fi
    exit $rc
}
trap teardown EXIT
trap 'exit 130' INT TERM

wait_for() { # wait_for SECONDS WHAT COMMAND...
    local deadline=$((SECONDS + $1)) what=$2
    shift 2
    until "$@" >/dev/null 2>&1; do
        [ $SECONDS -lt $deadline ] || fail "timed out waiting for $what"
        sleep 0.5
    done
}

declare -A CID
cid() { echo "${CID[$1]:-$("${COMPOSE[@]}" ps -q "$1")}"; } # filled after up
# clusterctl from a client container on the network, through the VIP only.
ctl() { docker exec "$CLIENT" clusterctl --timeout 5000 --endpoints "$VIP:7101" "$@"; }
ctl_at() { # ctl_at ADDR ARGS...
    local a=$1
    shift
    docker exec "$CLIENT" clusterctl --timeout 5000 --endpoints "$a:7101" "$@"
}
voters_up() { # 3 voters, all reachable
    local m
    m=$(ctl -o json members) || return 1
    [ "$(grep -o '"role":"voter"' <<<"$m" | wc -l)" = 3 ] &&
        ! grep -q '"reachable":false' <<<"$m"
}
leader_service() { # the service whose address is the leader's API
    local api
    api=$(ctl -o json status 2>/dev/null | head -1 |
        sed -n 's/.*"leader_api":"172\.28\.10\.1\([1-3]\):7101".*/p\1/p')
    [ -n "$api" ] && echo "$api"
}
has_vip() { docker exec "$(cid "$1")" ip -4 -o addr show dev eth0 | grep -q " $VIP/"; }
vip_holders() {
    local s out=""
    for s in p1 p2 p3; do
        if [ "$(docker inspect -f '{{.State.Running}}' "$(cid $s)")" = true ] && has_vip $s; then
            out="$out $s"
        fi
    done
    echo "${out# }"
}
child_has() { # child_has SERVICE KEY VALUE: its local cache has it
    [ "$(docker exec "$(cid "$1")" clusterctl get --local "$2" 2>/dev/null)" = "$3" ]
}
children_following() {
    local out
    out=$(ctl children) || return 1
    [ "$(grep -c ' following ' <<<"$out")" = 2 ]
}

docker image inspect "$CLUSTERD_IMAGE" >/dev/null 2>&1 ||
    fail "no image $CLUSTERD_IMAGE: run 'make image'"
# Leftovers of an interrupted run of this same project.
docker rm -f -v "$CLIENT" >/dev/null 2>&1 || true
"${COMPOSE[@]}" down -v --remove-orphans -t 1 >/dev/null 2>&1 || true

say "up: 3 parents (p1 bootstraps, p2 and p3 join), 2 children, VIP $VIP"
"${COMPOSE[@]}" up -d 2>&1 | grep -v '^$' | sed 's/^/  /'
for s in p1 p2 p3 child1 child2; do
    CID[$s]=$("${COMPOSE[@]}" ps -q $s)
    [ -n "${CID[$s]}" ] || fail "no container for $s"
done
docker run -d --name "$CLIENT" --network "${PROJECT}_clusterd" \
    --entrypoint sleep "$CLUSTERD_IMAGE" infinity >/dev/null
wait_for 60 "3 reachable voters" voters_up
ctl members

say "the parents run as the non-root user, the leader with the VIP's capabilities only"
for s in p1 p2 p3 child1 child2; do
    uid=$(docker exec "$(cid $s)" awk '/^Uid:/ {print $2}' /proc/1/status)
    [ "$uid" != 0 ] || fail "$s runs as root"
done
L=$(leader_service) || fail "no leader"
caps=$(docker exec "$(cid "$L")" awk '/^CapEff:/ {print $2}' /proc/1/status)
[ $((0x$caps)) = $(((1 << 12) | (1 << 13))) ] || fail "$L: CapEff $caps, expected NET_ADMIN+NET_RAW"
echo "uid 999 everywhere; $L CapEff=$caps"

say "writes through the VIP; the leader ($L) holds it"
vip_on() { [ "$(vip_holders)" = "$1" ]; }
wait_for 10 "the VIP on $L only" vip_on "$L"
ctl put /compose/before-failover yes
[ "$(ctl get /compose/before-failover)" = yes ] || fail "read back through the VIP"
docker exec "$(cid "$L")" ip -4 addr show dev eth0 | sed 's/^/  /'
docker logs "$(cid "$L")" 2>&1 | grep 'vip: claimed' | tail -1
wait_for 20 "both children following" children_following
for c in child1 child2; do
    wait_for 10 "$c's cache" child_has $c /compose/before-failover yes
done
ctl children

OLD=$L
say "docker stop the leader's container ($OLD)"
T0=$SECONDS
docker stop -t 10 "$(cid "$OLD")" >/dev/null
echo "docker stop took $((SECONDS - T0)) s (a leader hands over on SIGTERM)"
for c in child1 child2; do
    child_has $c /compose/before-failover yes || fail "$c stopped serving its cache"
done
new_leader() {
    local l
    l=$(leader_service) && [ "$l" != "$OLD" ] && [ "$(vip_holders)" = "$l" ]
}
wait_for 20 "a new leader holding the VIP" new_leader
L=$(leader_service)
echo "new leader $L holds the VIP (checked $((SECONDS - T0)) s after the stop began)"
docker logs "$(cid "$L")" 2>&1 | grep 'vip: claimed' | tail -1
docker logs "$(cid "$OLD")" 2>&1 | grep 'vip: released' | tail -1 || true
wait_for 10 "a write through the VIP" ctl put /compose/after-failover yes
ctl put /compose/level high
[ "$(ctl get /compose/after-failover)" = yes ] || fail "read back after failover"

say "the children kept serving and follow the new leader"
for c in child1 child2; do
    child_has $c /compose/before-failover yes || fail "$c lost its cache"
    wait_for 15 "$c's cache to follow" child_has $c /compose/level high
    echo "$c: /compose/level = $(docker exec "$(cid $c)" clusterctl get --local /compose/level)"
done
wait_for 20 "both children following" children_following
ctl children

say "docker start $OLD: it rejoins as a follower"
docker start "$(cid "$OLD")" >/dev/null
OLD_IP=172.28.10.1${OLD#p}
wait_for 30 "3 reachable voters" voters_up
wait_for 15 "$OLD to catch up" bash -c \
    "[ \"\$(docker exec $CLIENT clusterctl --timeout 3000 --endpoints $OLD_IP:7101 get --serializable /compose/level)\" = high ]"
ctl members
[ "$(vip_holders)" = "$(leader_service)" ] || fail "VIP holders '$(vip_holders)', leader $(leader_service)"
ctl put /compose/after-rejoin yes
wait_for 10 "$OLD to apply a new write" bash -c \
    "[ \"\$(docker exec $CLIENT clusterctl --timeout 3000 --endpoints $OLD_IP:7101 get --serializable /compose/after-rejoin)\" = yes ]"
echo "$OLD is back: 3 voters reachable, VIP on $(vip_holders) only"

say "docker kill (SIGKILL) the leader's container ($(leader_service)): a crash"
OLD=$(leader_service)
docker kill "$(cid "$OLD")" >/dev/null
for c in child1 child2; do
    child_has $c /compose/after-rejoin yes || fail "$c stopped serving its cache"
done
wait_for 20 "a new leader holding the VIP" new_leader
L=$(leader_service)
docker logs "$(cid "$L")" 2>&1 | grep 'vip: claimed' | tail -1
wait_for 10 "a write through the VIP" ctl put /compose/after-crash yes
for c in child1 child2; do
    wait_for 15 "$c's cache to follow" child_has $c /compose/after-crash yes
done
docker start "$(cid "$OLD")" >/dev/null
OLD_IP=172.28.10.1${OLD#p}
wait_for 30 "3 reachable voters" voters_up
wait_for 15 "$OLD to catch up" bash -c \
    "[ \"\$(docker exec $CLIENT clusterctl --timeout 3000 --endpoints $OLD_IP:7101 get --serializable /compose/after-crash)\" = yes ]"
vip_on "$(leader_service)" || fail "VIP holders '$(vip_holders)', leader $(leader_service)"
ctl members
echo "$OLD is back after the crash; VIP on $(vip_holders) only"
