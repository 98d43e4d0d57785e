#!/bin/sh
# Installs, as root and idempotently, every Debian package that clusterd's
# build, tests and benchmarks use.  libraft comes from bookworm-backports
# (0.22.1): Debian 12's own 0.15.0 lacks safety fixes (see docs/).
set -eu

export DEBIAN_FRONTEND=noninteractive
BACKPORTS=/etc/apt/sources.list.d/bookworm-backports.list

# Build, unit tests, fuzzing, lint.
PKGS="build-essential pkg-config clang clang-format clang-tidy cppcheck
libclang-rt-14-dev llvm
zlib1g-dev liblmdb-dev lmdb-utils libprotobuf-c-dev protobuf-c-compiler libcmocka-dev
libuv1-dev libssl-dev libsystemd-dev systemd libmicrohttpd-dev git
iproute2 iptables nftables arping faketime fiu-utils libfiu-dev
libnetfilter-queue-dev libmnl-dev
libldns-dev ldnsutils libldap-dev slapd ldap-utils nsd
etcd-server etcd-client keepalived
jq procps psmisc curl ca-certificates
debootstrap docker-compose"

missing=""
for p in $PKGS; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' \
        || missing="$missing $p"
done

raft_ok=0
v=$(dpkg-query -W -f='${Version}' libraft-dev 2>/dev/null || true)
case "$v" in 0.22.*|0.2[3-9].*|[1-9]*) raft_ok=1 ;; esac

if [ -z "$missing" ] && [ "$raft_ok" = 1 ]; then
    echo "deps: all packages present (libraft-dev $v)"
    exit 0
fi

if [ "$(id -u)" != 0 ]; then
    echo "deps: missing packages:$missing; run 'make deps' as root" >&2
    exit 1
fi
if ! grep -rqs 'bookworm-backports' /etc/apt/sources.list /etc/apt/sources.list.d/; then
    echo "deb http://deb.debian.org/debian bookworm-backports main" > "$BACKPORTS"
fi

# slapd asks questions on install; preseed it so the install never blocks.
echo "slapd slapd/no_configuration boolean true" | debconf-set-selections

apt-get update -q || { echo "deps: apt-get update failed" >&2; exit 1; }
if [ -n "$missing" ]; then
    echo "deps: installing$missing"
    apt-get install -y -q --no-install-recommends $missing
fi
if [ "$raft_ok" != 1 ]; then
    apt-get install -y -q --no-install-recommends -t bookworm-backports \
        libraft-dev libraft-tools
fi
# The daemons are tools for tests and benchmarks, never system services here.
for s in slapd nsd etcd keepalived; do
    if command -v systemctl >/dev/null 2>&1; then
        systemctl disable --now "$s" >/dev/null 2>&1 || true
    fi
    if [ -x /etc/init.d/$s ]; then /etc/init.d/$s stop >/dev/null 2>&1 || true; fi
done
echo "deps: done (libraft-dev $(dpkg-query -W -f='${Version}' libraft-dev))"
