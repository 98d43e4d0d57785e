#!/bin/bash
# clusterd-entrypoint [parent|child] [FLAGS...]   start a parent or a child
# clusterd-entrypoint COMMAND [ARGS...]           run COMMAND (clusterctl, sh)
#
# Configuration, later wins:
#   1. a file: /etc/clusterd/clusterd.conf (parent) or
#      /etc/clusterd/clusterd-child.conf (child) if present, or
#      $CLUSTERD_CONFIG;
#   2. environment: every CLUSTERD_<KEY>=VALUE becomes --set <key>=VALUE
#      (key in lower case: CLUSTERD_VIP_INTERFACE -> vip_interface), except
#      the variables below; CLUSTERD_CHECK holds the child's checks,
#      separated by ";";
#   3. FLAGS given to the container.
# Variables of the entrypoint itself:
#   CLUSTERD_ROLE        parent (default) or child, when not given as $1
#   CLUSTERD_CONFIG      the configuration file
#   CLUSTERD_BOOTSTRAP   1: create the cluster, on the very first start only
#   CLUSTERD_TOKEN_FILE  read the join token from this file, waiting up to
#                        CLUSTERD_TOKEN_WAIT seconds (120) for it; first
#                        start only (e.g. the first parent's data volume,
#                        mounted read-only: /bootstrap/join-token)
#   CLUSTERD_DB          used by clusterctl/clusterd-store, not passed on
#   CLUSTERD_ENDPOINTS   a child's endpoints; for a parent it is only
#                        clusterctl's default and not passed on
# CLUSTERD_JOIN and CLUSTERD_TOKEN are used on the first start only (no
# DATA/node or DATA/child yet).
# A parent's raft_address and api_address default to eth0's address, ports
# 7001 and 7101.
set -euo pipefail

role=${CLUSTERD_ROLE:-parent}
case "${1:-}" in
parent | child) role=$1; shift ;;
-*) ;;
"") ;;
*) exec "$@" ;;
esac

data=${CLUSTERD_DATA_DIR:-/var/lib/clusterd}
args=()
if [ "$role" = parent ]; then
    conf=${CLUSTERD_CONFIG:-/etc/clusterd/clusterd.conf}
    ident=$data/node
else
    conf=${CLUSTERD_CONFIG:-/etc/clusterd/clusterd-child.conf}
    ident=$data/child
fi
[ -r "$conf" ] && args+=(--config "$conf")

first_start=1
[ -e "$ident" ] && first_start=0

skip=" ROLE CONFIG BOOTSTRAP TOKEN_FILE TOKEN_WAIT DB CHECK "
[ "$role" = parent ] && skip="$skip ENDPOINTS "
# Once the node has its identity, join and token are history: clusterd
# refuses a join without a token, and the first token expires in a day.
[ "$first_start" = 0 ] && skip="$skip JOIN TOKEN "
for var in $(compgen -e | grep '^CLUSTERD_' || true); do
    name=${var#CLUSTERD_}
    case "$skip" in *" $name "*) continue ;; esac
    args+=(--set "${name,,}=${!var}")
done
if [ -n "${CLUSTERD_CHECK:-}" ]; then
    IFS=';' read -r -a checks <<<"$CLUSTERD_CHECK"
    for c in "${checks[@]}"; do
        c=$(echo "$c" | sed 's/^ *//; s/ *$//')
        [ -n "$c" ] && args+=(--set "check=$c")
    done
fi

if [ "$first_start" = 1 ] && [ -n "${CLUSTERD_TOKEN_FILE:-}" ] && [ -z "${CLUSTERD_TOKEN:-}" ]; then
    wait_s=${CLUSTERD_TOKEN_WAIT:-120}
    for ((i = 0; i < wait_s * 2; i++)); do
        [ -s "$CLUSTERD_TOKEN_FILE" ] && break
        sleep 0.5
    done
    [ -s "$CLUSTERD_TOKEN_FILE" ] || {
        echo "clusterd-entrypoint: no join token in $CLUSTERD_TOKEN_FILE after ${wait_s}s" >&2
        exit 1
    }
    args+=(--set "token=$(tr -d ' \n' <"$CLUSTERD_TOKEN_FILE")")
fi

if [ "$role" = child ]; then
    exec /usr/bin/clusterd-child "${args[@]}" "$@"
fi

addr=$(ip -4 -o addr show dev eth0 2>/dev/null | awk '{split($4, a, "/"); print a[1]; exit}')
if [ -n "$addr" ]; then
    in_conf() { [ -r "$conf" ] && grep -q "^[[:space:]]*$1[[:space:]]*=" "$conf"; }
    [ -n "${CLUSTERD_RAFT_ADDRESS:-}" ] || in_conf raft_address ||
        args=(--set "raft_address=$addr:7001" "${args[@]}")
    [ -n "${CLUSTERD_API_ADDRESS:-}" ] || in_conf api_address ||
        args=(--set "api_address=$addr:7101" "${args[@]}")
fi
if [ "$first_start" = 1 ] && [ "${CLUSTERD_BOOTSTRAP:-0}" = 1 ]; then
    args+=(--bootstrap)
fi

# The VIP needs CAP_NET_ADMIN (12) and CAP_NET_RAW (13): run the copy of
# clusterd that carries them as file capabilities when the container may
# have them (docker run --cap-add NET_ADMIN --cap-add NET_RAW).
bnd=$(awk '/^CapBnd:/ {print $2}' /proc/self/status)
if [ $(((0x$bnd >> 12) & 3)) = 3 ]; then
    exec /usr/libexec/clusterd/clusterd-vip "${args[@]}" "$@"
fi
if [ -n "${CLUSTERD_VIP:-}" ]; then
    echo "clusterd-entrypoint: vip is set but the container lacks NET_ADMIN/NET_RAW" \
        "(--cap-add NET_ADMIN --cap-add NET_RAW): the VIP will fail" >&2
fi
exec /usr/bin/clusterd "${args[@]}" "$@"
