#!/bin/bash
# deploy/systemd and deploy/examples are valid, without touching the system:
#   - `systemd-analyze verify` passes, with no warning at all, on copies of
#     both units whose ExecStart= runs the built binaries ($BUILD/bin) and
#     whose User=/Group= are root's as root, or absent otherwise (no
#     clusterd user is needed; verify warns about "nobody").  verify only
#     warns about, and ignores, a typo or a bad value: any output fails
#     here.  A broken copy must fail, so the check is not vacuous;
#   - the units say what docs/operations.md promises (Type=notify,
#     Restart=on-failure, the exit statuses that are not restarted);
#   - clusterd.sysusers and clusterd.tmpfiles applied to an empty root
#     (--root=TMP) make the clusterd user and the directories, owned and
#     moded as intended; a broken tmpfiles line must fail;
#   - the example configs name every key of cluster/config.c and of
#     clusterd-child's config_set, and parse with every line uncommented.
cd "$(dirname "$0")/../.." || exit 1
BUILD=$(cd "${BUILD:-build}" && pwd) || exit 1
fail=0
T=$(mktemp -d /tmp/cd-systemd-XXXXXX) || exit 1
trap 'rm -rf "$T"' EXIT

bad() {
    echo "FAIL: $*"
    fail=1
}

for tool in systemd-analyze systemd-tmpfiles systemd-sysusers; do
    command -v $tool >/dev/null || { echo "no $tool (package systemd; make deps)"; exit 1; }
done

# A copy of unit $1 that runs the built binaries as root or as the caller.
if [ "$(id -u)" = 0 ]; then
    user_sed='s|^User=.*|User=root|;s|^Group=.*|Group=root|'
else
    user_sed='/^User=/d;/^Group=/d'
fi
unit_copy() {
    sed -e "s|^ExecStart=/usr/bin/|ExecStart=$BUILD/bin/|" -e "$user_sed" \
        "deploy/systemd/$1" >"$T/$1"
}

# verify UNIT-FILE...: 0 if systemd-analyze accepts them silently.
verify() {
    local out rc
    out=$(systemd-analyze verify --man=no "$@" 2>&1)
    rc=$?
    if [ $rc != 0 ] || [ -n "$out" ]; then
        printf '%s\n' "$out" | sed 's/^/    /'
        return 1
    fi
    return 0
}

units="clusterd.service clusterd-child.service"
for u in $units; do
    [ -f "deploy/systemd/$u" ] || { bad "deploy/systemd/$u missing"; continue; }
    unit_copy "$u"
    grep -q "^ExecStart=$BUILD/bin/" "$T/$u" || bad "$u: ExecStart= is not /usr/bin/..."
    verify "$T/$u" || bad "systemd-analyze verify $u"
done

# The check must be able to fail: a typo'd key, a bad value, a missing
# binary (verify itself exits 0 on the first two).
unit_copy clusterd.service
sed 's/^ProtectHome=/ProtecHome=/' "$T/clusterd.service" >"$T/broken1.service"
sed 's/^Type=notify/Type=notifyy/' "$T/clusterd.service" >"$T/broken2.service"
sed "s|$BUILD/bin/clusterd |$BUILD/bin/no-such-clusterd |" "$T/clusterd.service" >"$T/broken3.service"
for b in broken1 broken2 broken3; do
    if verify "$T/$b.service" >/dev/null; then
        bad "a broken unit ($b) passed verification"
    fi
done

# What the docs promise.
want() { # unit line
    grep -qxF "$2" "deploy/systemd/$1" || bad "$1: no line '$2'"
}
for u in $units; do
    want "$u" "Type=notify"
    want "$u" "Restart=on-failure"
    want "$u" "User=clusterd"
    want "$u" "StateDirectory=clusterd"
    want "$u" "ProtectSystem=strict"
    want "$u" "NoNewPrivileges=yes"
    want "$u" "SystemCallFilter=@system-service"
    want "$u" "KillSignal=SIGTERM"
done
want clusterd.service "ExecStart=/usr/bin/clusterd --config /etc/clusterd/clusterd.conf \$CLUSTERD_ARGS"
want clusterd.service "RestartPreventExitStatus=2"
want clusterd.service "AmbientCapabilities=CAP_NET_ADMIN CAP_NET_RAW"
want clusterd.service "CapabilityBoundingSet=CAP_NET_ADMIN CAP_NET_RAW"
want clusterd.service "RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6 AF_NETLINK AF_PACKET"
want clusterd.service "ReadWritePaths=-/var/backups/clusterd"
want clusterd-child.service "ExecStart=/usr/bin/clusterd-child --config /etc/clusterd/clusterd-child.conf"
want clusterd-child.service "RestartPreventExitStatus=2 3"
want clusterd-child.service "CapabilityBoundingSet="
# The stop timeout covers a leader's handover (election_ms <= 60000, + 1 s).
stop=$(sed -n 's/^TimeoutStopSec=\([0-9]*\)s$/\1/p' deploy/systemd/clusterd.service)
[ -n "$stop" ] && [ "$stop" -ge 61 ] || bad "clusterd.service: TimeoutStopSec under 61 s"
nofile=$(sed -n 's/^LimitNOFILE=//p' deploy/systemd/clusterd.service)
[ -n "$nofile" ] && [ "$nofile" -ge 65536 ] || bad "clusterd.service: LimitNOFILE under 65536"

# sysusers + tmpfiles in an empty root.  As root: the real user and
# ownership; otherwise the caller owns everything ("-" for user and group).
R="$T/root"
mkdir -p "$R/etc"
cp deploy/systemd/clusterd.tmpfiles "$T/tmpfiles.conf"
if [ "$(id -u)" = 0 ]; then
    systemd-sysusers --root="$R" "$PWD/deploy/systemd/clusterd.sysusers" >/dev/null 2>"$T/sysusers.err" ||
        { cat "$T/sysusers.err"; bad "systemd-sysusers clusterd.sysusers"; }
    owner=$(awk -F: '$1 == "clusterd" {print $3 ":" $4}' "$R/etc/passwd")
    [ -n "$owner" ] || bad "clusterd.sysusers made no clusterd user"
else
    sed -i -E 's/ (root|clusterd) +(root|clusterd) / - - /' "$T/tmpfiles.conf"
    owner="$(id -u):$(id -g)"
fi
if systemd-tmpfiles --root="$R" --create "$T/tmpfiles.conf" >"$T/tmpfiles.out" 2>&1; then
    got=$(stat -c '%a %u:%g' "$R/var/lib/clusterd" 2>/dev/null)
    [ "$got" = "750 $owner" ] || bad "/var/lib/clusterd is '$got', expected '750 $owner'"
    [ -d "$R/etc/clusterd" ] || bad "/etc/clusterd not created"
    got=$(stat -c '%a %u:%g' "$R/var/backups/clusterd" 2>/dev/null)
    [ "$got" = "750 $owner" ] || bad "/var/backups/clusterd is '$got', expected '750 $owner'"
    [ -s "$T/tmpfiles.out" ] && { cat "$T/tmpfiles.out"; bad "systemd-tmpfiles warned"; }
else
    cat "$T/tmpfiles.out"
    bad "systemd-tmpfiles --create clusterd.tmpfiles"
fi
printf 'd /var/lib/clusterd 07x0 root root -\n' >"$T/broken.tmpfiles"
if systemd-tmpfiles --root="$R" --create "$T/broken.tmpfiles" >/dev/null 2>&1; then
    bad "a broken tmpfiles line was accepted"
fi

# Example configs: every key present, and each parses when uncommented
# (the config file is read before --help is acted on).
keys_parent=$(sed -n 's/.*strcmp(key, "\([a-z_]*\)") == 0.*/\1/p' cluster/config.c)
keys_child=$(sed -n '/^static int config_set(/,/^}/s/.*strcmp(k, "\([a-z_]*\)") == 0.*/\1/p' agents/child_main.c)
[ "$(wc -w <<<"$keys_parent")" -ge 15 ] || bad "parsed only $(wc -w <<<"$keys_parent") keys from cluster/config.c"
[ "$(wc -w <<<"$keys_child")" -ge 8 ] || bad "parsed only $(wc -w <<<"$keys_child") keys from agents/child_main.c"
for k in $keys_parent; do
    grep -qE "^#?$k = " deploy/examples/clusterd.conf || bad "deploy/examples/clusterd.conf: no '$k' (cluster/config.c)"
done
for k in $keys_child; do
    grep -qE "^#?$k = " deploy/examples/clusterd-child.conf || bad "deploy/examples/clusterd-child.conf: no '$k' (agents/child_main.c)"
done
sed 's/^#\([a-z_]* = \)/\1/' deploy/examples/clusterd.conf >"$T/p.conf"
sed 's/^#\([a-z_]* = \)/\1/' deploy/examples/clusterd-child.conf >"$T/c.conf"
"$BUILD/bin/clusterd" --config "$T/p.conf" --help >/dev/null || bad "clusterd rejects deploy/examples/clusterd.conf"
"$BUILD/bin/clusterd-child" --config "$T/c.conf" --help >/dev/null || bad "clusterd-child rejects deploy/examples/clusterd-child.conf"
echo "bogus_key = 1" >>"$T/c.conf"
"$BUILD/bin/clusterd-child" --config "$T/c.conf" --help >/dev/null 2>&1 && bad "clusterd-child accepted an unknown key"

[ $fail = 0 ] && echo "systemd: units verify, tmpfiles/sysusers apply, examples cover $(wc -w <<<"$keys_parent") + $(wc -w <<<"$keys_child") keys"
exit $fail
