#!/bin/sh
# Proof of the Debian package from a clean Debian bookworm (debootstrap chroot):
# `apt install ./iofogd_*.deb` pulls the dependencies from the archive; the
# user, group, config.xml, token and directories exist as promised; the daemon
# starts (directly: no systemd is PID 1 in a chroot) and `iofog-agent status`
# says RUNNING; an upgrade to a newer build keeps token, config.xml and the
# node identity; remove keeps the files; purge leaves none behind. The
# package's /etc/init.d/iofog-agent, as sysvinit runs it: `service iofog-agent
# start|status|prune|restart|stop`.
#
#   scripts/prove-deb.sh [--arch amd64|arm64|armhf] [--debs DIR]
#
# Root; loopback only. Needs debootstrap (installed if missing) and, for a
# foreign --arch, qemu-user-static (scripts/prove-pi.sh sets that up).
# Work dir ./run/prove-deb-ARCH; cache $IOFOGD_PROVE_CACHE (/var/cache/iofogd-prove).
set -eu
ROOT=$(cd "$(dirname "$0")/.." && pwd)
. "$ROOT/scripts/lib/debian.sh"

proof_args "$@"
# qemu-user is slow: give the daemon longer to come up there.
WAIT=60
[ "$ARCH" = "$(dpkg --print-architecture)" ] || WAIT=300
DAEMON_PID=""

stop_daemon() {
    [ -n "$DAEMON_PID" ] || return 0
    kill -TERM "$DAEMON_PID" 2>/dev/null || true
    wait "$DAEMON_PID" || true
    DAEMON_PID=""
}
cleanup() {
    stop_daemon
    chroot_down
}
trap cleanup EXIT
trap 'exit 130' INT TERM

build_debs "$DEBS"
chroot_up "$ARCH" "$ROOT/run/prove-deb-$ARCH"
PORT=$(free_port)

# The daemon as the service runs it: the package's user, its groups, foreground.
start_daemon() {
    chroot "$CHROOT" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin LANG=C.UTF-8 \
        setpriv --reuid iofog-agent --regid iofog-agent --init-groups \
        iofogd --address 127.0.0.1 --port "$PORT" >>"$CHROOT/tmp/iofogd.out" 2>&1 &
    DAEMON_PID=$!
    wait_running "$PORT" "$WAIT" || { tail -n 30 "$CHROOT/tmp/iofogd.out" >&2; die "daemon not RUNNING"; }
}

# mode owner:group of a path in the chroot
perms() { in_chroot stat -c '%a %U:%G' "$1"; }
identity() {  # hashes of what an upgrade must keep
    in_chroot sh -c 'sha256sum /etc/iofog-agent/local-api /etc/iofog-agent/config.xml; id -u iofog-agent'
}

# A stand-in Docker engine package: ships /usr/sbin/dockerd and creates group
# docker in its postinst, as docker.io does (it is installed later, below).
ENGINE="$CHROOT/tmp/proof-engine"
mkdir -p "$ENGINE/DEBIAN" "$ENGINE/usr/sbin"
printf 'Package: proof-docker-engine\nVersion: 1.0\nArchitecture: all\nMaintainer: proof <proof@example.org>\nDescription: stand-in engine for scripts/prove-deb.sh\n' \
    >"$ENGINE/DEBIAN/control"
printf '#!/bin/sh\nset -e\n[ "$1" != configure ] || getent group docker >/dev/null || groupadd --system docker\n' \
    >"$ENGINE/DEBIAN/postinst"
printf '#!/bin/sh\nexit 0\n' >"$ENGINE/usr/sbin/dockerd"
chmod 755 "$ENGINE/DEBIAN/postinst" "$ENGINE/usr/sbin/dockerd"
in_chroot dpkg-deb -b /tmp/proof-engine /tmp/proof-engine.deb >/dev/null

log "apt install ./$(basename "$DEB1") ($ARCH)"
cp "$DEB1" "$DEB2" "$CHROOT/tmp/"
in_chroot apt-get update -qq
in_chroot apt-get install -y -q --no-install-recommends "/tmp/$(basename "$DEB1")" \
    >"$ROOT/run/prove-deb-$ARCH.apt.log" 2>&1 \
    || { tail -n 30 "$ROOT/run/prove-deb-$ARCH.apt.log" >&2; die "apt install"; }
for dep in python3 python3-psutil adduser; do
    in_chroot dpkg-query -W -f='${Status}' "$dep" | grep -q 'install ok installed' \
        || die "dependency $dep not installed"
done
log "ok: dependencies pulled from the archive: python3 python3-psutil adduser"

expect "/usr/bin/iofogd" "$(in_chroot sh -c 'test -x /usr/bin/iofogd && test -x /usr/bin/iofog-agent && echo present')" present
groups() { in_chroot id -nG iofog-agent | tr ' ' '\n' | sort | tr '\n' ' '; }
expect "groups of iofog-agent (no engine yet)" "$(groups)" "iofog-agent "
expect "login shell" "$(in_chroot getent passwd iofog-agent | cut -d: -f7)" /usr/sbin/nologin
for dir in /etc/iofog-agent /var/lib/iofog-agent /var/log/iofog-agent; do
    expect "$dir" "$(perms $dir)" "750 iofog-agent:iofog-agent"
done
expect "config.xml" "$(perms /etc/iofog-agent/config.xml)" "640 iofog-agent:iofog-agent"
expect "local-api token" "$(perms /etc/iofog-agent/local-api)" "640 iofog-agent:iofog-agent"
expect "token format" "$(in_chroot sh -c 'grep -cE "^[A-Za-z0-9]{32}$" /etc/iofog-agent/local-api; wc -c </etc/iofog-agent/local-api')" "1
32"
expect "config check" "$(in_chroot setpriv --reuid iofog-agent --regid iofog-agent --init-groups iofogd --check-config >/dev/null 2>&1 && echo ok)" ok
expect "unit file" "$(in_chroot sh -c 'test -f /lib/systemd/system/iofogd.service && echo present')" present

start_daemon
# On Debian's Python, the packaged daemon at idle has not loaded OpenSSL: it
# does only for an https Controller or an amqps router (docs/host.md#memory).
if grep -Eq '/_ssl\.|libssl\.so' "/proc/$DAEMON_PID/maps"; then
    die "the idle daemon has OpenSSL mapped"
fi
log "ok: the idle daemon has not loaded OpenSSL; $(grep VmRSS "/proc/$DAEMON_PID/status" | tr -s ' \t' ' ')"
stop_daemon

# sysvinit (no init runs in a chroot; `service` then runs the script): the
# package's /etc/init.d/iofog-agent runs the daemon itself, as its user. The
# proof's port and loopback go into config.xml, where the script's daemon
# and `iofog-agent prune` read them.
in_chroot sed -i -e "s|<local_api_port>[^<]*</local_api_port>|<local_api_port>$PORT</local_api_port>|" \
    -e 's|<local_api_address>[^<]*</local_api_address>|<local_api_address>127.0.0.1</local_api_address>|' \
    /etc/iofog-agent/config.xml
in_chroot service iofog-agent start >/dev/null || die "service iofog-agent start"
wait_running "$PORT" "$WAIT" || die "not RUNNING after service iofog-agent start"
SYSV_PID=$(cat "$CHROOT/run/iofog-agent.pid")
expect "uid of the daemon that service iofog-agent started" "$(stat -c %u "/proc/$SYSV_PID")" \
    "$(in_chroot id -u iofog-agent)"
expect "service iofog-agent status" "$(in_chroot service iofog-agent status >/dev/null && echo 0 || echo $?)" 0
set +e; out=$(in_chroot service iofog-agent prune); rc=$?; set -e
expect "service iofog-agent prune (no engine)" "$rc $(echo "$out" | tail -n 1)" "1 Failure - not pruned."
in_chroot service iofog-agent restart >/dev/null || die "service iofog-agent restart"
wait_running "$PORT" "$WAIT" || die "not RUNNING after service iofog-agent restart"
[ "$(cat "$CHROOT/run/iofog-agent.pid")" != "$SYSV_PID" ] || die "service iofog-agent restart kept pid $SYSV_PID"
in_chroot service iofog-agent stop >/dev/null || die "service iofog-agent stop"
expect "service iofog-agent status after stop" "$(in_chroot service iofog-agent status >/dev/null && echo 0 || echo $?)" 3
in_chroot "${CLI:-iofog-agent}" --port "$PORT" status >/dev/null 2>&1 && die "port $PORT still answers after stop"
log "ok: service iofog-agent start|status|prune|restart|stop (sysvinit)"

# An engine installed after iofogd: the package's dpkg trigger on dockerd
# puts the user in the engine's new docker group (never in sudo).
in_chroot dpkg -i /tmp/proof-engine.deb >>"$ROOT/run/prove-deb-$ARCH.apt.log" 2>&1 || die "engine install"
expect "groups of iofog-agent (engine installed later)" "$(groups)" "docker iofog-agent "

# A provisioned node: its identity is iofog_uuid and access_token in config.xml.
# (The daemon writes empty elements as <tag/>.)
in_chroot sed -i -E \
    -e 's#<iofog_uuid(/>|>[^<]*</iofog_uuid>)#<iofog_uuid>proof-node-uuid-0001</iofog_uuid>#' \
    -e 's#<access_token(/>|>[^<]*</access_token>)#<access_token>proof-node-token-0001</access_token>#' \
    /etc/iofog-agent/config.xml
in_chroot grep -q '<iofog_uuid>proof-node-uuid-0001</iofog_uuid>' /etc/iofog-agent/config.xml \
    || die "could not write iofog_uuid into config.xml"
in_chroot touch /var/lib/iofog-agent/proof-state /var/log/iofog-agent/proof-log
BEFORE=$(identity)

log "upgrade to $(basename "$DEB2")"
in_chroot apt-get install -y -q --no-install-recommends "/tmp/$(basename "$DEB2")" \
    >>"$ROOT/run/prove-deb-$ARCH.apt.log" 2>&1 || die "apt upgrade"
expect "installed version" "$(in_chroot dpkg-query -W -f='${Version}' iofogd)" \
    "$(dpkg-deb -f "$DEB2" Version)"
expect "token, config.xml and uid after upgrade" "$(identity)" "$BEFORE"
start_daemon
stop_daemon
expect "node uuid after the upgraded daemon ran" \
    "$(in_chroot sed -n 's|.*<iofog_uuid>\(.*\)</iofog_uuid>.*|\1|p' /etc/iofog-agent/config.xml)" \
    proof-node-uuid-0001
expect "token after the upgraded daemon ran" "$(identity | head -n 1)" "$(echo "$BEFORE" | head -n 1)"

log "apt remove"
in_chroot apt-get remove -y -q iofogd >>"$ROOT/run/prove-deb-$ARCH.apt.log" 2>&1 || die "apt remove"
expect "files kept by remove" "$(in_chroot sh -c 'ls /etc/iofog-agent/local-api /etc/iofog-agent/config.xml /var/lib/iofog-agent/proof-state /var/log/iofog-agent/proof-log | wc -l; test -e /usr/bin/iofogd || echo gone')" "4
gone"

log "apt purge"
in_chroot apt-get purge -y -q iofogd >>"$ROOT/run/prove-deb-$ARCH.apt.log" 2>&1 || die "apt purge"
in_chroot dpkg --purge proof-docker-engine >/dev/null
rm -rf "$CHROOT/tmp/"iofogd* "$CHROOT/tmp/proof-engine"*
LEFT=$(in_chroot find / -xdev \( -path /var/cache/apt/archives -o -path /proc -o -path /sys \) -prune \
    -o -name '*iofog*' -print)
LEFT_RUN=$(in_chroot find /run -name '*iofog*')
expect "files left after purge" "$LEFT$LEFT_RUN" ""
log "PASS prove-deb $ARCH in $(($(date +%s) - START)) s"
