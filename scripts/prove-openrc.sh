#!/bin/sh
# Proof of the OpenRC service in a Debian bookworm chroot with Debian's openrc:
# the .deb installed, the service script put in place with the README's
# command, then `rc-service iofogd start`, `status`, `reload` (SIGHUP: same
# process, still RUNNING), `stop` (process gone, port closed), and a config
# check in start_pre that refuses a broken config.xml.
# OpenRC runs in a chroot once /run/openrc/softlevel exists.
#
#   scripts/prove-openrc.sh [--debs DIR]
#
# Root; loopback only. Work dir ./run/prove-openrc; cache as scripts/prove-deb.sh.
set -eu
ROOT=$(cd "$(dirname "$0")/.." && pwd)
. "$ROOT/scripts/lib/debian.sh"

DEBS="$ROOT/run/debs"
while [ $# -gt 0 ]; do
    case "$1" in
        --debs) DEBS="$2"; shift 2 ;;
        *) echo "usage: $0 [--debs DIR]" >&2; exit 2 ;;
    esac
done
START=$(date +%s)
ARCH=$(dpkg --print-architecture)

cleanup() {
    # supervise-daemon runs outside any service manager here: stop it ourselves.
    if [ -n "$CHROOT" ]; then
        in_chroot rc-service iofogd stop >/dev/null 2>&1 || true
    fi
    chroot_down
}
trap cleanup EXIT
trap 'exit 130' INT TERM

build_debs "$DEBS"
chroot_up "$ARCH" "$ROOT/run/prove-openrc"
PORT=$(free_port)
APTLOG="$ROOT/run/prove-openrc.apt.log"

log "apt install ./$(basename "$DEB1") openrc"
cp "$DEB1" "$CHROOT/tmp/"
in_chroot apt-get update -qq
in_chroot apt-get install -y -q --no-install-recommends "/tmp/$(basename "$DEB1")" openrc \
    >"$APTLOG" 2>&1 || { tail -n 30 "$APTLOG" >&2; die "apt install"; }

# The README's one line for the Debian package.
in_chroot sh -c 'install -m 0755 /usr/share/iofogd/openrc/iofogd /etc/init.d/iofogd && install -D -m 0644 /usr/share/iofogd/openrc/iofogd.confd /etc/conf.d/iofogd && rc-update add iofogd default'
# This proof's own settings: a free loopback port, and a stub service that
# provides `net` (a minbase chroot has no network service; the host's is used).
printf 'IOFOGD_ARGS="--address 127.0.0.1 --port %s"\n' "$PORT" >>"$CHROOT/etc/conf.d/iofogd"
printf '#!/sbin/openrc-run\ndepend() { provide net; }\nstart() { return 0; }\n' \
    >"$CHROOT/etc/init.d/proof-net"
chmod 755 "$CHROOT/etc/init.d/proof-net"
mkdir -p "$CHROOT/run/openrc"
touch "$CHROOT/run/openrc/softlevel"

# The daemon's pid: the process in this chroot whose program is /usr/bin/iofogd
# and whose user is iofog-agent (minbase has no pgrep).
daemon_pid() {
    uid=$(in_chroot id -u iofog-agent)
    for dir in /proc/[0-9]*; do
        [ "$(readlink "$dir/root" 2>/dev/null)" = "$CHROOT" ] || continue
        tr '\0' ' ' <"$dir/cmdline" 2>/dev/null | grep -q '/usr/bin/iofogd ' || continue
        [ "$(stat -c %u "$dir")" = "$uid" ] && echo "${dir#/proc/}"
    done
    return 0
}

in_chroot rc-service iofogd start || die "rc-service iofogd start"
wait_running "$PORT" 60 || { tail -n 30 "$CHROOT/var/log/iofog-agent/iofogd.err" >&2; die "daemon not RUNNING"; }
in_chroot rc-service iofogd status | tee /dev/stderr | grep -q started || die "rc-service iofogd status"
PID=$(daemon_pid)
[ -n "$PID" ] || die "no iofogd process of user iofog-agent"
log "ok: started, pid $PID, user iofog-agent"

in_chroot rc-service iofogd reload || die "rc-service iofogd reload"
wait_running "$PORT" 30 || die "not RUNNING after reload"
[ "$(daemon_pid)" = "$PID" ] || die "reload replaced the process ($PID -> $(daemon_pid))"
i=0
until grep -q 'configuration reloaded' "$CHROOT/var/log/iofog-agent/iofog-agent.0.log"; do
    i=$((i + 1))
    [ "$i" -lt 20 ] || die "the daemon logged no reload"
    sleep 0.5
done
log "ok: reload kept pid $PID"

in_chroot rc-service iofogd stop || die "rc-service iofogd stop"
[ -z "$(daemon_pid)" ] || die "iofogd still running after stop"
in_chroot iofog-agent --port "$PORT" status >/dev/null 2>&1 && die "port $PORT still answers after stop"
log "ok: stopped, no process left"

# start_pre refuses a config that does not load, with one clear line (the
# daemon falls back to config-bck.xml, so both are broken; agent-spec 4.1).
cp "$CHROOT/etc/iofog-agent/config.xml" "$CHROOT/tmp/config.xml.good"
for f in config.xml config-bck.xml; do
    echo '<config><broken' >"$CHROOT/etc/iofog-agent/$f"
done
if in_chroot rc-service iofogd start >"$ROOT/run/prove-openrc.bad.log" 2>&1; then
    die "start succeeded with a broken config.xml"
fi
log "ok: start refused a broken config.xml: $(grep -v '^ \*' "$ROOT/run/prove-openrc.bad.log" | head -n 1)"
cp "$CHROOT/tmp/config.xml.good" "$CHROOT/etc/iofog-agent/config.xml"
in_chroot rc-service iofogd zap >/dev/null 2>&1 || true
log "PASS prove-openrc in $(($(date +%s) - START)) s"
