#!/bin/sh
# Proof of the systemd unit under a real systemd: a bookworm tree with systemd
# and the .deb installed, booted with systemd-nspawn (private network: only
# loopback). The package enables the unit; at boot it must reach active
# (Type=notify: READY=1 arrives) as user iofog-agent under the unit's
# hardening, `iofog-agent status` says RUNNING, `systemctl reload` keeps the
# process and the daemon logs the reload, a SIGKILL is followed by a restart
# (Restart=on-failure), `systemctl stop` ends it cleanly (SIGTERM, status 0),
# an upgrade (dpkg -i of a newer build) restarts it with the same token, and
# a purge stops it and leaves no files.
# It also prints systemd-analyze's exposure score of the installed unit.
#
#   scripts/prove-systemd.sh [--debs DIR]
#
# Root. Installs debootstrap and systemd-container when missing. Work dir
# ./run/prove-systemd; cache as scripts/prove-deb.sh.
set -eu
ROOT=$(cd "$(dirname "$0")/.." && pwd)
. "$ROOT/scripts/lib/debian.sh"

proof_args "$@"
NSPAWN_PID=""
LEADER=""

cleanup() {
    if [ -n "$NSPAWN_PID" ] && kill -0 "$NSPAWN_PID" 2>/dev/null; then
        # SIGTERM asks nspawn to shut the container down cleanly.
        kill -TERM "$NSPAWN_PID" 2>/dev/null || true
        wait "$NSPAWN_PID" 2>/dev/null || true
    fi
    chroot_down
}
trap cleanup EXIT
trap 'exit 130' INT TERM

need_debs systemd-container
build_debs "$DEBS"
chroot_up "$ARCH" "$ROOT/run/prove-systemd"
APTLOG="$ROOT/run/prove-systemd.apt.log"
log "apt install systemd ./$(basename "$DEB1")"
cp "$DEB1" "$CHROOT/tmp/"
# nspawn mounts a tmpfs on /tmp: the upgrade's .deb waits in /root.
cp "$DEB2" "$CHROOT/root/"
in_chroot apt-get update -qq
in_chroot apt-get install -y -q --no-install-recommends systemd systemd-sysv dbus \
    "/tmp/$(basename "$DEB1")" >"$APTLOG" 2>&1 || { tail -n 30 "$APTLOG" >&2; die "apt install"; }
expect "unit enabled by the package" "$(in_chroot systemctl is-enabled iofogd.service)" enabled
echo proof >"$CHROOT/etc/hostname"
# A booted system: maintainer scripts may start and restart services now.
rm -f "$CHROOT/usr/sbin/policy-rc.d"
chroot_down

log "boot with systemd-nspawn"
systemd-nspawn --quiet --directory="$CHROOT" --boot --private-network \
    --register=no --keep-unit --console=pipe >"$ROOT/run/prove-systemd.boot.log" 2>&1 &
NSPAWN_PID=$!
i=0
until [ -n "$LEADER" ]; do
    LEADER=$(cat /proc/"$NSPAWN_PID"/task/*/children 2>/dev/null | awk '{print $1}')
    i=$((i + 1))
    [ "$i" -lt 100 ] || { cat "$ROOT/run/prove-systemd.boot.log" >&2; die "container did not start"; }
    sleep 0.1
done
in_ct() { nsenter --target "$LEADER" --all "$@"; }
prop() { in_ct systemctl show iofogd.service --value -p "$1"; }

wait_state() {  # wait_state STATE SECONDS
    i=0
    while [ "$(in_ct systemctl is-active iofogd.service 2>/dev/null)" != "$1" ]; do
        i=$((i + 1))
        [ "$i" -lt "$(($2 * 2))" ] || { in_ct journalctl -u iofogd --no-pager | tail -n 20 >&2; die "iofogd not $1"; }
        sleep 0.5
    done
}
wait_state active 120
expect "status first line" "$(in_ct iofog-agent status | head -n 1)" "ioFog daemon                : RUNNING"
PID=$(prop MainPID)
expect "main process user" "$(in_ct stat -c %U "/proc/$PID")" iofog-agent
log "exposure: $(in_ct systemd-analyze security iofogd.service 2>/dev/null | tail -n 1)"

in_ct systemctl reload iofogd.service || die "systemctl reload"
expect "main pid after reload" "$(prop MainPID)" "$PID"
i=0
until in_ct journalctl -u iofogd --no-pager | grep -q 'configuration reloaded'; do
    i=$((i + 1))
    [ "$i" -lt 20 ] || die "the daemon logged no reload"
    sleep 0.5
done
log "ok: reload logged by the daemon"

in_ct systemctl kill --kill-whom=main --signal=SIGKILL iofogd.service
i=0
until [ "$(prop NRestarts)" = 1 ] && [ "$(in_ct systemctl is-active iofogd.service)" = active ]; do
    i=$((i + 1))
    [ "$i" -lt 60 ] || die "no restart after SIGKILL"
    sleep 0.5
done
expect "status after restart" "$(in_ct iofog-agent status | head -n 1)" "ioFog daemon                : RUNNING"

in_ct systemctl stop iofogd.service
expect "state after stop" "$(prop ActiveState) $(prop Result) $(prop ExecMainStatus)" "inactive success 0"

in_ct systemctl start iofogd.service
wait_state active 60
PID=$(prop MainPID)
TOKEN=$(in_ct sha256sum /etc/iofog-agent/local-api)
in_ct dpkg -i "/root/$(basename "$DEB2")" >>"$APTLOG" 2>&1 || die "dpkg -i $(basename "$DEB2")"
wait_state active 60
[ "$(prop MainPID)" != "$PID" ] || die "the upgrade did not restart the daemon"
expect "token after upgrade" "$(in_ct sha256sum /etc/iofog-agent/local-api)" "$TOKEN"
expect "status after upgrade" "$(in_ct iofog-agent status | head -n 1)" "ioFog daemon                : RUNNING"

in_ct dpkg --purge iofogd >>"$APTLOG" 2>&1 || die "dpkg --purge"
expect "unit after purge" "$(in_ct systemctl show iofogd.service --value -p LoadState)" not-found
expect "processes of iofog-agent after purge" "$(in_ct pgrep -u iofog-agent || true)" ""
expect "files left after purge" "$(in_ct find /etc /var /usr -name '*iofog*' ! -path '/var/cache/*')" ""
in_ct systemctl poweroff
wait "$NSPAWN_PID" || true
NSPAWN_PID=""
log "PASS prove-systemd in $(($(date +%s) - START)) s"
