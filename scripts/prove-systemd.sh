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
# The unit answers to its alias iofog-agent: `service iofog-agent
# status|restart|stop|start|prune`. Then iofogctl's sequence, replayed as
# iofogctl runs it over SSH: a real ssh client on the host logs in as a sudo
# user of the container (sshd in inetd mode, `sshd -i`, started in the
# container's namespaces by ssh's ProxyCommand: the container has no network
# the host can reach), copies packaging/iofogctl/ and the .deb with scp to
# /etc/iofog/agent, runs check_iofogd.sh, `sudo install_iofogd.sh deb ...`,
# `sudo iofog-agent deprovision` on the fresh node ("not provisioned", exit
# 1), `sudo iofog-agent config -a <url>` and `sudo iofog-agent provision
# <key>` against the Controller stand-in (tests/controller/standin.py, run in
# the container), iofogctl's version check, its ARM `<docker_url>` sed with a
# service restart, `sudo -S service iofog-agent prune`, and to delete the agent
# `sudo iofog-agent deprovision`, `sudo -S service iofog-agent stop` and
# uninstall_iofogd.sh, which purges; then install_iofogd.sh from a Debian
# repository (a flat one in the container), its version check, and
# uninstall_iofogd.sh again. (iofogctl's own check_prereqs.sh is not
# replayed: it is not ours.)
#
#   scripts/prove-systemd.sh [--debs DIR]
#
# Root. Installs debootstrap and systemd-container when missing. Work dir
# ./run/prove-systemd; cache as scripts/prove-deb.sh.
set -eu
ROOT=$(cd "$(dirname "$0")/.." && pwd)
. "$ROOT/scripts/lib/debian.sh"

proof_args "$@"

cleanup() {
    nspawn_down
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
    openssh-server sudo "/tmp/$(basename "$DEB1")" >"$APTLOG" 2>&1 \
    || { tail -n 30 "$APTLOG" >&2; die "apt install"; }
expect "unit enabled by the package" "$(in_chroot systemctl is-enabled iofogd.service)" enabled
expect "alias enabled by the package" \
    "$(readlink "$CHROOT/etc/systemd/system/iofog-agent.service")" /lib/systemd/system/iofogd.service
# iofogctl's SSH user (pi, as on a Raspberry Pi): a sudoer without a password, with a key.
SSH_DIR="$ROOT/run/prove-systemd.ssh"
rm -rf "$SSH_DIR"
mkdir -p "$SSH_DIR"
ssh-keygen -q -t ed25519 -N '' -f "$SSH_DIR/id_ed25519"
in_chroot useradd --create-home --shell /bin/sh pi
install -d -m 0700 "$CHROOT/home/pi/.ssh"
install -m 0600 "$SSH_DIR/id_ed25519.pub" "$CHROOT/home/pi/.ssh/authorized_keys"
in_chroot chown -R pi:pi /home/pi/.ssh
echo 'pi ALL=(ALL:ALL) NOPASSWD: ALL' >"$CHROOT/etc/sudoers.d/pi-nopasswd"
chmod 0440 "$CHROOT/etc/sudoers.d/pi-nopasswd"
# The Controller stand-in and what iofogctl copies to the node.
standin_copy
mkdir -p "$ROOT/run/prove-systemd.scripts"
rm -f "$ROOT/run/prove-systemd.scripts/"*
cp "$ROOT/packaging/iofogctl/"*.sh "$DEB2" "$ROOT/run/prove-systemd.scripts/"
# A Debian repository (flat, trusted) with the first build and its
# transitional iofog-agent, for install_iofogd.sh repo.
mkdir -p "$CHROOT/srv/proof-repo"
cp "$DEB1" "$AGENT1" "$CHROOT/srv/proof-repo/"
(cd "$CHROOT/srv/proof-repo" && dpkg-scanpackages . /dev/null 2>/dev/null >Packages) || die "dpkg-scanpackages"
echo proof >"$CHROOT/etc/hostname"
printf '127.0.1.1\tproof\n' >>"$CHROOT/etc/hosts"   # sudo resolves its host name
# A booted system: maintainer scripts may start and restart services now.
rm -f "$CHROOT/usr/sbin/policy-rc.d"
chroot_down

log "boot with systemd-nspawn"
nspawn_boot "$ROOT/run/prove-systemd.boot.log"
prop() { in_ct systemctl show iofogd.service --value -p "$1"; }
# iofogctl's way in: `ssh user@host CMD`, a real SSH session with sshd -i.
cat >"$SSH_DIR/config" <<EOF
Host proof-node
    User pi
    IdentityFile $SSH_DIR/id_ed25519
    ProxyCommand nsenter --target $LEADER --all /usr/sbin/sshd -i
    BatchMode yes
    StrictHostKeyChecking no
    UserKnownHostsFile /dev/null
    LogLevel ERROR
EOF
node() {  # node CMD: run CMD as iofogctl does; its output on stdout, exit status kept
    ssh -F "$SSH_DIR/config" -n proof-node "$1"
}

wait_state() {  # wait_state STATE SECONDS
    i=0
    while [ "$(in_ct systemctl is-active iofogd.service 2>/dev/null)" != "$1" ]; do
        i=$((i + 1))
        [ "$i" -lt "$(($2 * 2))" ] || { in_ct journalctl -u iofogd --no-pager | tail -n 20 >&2; die "iofogd not $1"; }
        sleep 0.5
    done
}
wait_state active 120
wait_cli_running() {  # iofogctl's own wait for RUNNING
    i=0
    until [ "$(in_ct iofog-agent status 2>/dev/null | cut -f2 -d: | head -n 1 | tr -d '[:space:]')" = RUNNING ]; do
        i=$((i + 1))
        [ "$i" -lt 60 ] || die "iofog-agent status not RUNNING"
        sleep 1
    done
}
expect "status first line" "$(in_ct iofog-agent status | head -n 1)" "ioFog daemon                : RUNNING"
PID=$(prop MainPID)
expect "main process user" "$(in_ct stat -c %U "/proc/$PID")" iofog-agent
# --cpus one (the default) works under the unit's system-call filter: with two
# or more CPUs every thread of the daemon is on the same single one.
if [ "$(in_ct nproc)" -gt 1 ]; then
    cpus=$(in_ct sh -c "cat /proc/$PID/task/*/status" | sed -n 's/^Cpus_allowed_list:[[:space:]]*//p' | sort -u)
    case "$cpus" in
        *[!0-9]*|"") die "daemon threads not on one CPU: $(echo "$cpus" | tr '\n' ' ')" ;;
    esac
    log "daemon threads on CPU $cpus"
fi
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

# The alias: what `service iofog-agent ...` does is done to iofogd.service.
in_ct service iofog-agent status >/dev/null || die "service iofog-agent status (active)"
PID=$(prop MainPID)
in_ct service iofog-agent restart || die "service iofog-agent restart"
wait_state active 60
[ "$(prop MainPID)" != "$PID" ] || die "service iofog-agent restart kept pid $PID"
wait_cli_running
in_ct service iofog-agent stop || die "service iofog-agent stop"
expect "state after service iofog-agent stop" "$(prop ActiveState)" inactive
set +e; in_ct service iofog-agent status >/dev/null; rc=$?; set -e
expect "service iofog-agent status exit code when stopped" "$rc" 3
in_ct service iofog-agent start || die "service iofog-agent start"
wait_state active 60
wait_cli_running
# No engine in this container: the daemon's prune answers its failure line.
set +e; out=$(in_ct service iofog-agent prune); rc=$?; set -e
expect "service iofog-agent prune (no engine)" "$rc $(echo "$out" | tail -n 1)" "1 Failure - not pruned."

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

log "iofogctl over ssh: deploy"
standin_start
expect "ssh login" "$(node 'id -un')" pi
node 'sudo mkdir -p /etc/iofog/agent && sudo chmod -R 0777 /etc/iofog/agent' || die "mkdir /etc/iofog/agent"
for f in "$ROOT/run/prove-systemd.scripts/"*; do
    scp -O -q -F "$SSH_DIR/config" "$f" proof-node:/etc/iofog/agent/ || die "scp $(basename "$f")"
done
node 'chmod 0775 /etc/iofog/agent/*'
node '/etc/iofog/agent/check_iofogd.sh ' >&2 || die "check_iofogd.sh"
node "sudo /etc/iofog/agent/install_iofogd.sh deb $(basename "$DEB2")" >>"$APTLOG" 2>&1 \
    || { tail -n 20 "$APTLOG" >&2; die "install_iofogd.sh"; }
expect "installed by install_iofogd.sh" "$(in_ct dpkg-query -W -f='${Version}' iofogd)" "$(dpkg-deb -f "$DEB2" Version)"
set +e; out=$(node 'sudo iofog-agent deprovision'); rc=$?; set -e
case "$out" in *"not provisioned"*) ;; *) die "deprovision of a fresh node said: $out" ;; esac
expect "deprovision exit code on a fresh node (iofogctl accepts 'not provisioned')" "$rc" 1
node "sudo iofog-agent config -a $URL" >&2 || die "config -a"
out=$(node "sudo iofog-agent provision $KEY") || die "provision: $out"
expect "provision output" "$(echo "$out" | tail -n 1)" "Provision success - Iofog UUID is $FOG"
VERSION=$(sed -n 's/^__version__ = "\(.*\)"$/\1/p' "$ROOT/iofogd/__init__.py")
# As iofogctl's install script runs it (with sudo: the token is not the login
# user's to read, and the running daemon answers `version`, as upstream's).
expect "iofogctl's version check" \
    "$(node 'sudo iofog-agent version | head -n1 | sed "s/ioFog//g" | tr -d '"' '"' | tr -d "\n"')" "$VERSION"
PID=$(prop MainPID)
# iofogctl on ARM: docker_url edited in config.xml, then a service restart.
node 'sudo -E sh -c '"'"'sed -i -e "s|<docker_url>.*</docker_url>|<docker_url>tcp://127.0.0.1:2375/</docker_url>|g" /etc/iofog-agent/config.xml'"'" \
    || die "ARM sed"
node 'sudo -E sh -c "service iofog-agent stop"' || die "service iofog-agent stop (ARM)"
sleep 3
node 'sudo -E sh -c "service iofog-agent start"' || die "service iofog-agent start (ARM)"
wait_state active 60
[ "$(prop MainPID)" != "$PID" ] || die "no restart after the ARM edit"
wait_cli_running
expect "docker url after the ARM edit and restart" \
    "$(node 'sudo iofog-agent info' | sed -n 's/^Docker URL *: //p')" tcp://127.0.0.1:2375/
expect "node after the restart" "$(node 'sudo iofog-agent info' | sed -n 's/^Iofog UUID *: //p')" "$FOG"
expect "config.xml owner after sed" "$(in_ct stat -c %U:%G /etc/iofog-agent/config.xml)" iofog-agent:iofog-agent
set +e; out=$(node 'sudo -S service iofog-agent prune'); rc=$?; set -e
expect "sudo -S service iofog-agent prune (no engine)" "$rc $(echo "$out" | tail -n 1)" "1 Failure - not pruned."

log "iofogctl over ssh: delete agent"
out=$(node 'sudo iofog-agent deprovision') || die "deprovision: $out"
expect "deprovision output" "$(echo "$out" | tail -n 1)" "Success - tokens, identifiers and keys removed"
node 'sudo -S service iofog-agent stop' || die "sudo -S service iofog-agent stop"
expect "state after iofogctl's stop" "$(prop ActiveState)" inactive
node '/etc/iofog/agent/uninstall_iofogd.sh ' >>"$APTLOG" 2>&1 || die "uninstall_iofogd.sh"
expect "package after uninstall_iofogd.sh (purged)" \
    "$(in_ct dpkg-query -W -f='${db:Status-Status}' iofogd 2>/dev/null || true)" ""

log "iofogctl over ssh: install_iofogd.sh from a Debian repository, uninstall_iofogd.sh"
WANT=$(dpkg-deb -f "$DEB1" Version)
node "sudo /etc/iofog/agent/install_iofogd.sh repo 'deb [trusted=yes] file:/srv/proof-repo ./' $WANT" \
    >>"$APTLOG" 2>&1 || { tail -n 20 "$APTLOG" >&2; die "install_iofogd.sh repo"; }
expect "installed from the repository" "$(in_ct dpkg-query -W -f='${Version}' iofogd)" "$WANT"
# (dpkg may know the name from apt's lists: "not-installed" then)
expect "transitional iofog-agent on a node without the Java agent" \
    "$(in_ct dpkg-query -W -f='${db:Status-Status}' iofog-agent 2>/dev/null | grep -x installed || true)" ""
expect "status after install from the repository" "$(in_ct iofog-agent status | head -n 1)" \
    "ioFog daemon                : RUNNING"
node "sudo /etc/iofog/agent/install_iofogd.sh repo 'deb [trusted=yes] file:/srv/proof-repo ./' $WANT" \
    | tail -n 1 | grep -qx "Agent $WANT already installed." || die "install_iofogd.sh repo did not see the version"
log "ok: a second install_iofogd.sh with the same version: already installed"
node '/etc/iofog/agent/uninstall_iofogd.sh ' >>"$APTLOG" 2>&1 || die "uninstall_iofogd.sh"
expect "package after the second uninstall_iofogd.sh (purged)" \
    "$(in_ct dpkg-query -W -f='${db:Status-Status}' iofogd 2>/dev/null || true)" ""
# /etc/iofog/agent is iofogctl's own folder (its scripts), which it leaves too.
expect "files left after uninstall_iofogd.sh" \
    "$(in_ct find /etc /var /usr -name '*iofog*' ! -path '/var/cache/*' ! -path '/etc/iofog' ! -path '/etc/iofog/*')" ""
in_ct systemctl stop proof-controller.service
in_ct systemctl poweroff
wait "$NSPAWN_PID" || true
NSPAWN_PID=""
log "PASS prove-systemd in $(($(date +%s) - START)) s"
