#!/bin/sh
# Proof of the move off the Java agent, in a bookworm container booted with
# systemd-nspawn (private network and /dev; the private Docker engine's socket
# bind-mounted as /run/docker.sock). A stand-in for the Java agent's package,
# named iofog-agent (version 3.1.0, no epoch) and built here, lays out what
# docs/host.md#packaging, #files describe: the SysV script
# /etc/init.d/iofog-agent (that moves /dev/random aside), the client wrapper
# and jar placeholders, a provisioned config.xml made from
# tests/fixtures/java-config.xml, the local-api token; its post-install adds
# the user to sudo, makes everything root:iofog-agent 774, swaps /dev/random
# and links /usr/local/bin/iofog-agent. Its after-remove script is upstream's
# remove.sh run for every postrm call: it deletes /etc/iofog-agent,
# /var/lib/iofog-agent and the logs and stops the running iofog_ containers.
# (Upstream's fpm-built postrm runs remove.sh on remove only, not on upgrade:
# the stand-in is the harder case.) Five cases, each in a fresh container:
# - "apt": first `apt-get -s install ./iofogd_*.deb` alone, which plans to
#   remove the Java package before iofogd is unpacked (what loses the node;
#   the README says to pass both files), then, in ONE apt command,
#   `apt install ./iofogd_*.deb ./iofog-agent_*.deb`: apt upgrades the Java
#   package to the transitional iofog-agent 1:<version>, whose preinst keeps
#   the node before the Java after-remove runs (dpkg --debug=2's record of
#   the maintainer scripts, dpkg.log and the stand-in's own record show the
#   order; run/prove-migrate-apt.move.log, .dpkg.log), and removes nothing;
#   at the end a later iofogd alone (`apt install ./iofogd_<v>+proof1_all.deb`)
#   keeps the transitional package, the node and the container;
# - "dpkg": `dpkg -i ./iofogd_*.deb`, which removes the Java package in
#   favour of iofogd after iofogd's preinst kept the node;
# - "iofogctl": packaging/iofogctl/install_iofogd.sh deb iofogd_*.deb, with
#   the transitional .deb beside it, as iofogctl runs it (one apt command),
#   and at the end uninstall_iofogd.sh, which purges both packages;
# - "iofogctl-repo": install_iofogd.sh repo from a flat repository that holds
#   both packages;
# - "apt-alone", the expected failure: install_iofogd.sh without the
#   transitional .deb refuses and changes nothing; then `apt install
#   ./iofogd_*.deb` alone removes the Java package first, its after-remove
#   deletes the node, and iofogd comes up as a fresh, unprovisioned node
#   (only that is checked).
# The node runs a microservice container iofog_<uuid> on the engine, labelled
# with the node's uuid, and the Controller stand-in (tests/controller/standin.py,
# in the container) knows the node by its uuid and token. Then the move, and:
# the Java files are gone, iofogd.service is active, `iofog-agent status`
# says RUNNING and connected to the Controller with the same uuid and token
# (the Controller accepted the token), the token file is unchanged, the
# container is the same one (stopped by the Java after-remove, started again
# by iofogd, never recreated) and counted as running, /dev/random is a device
# again, the /usr/local/bin link is gone, the user is out of sudo and in
# docker, and `service iofog-agent prune` prunes through the engine.
#
#   scripts/prove-migrate.sh [--debs DIR]
#
# Root. Needs the private engine: eval "$(scripts/docker-engine.sh start)"
# (IOFOGD_TEST_DOCKER, IOFOGD_TEST_IMAGE); without it the proof says SKIP.
# Work dir ./run/prove-migrate; cache as scripts/prove-deb.sh.
set -eu
ROOT=$(cd "$(dirname "$0")/.." && pwd)
. "$ROOT/scripts/lib/debian.sh"

proof_args "$@"
SOCK="${IOFOGD_TEST_DOCKER:-}"
SOCK="${SOCK#unix://}"
IMAGE="${IOFOGD_TEST_IMAGE:-}"
if [ -z "$SOCK" ] || [ ! -S "$SOCK" ] || [ -z "$IMAGE" ]; then
    log "SKIP prove-migrate: no private Docker engine (eval \"\$(scripts/docker-engine.sh start)\" first)"
    exit 0
fi
CONTAINER=""

engine() {  # engine METHOD PATH [JSON]: the engine's API, over its socket
    if [ $# -gt 2 ]; then
        curl -sS --fail --unix-socket "$SOCK" -X "$1" -H 'Content-Type: application/json' \
            -d "$3" "http://localhost$2"
    else
        curl -sS --fail --unix-socket "$SOCK" -X "$1" "http://localhost$2"
    fi
}
inspect() {  # inspect FIELD: of the microservice container (python3 reads the JSON)
    engine GET "/containers/$CONTAINER/json" | python3 -c \
        'import json, sys; d = json.load(sys.stdin); print(eval(sys.argv[1], {"d": d}))' "$1"
}
cleanup() {
    if [ -n "$CONTAINER" ]; then
        engine DELETE "/containers/$CONTAINER?force=1" >/dev/null 2>&1 || true
    fi
    nspawn_down
    chroot_down
}
trap cleanup EXIT
trap 'exit 130' INT TERM

need_debs systemd-container curl dpkg-dev
build_debs "$DEBS"
engine GET /_ping >/dev/null || die "the engine at $SOCK does not answer"
# The Java node: its uuid and Controller token from the fixture; the
# Controller and the engine as this container sees them.
FIXTURE="$ROOT/tests/fixtures/java-config.xml"
tag() { sed -n "s|.*<$1>\(.*\)</$1>.*|\1|p" "$FIXTURE"; }
NODE=$(tag iofog_uuid)
NODE_TOKEN=$(tag access_token)
[ -n "$NODE" ] && [ -n "$NODE_TOKEN" ] || die "no iofog_uuid/access_token in $FIXTURE"
CONTROLLER_PORT=51121
MS=proofmicroservice0000000000000001
CONTAINER="iofog_$MS"

case_done() {  # case_done CASE: the container powered off, the microservice's deleted
    in_ct systemctl stop proof-controller.service
    # (gone after the iofogctl case's purge)
    in_ct systemctl stop iofogd.service 2>/dev/null || true
    in_ct systemctl poweroff
    wait "$NSPAWN_PID" || true
    NSPAWN_PID=""
    engine DELETE "/containers/$CONTAINER?force=1" >/dev/null
    log "ok: case $1"
}

# One move: CASE apt (`apt install ./iofogd_*.deb ./iofog-agent_*.deb`),
# dpkg (`dpkg -i ./iofogd_*.deb`), iofogctl (`install_iofogd.sh deb ...`),
# iofogctl-repo (`install_iofogd.sh repo ...`) or apt-alone (`apt install
# ./iofogd_*.deb`).
migrate_case() {  # migrate_case CASE
    chroot_up "$ARCH" "$ROOT/run/prove-migrate"
    APTLOG="$ROOT/run/prove-migrate-$1.apt.log"


    log "apt install systemd and iofogd's dependencies (not iofogd)"
    in_chroot apt-get update -qq
    in_chroot apt-get install -y -q --no-install-recommends systemd systemd-sysv dbus \
        python3 python3-psutil adduser procps >"$APTLOG" 2>&1 || { tail -n 30 "$APTLOG" >&2; die "apt install"; }
    echo proof >"$CHROOT/etc/hostname"
    # The engine's socket group, as a docker group in the container.
    in_chroot groupadd --system --gid "$(stat -c %g "$SOCK")" docker || die "gid $(stat -c %g "$SOCK") taken in the container"
    standin_copy
    cp "$DEB1" "$AGENT1" "$CHROOT/root/"
    cp "$DEB2" "$CHROOT/root/"
    # iofogctl's scripts folder, as it copies it to the node (/etc/iofog/agent)
    mkdir -p "$CHROOT/etc/iofog/agent"
    cp "$ROOT/packaging/iofogctl/"*.sh "$DEB1" "$CHROOT/etc/iofog/agent/"
    # A Debian repository (flat, trusted) with iofogd and the transitional package.
    mkdir -p "$CHROOT/srv/proof-repo"
    cp "$DEB1" "$AGENT1" "$CHROOT/srv/proof-repo/"
    (cd "$CHROOT/srv/proof-repo" && dpkg-scanpackages . /dev/null 2>/dev/null >Packages) || die "dpkg-scanpackages"

    # The stand-in for the Java agent's package (what docs/host.md#packaging, #files say
    # upstream's package installs and does; no Java: the jars are placeholders).
    PKG="$CHROOT/root/java/iofog-agent"
    mkdir -p "$PKG/DEBIAN" "$PKG/etc/init.d" "$PKG/etc/iofog-agent" "$PKG/usr/bin"
    cat >"$PKG/DEBIAN/control" <<EOF
Package: iofog-agent
Version: 3.1.0
Architecture: all
Maintainer: proof <proof@example.org>
Description: stand-in for the Java ioFog agent's package (scripts/prove-migrate.sh)
EOF
    cat >"$PKG/etc/init.d/iofog-agent" <<'EOF'
#!/bin/sh
### BEGIN INIT INFO
# Provides:          iofog-agent
# Required-Start:    $local_fs $remote_fs $network $syslog
# Required-Stop:     $local_fs $remote_fs $network $syslog
# Default-Start:     2 3 4 5
# Default-Stop:      0 1 6
# Short-Description: stand-in for the Java agent's service script
### END INIT INFO
# As docs/host.md#packaging describes the Java agent's script.
[ "$(id -u)" = 0 ] || { echo "iofog-agentd must be run as root"; exit 1; }
case "$1" in
    start)
        mv /dev/random /dev/random.real
        ln -s /dev/urandom /dev/random
        cd /usr/bin && java -jar iofog-agentd.jar start &
        ;;
    stop) cd /usr/bin && java -jar iofog-agentd.jar stop ;;
    restart) service iofog-agent stop; service iofog-agent start ;;
esac
EOF
    printf '#!/bin/sh\njava -jar /usr/bin/iofog-agent.jar "$@"\n' >"$PKG/usr/bin/iofog-agent"
    echo "placeholder: the Java agent's daemon" >"$PKG/usr/bin/iofog-agentd.jar"
    echo "placeholder: the Java agent's client" >"$PKG/usr/bin/iofog-agent.jar"
    # The provisioned node's config: the fixture, with this proof's Controller.
    sed -e "s|<controller_url>[^<]*</controller_url>|<controller_url>http://127.0.0.1:$CONTROLLER_PORT/api/v3/</controller_url>|" \
        -e 's|<docker_url>[^<]*</docker_url>|<docker_url>unix:///var/run/docker.sock</docker_url>|' \
        "$FIXTURE" >"$PKG/etc/iofog-agent/config_new.xml"
    cat >"$PKG/DEBIAN/postinst" <<'EOF'
#!/bin/sh
# As docs/host.md#files describes the Java package's post-install.
useradd -r -U -s /usr/bin/nologin iofog-agent 2>/dev/null
usermod -aG sudo iofog-agent
[ -f /etc/iofog-agent/config.xml ] || mv /etc/iofog-agent/config_new.xml /etc/iofog-agent/config.xml
rm -f /etc/iofog-agent/config_new.xml
</dev/urandom tr -dc A-Za-z0-9 | head -c32 >/etc/iofog-agent/local-api
mkdir -p /var/log/iofog-agent /var/lib/iofog-agent /var/run/iofog-agent
for d in /etc/iofog-agent /var/log/iofog-agent /var/lib/iofog-agent /var/run/iofog-agent; do
    chown -R :iofog-agent "$d"
    chmod -R 774 "$d"
done
mv /dev/random /dev/random.real
ln -s /dev/urandom /dev/random
update-rc.d iofog-agent defaults
ln -sf /usr/bin/iofog-agent /usr/local/bin/iofog-agent
exit 0
EOF
    cat >"$PKG/DEBIAN/postrm" <<'EOF'
#!/bin/sh
# As upstream's remove.sh, for every postrm call (remove, purge, upgrade):
# the node's files go, and the running iofog_ containers are stopped
# (upstream: docker ps | grep iofog_ | docker stop; here the engine's API, as
# this container has no docker CLI). First a record for the proof: the call,
# and whether iofogd's copy of the node existed by then.
saved=no
[ ! -d /var/lib/iofogd-adopted-etc ] || saved=yes
echo "postrm $* saved=$saved" >>/root/java-postrm.log
rm -rf /etc/iofog-agent /var/log/iofog-agent /var/lib/iofog-agent /var/run/iofog-agent /usr/share/iofog-agent
python3 - <<'PY'
import http.client, json, socket
class Engine(http.client.HTTPConnection):
    def connect(self):
        self.sock = socket.socket(socket.AF_UNIX)
        self.sock.connect("/run/docker.sock")
def call(method, path):
    conn = Engine("localhost")
    conn.request(method, path)
    return conn.getresponse().read()
for c in json.loads(call("GET", "/containers/json")):
    if any(name.startswith("/iofog_") for name in c["Names"]):
        call("POST", "/containers/%s/stop" % c["Id"])
PY
exit 0
EOF
    chmod 755 "$PKG/DEBIAN/postinst" "$PKG/DEBIAN/postrm" "$PKG/etc/init.d/iofog-agent" "$PKG/usr/bin/iofog-agent"
    in_chroot dpkg-deb -b /root/java/iofog-agent /root/java/iofog-agent_3.1.0_all.deb >/dev/null
    rm -f "$CHROOT/usr/sbin/policy-rc.d"
    chroot_down

    log "boot with systemd-nspawn, the engine's socket as /run/docker.sock"
    nspawn_boot "$ROOT/run/prove-migrate-$1.boot.log" --bind="$SOCK:/run/docker.sock"
    i=0
    until [ "$(in_ct systemctl is-system-running 2>/dev/null)" = running ] \
        || [ "$(in_ct systemctl is-system-running 2>/dev/null)" = degraded ]; do
        i=$((i + 1))
        [ "$i" -lt 240 ] || die "container did not finish booting"
        sleep 0.5
    done

    log "the Java agent: package, Controller, microservice container"
    in_ct dpkg -i /root/java/iofog-agent_3.1.0_all.deb >>"$APTLOG" 2>&1 || { tail -n 20 "$APTLOG" >&2; die "dpkg -i iofog-agent"; }
    expect "/dev/random after the Java package" "$(in_ct readlink /dev/random) $(in_ct stat -c %F /dev/random.real)" \
        "/dev/urandom character special file"
    expect "Java user in sudo" "$(in_ct id -nG iofog-agent | tr ' ' '\n' | grep -x sudo)" sudo
    standin_start --port "$CONTROLLER_PORT" --fog "$NODE" --token "$NODE_TOKEN" --microservice "$MS" "$IMAGE"
    engine DELETE "/containers/$CONTAINER?force=1" >/dev/null 2>&1 || true
    # As the Java agent makes them (docs/docker.md#containers, docs/compatibility.md#clients): name iofog_<uuid>, the
    # node's uuid as label iofog-uuid, SELFNAME; no network here (no bridge).
    engine POST "/containers/create?name=$CONTAINER" "{\"Image\": \"$IMAGE\", \"Cmd\": [\"sleep\", \"86400\"],
        \"Env\": [\"SELFNAME=$MS\"], \"Labels\": {\"iofog-uuid\": \"$NODE\"},
        \"HostConfig\": {\"NetworkMode\": \"none\"}}" >/dev/null || die "create $CONTAINER"
    engine POST "/containers/$CONTAINER/start" >/dev/null || die "start $CONTAINER"
    ID=$(inspect 'd["Id"]')
    STARTED=$(inspect 'd["State"]["StartedAt"]')
    log "ok: $CONTAINER running, id ${ID%"${ID#????????????}"}"
    TOKEN_SUM=$(in_ct sha256sum /etc/iofog-agent/local-api)

    DEB=$(basename "$DEB1")
    AGENT=$(basename "$AGENT1")
    VERSION=$(dpkg-deb -f "$DEB1" Version)
    in_ct sh -c 'echo "proof: the move" >>/var/log/dpkg.log'
    if [ "$1" = apt-alone ]; then
        # iofogctl's install script refuses when the transitional .deb is not
        # beside iofogd's, and changes nothing.
        set +e; out=$(in_ct /etc/iofog/agent/install_iofogd.sh deb "$DEB" 2>&1); rc=$?; set -e
        case "$out" in *"put the transitional $AGENT beside $DEB"*) ;; *) die "install_iofogd.sh without $AGENT said: $out" ;; esac
        expect "install_iofogd.sh without $AGENT: exit code, Java package" \
            "$rc $(in_ct dpkg-query -W -f='${Version} ${db:Status-Status}' iofog-agent)" "1 3.1.0 installed"
        # What the README warns against, done: iofogd's Conflicts with the
        # Java versions make apt remove the Java package (`dpkg --remove`,
        # whose after-remove deletes the node) before anything of iofogd runs.
        log "apt install ./$DEB alone over that Java agent (expected: the node is lost)"
        in_ct apt-get install -y -q --no-install-recommends "/root/$DEB" >>"$APTLOG" 2>&1 \
            || { tail -n 30 "$APTLOG" >&2; die "apt install ./$DEB alone"; }
        expect "Java package (removed)" "$(in_ct dpkg-query -W -f='${db:Status-Status}' iofog-agent)" config-files
        expect "the Java after-remove's calls" "$(in_ct cat /root/java-postrm.log)" "postrm remove saved=no"
        expect "node uuid after iofogd alone (a fresh, unprovisioned node)" \
            "$(in_ct sed -n 's|.*<iofog_uuid>\(.*\)</iofog_uuid>.*|\1|p' /etc/iofog-agent/config.xml)" ""
        case_done "$1"
        return
    fi
    if [ "$1" = iofogctl-repo ]; then
        log "install_iofogd.sh repo ... $VERSION as root (iofogctl: sudo) over that Java agent"
        in_ct /etc/iofog/agent/install_iofogd.sh repo 'deb [trusted=yes] file:/srv/proof-repo ./' "$VERSION" \
            >>"$APTLOG" 2>&1 || { tail -n 30 "$APTLOG" >&2; die "install_iofogd.sh repo over iofog-agent"; }
        expect "Java package (upgraded to the transitional one)" \
            "$(in_ct dpkg-query -W -f='${Version} ${db:Status-Status}' iofog-agent)" "1:$VERSION installed"
        expect "the Java after-remove's calls" "$(in_ct cat /root/java-postrm.log)" "postrm upgrade 1:$VERSION saved=yes"
    elif [ "$1" = iofogctl ]; then
        # iofogctl's install script, with both .debs in its folder: one apt
        # command with both.
        cp "$AGENT1" "$CHROOT/etc/iofog/agent/"
        log "install_iofogd.sh deb $DEB as root (iofogctl: sudo) over that Java agent"
        in_ct /etc/iofog/agent/install_iofogd.sh deb "$DEB" >>"$APTLOG" 2>&1 \
            || { tail -n 30 "$APTLOG" >&2; die "install_iofogd.sh over iofog-agent"; }
        expect "Java package (upgraded to the transitional one)" \
            "$(in_ct dpkg-query -W -f='${Version} ${db:Status-Status}' iofog-agent)" "1:$VERSION installed"
        expect "the Java after-remove's calls" "$(in_ct cat /root/java-postrm.log)" "postrm upgrade 1:$VERSION saved=yes"
    elif [ "$1" = apt ]; then
        # iofogd alone: its Conflicts with the Java versions make apt remove
        # the Java package (`dpkg --remove`, its after-remove deletes the
        # node) before anything of iofogd runs. Simulated only.
        plan=$(in_ct apt-get -s install --no-install-recommends "/root/$DEB" 2>&1) || die "apt-get -s install ./$DEB: $plan"
        plan=$(echo "$plan" | grep -E '^(Remv|Inst) ') || die "apt-get -s install ./$DEB planned nothing"
        log "apt-get -s install ./$DEB alone plans: $(echo "$plan" | tr '\n' ';')"
        expect "first step of iofogd alone (the node would be lost)" "$(echo "$plan" | head -n 1 | cut -d' ' -f1-2)" \
            "Remv iofog-agent"
        plan=$(in_ct apt-get -s install --no-install-recommends "/root/$DEB" "/root/$AGENT" 2>&1) \
            || die "apt-get -s install ./$DEB ./$AGENT: $plan"
        plan=$(echo "$plan" | grep -E '^(Remv|Inst) ') || die "apt-get -s install ./$DEB ./$AGENT planned nothing"
        log "apt-get -s install ./$DEB ./$AGENT plans: $(echo "$plan" | tr '\n' ';')"
        expect "removals planned with both files" "$(echo "$plan" | grep -c '^Remv' || true)" 0
        log "apt install ./$DEB ./$AGENT over a Java agent whose after-remove deletes /etc/iofog-agent"
        # dpkg --debug=2 logs each maintainer script it runs, with its arguments.
        MOVELOG="$ROOT/run/prove-migrate-apt.move.log"
        in_ct apt-get install -y -q -o Dpkg::Options::=--debug=2 --no-install-recommends "/root/$DEB" "/root/$AGENT" \
            >"$MOVELOG" 2>&1 || { tail -n 30 "$MOVELOG" >&2; die "apt install over iofog-agent"; }
        cat "$MOVELOG" >>"$APTLOG"
        # (apt runs dpkg on a terminal of its own: the lines end in CR LF)
        calls=$(tr -d '\r' <"$MOVELOG" | sed -n 's|^D000002: fork/exec /var/lib/dpkg/\(.*\) ( \(.*\) )$|\1 \2|p')
        log "maintainer scripts, in dpkg's order: $(echo "$calls" | tr '\n' ';')"
        # The transitional preinst (from the new archive, tmp.ci) before the
        # Java package's postrm; then iofogd's preinst, then its postinst.
        expect "first maintainer scripts of the move" "$(echo "$calls" | head -n 3)" "tmp.ci/preinst upgrade 3.1.0 1:$VERSION
info/iofog-agent.postrm upgrade 1:$VERSION
tmp.ci/preinst install"
        expect "iofogd's postinst" "$(echo "$calls" | grep -c '^info/iofogd.postinst configure')" 1
        expect "Java package (upgraded to the transitional one)" \
            "$(in_ct dpkg-query -W -f='${Version} ${db:Status-Status} ${Section}' iofog-agent)" "1:$VERSION installed oldlibs"
        # What dpkg did, in order (its log since the mark): the Java package
        # upgraded, never removed, before iofogd was unpacked.
        order=$(in_ct sed -n '/^proof: the move$/,$p' /var/log/dpkg.log \
            | awk '$3 == "upgrade" || $3 == "install" || $3 == "remove" {print $3, $4, $5, $6}')
        log "dpkg.log: $(echo "$order" | tr '\n' ';')"
        expect "dpkg's actions" "$order" "upgrade iofog-agent:all 3.1.0 1:$VERSION
install iofogd:all <none> $VERSION"
        in_ct sed -n '/^proof: the move$/,$p' /var/log/dpkg.log >"$ROOT/run/prove-migrate-apt.dpkg.log"
        expect "the Java after-remove's calls" "$(in_ct cat /root/java-postrm.log)" "postrm upgrade 1:$VERSION saved=yes"
        log "ok: the transitional preinst copied the node before the Java after-remove deleted it"
    else
        # dpkg removes the conflicting Java package "in favour of" iofogd,
        # after iofogd's preinst (Debian policy 6.6): the other way, with the
        # dependencies installed first.
        log "dpkg -i ./$DEB over a Java agent whose after-remove deletes /etc/iofog-agent"
        in_ct dpkg -i "/root/$DEB" >>"$APTLOG" 2>&1 \
            || { tail -n 30 "$APTLOG" >&2; die "dpkg -i over iofog-agent"; }
        expect "Java package" "$(in_ct dpkg-query -W -f='${db:Status-Status}' iofog-agent 2>/dev/null || true)" config-files
        expect "the Java after-remove's calls" "$(in_ct cat /root/java-postrm.log)" "postrm remove saved=yes"
    fi
    expect "/etc/iofog-agent, deleted by the Java after-remove" \
        "$(in_ct sh -c 'test -e /etc/iofog-agent/config.xml && echo put back by iofogd')" "put back by iofogd"
    expect "Java jars" "$(in_ct sh -c 'ls /usr/bin/*.jar 2>/dev/null || true')" ""
    expect "/usr/local/bin/iofog-agent" "$(in_ct sh -c 'ls /usr/local/bin/iofog-agent 2>/dev/null || echo gone')" gone
    expect "/etc/init.d/iofog-agent" "$(in_ct sh -c 'grep -q /usr/bin/iofogd /etc/init.d/iofog-agent && echo iofogd')" iofogd
    i=0
    until [ "$(in_ct systemctl is-active iofogd.service)" = active ]; do
        i=$((i + 1))
        [ "$i" -lt 120 ] || { in_ct journalctl -u iofogd --no-pager | tail -n 20 >&2; die "iofogd.service not active"; }
        sleep 0.5
    done
    field() { in_ct iofog-agent status | sed -n "s/^$1 *: //p"; }
    i=0
    until [ "$(field 'ioFog daemon')" = RUNNING ] && [ "$(field 'Connection to Controller')" = ok ] \
        && [ "$(field 'Running Microservices')" = 1 ]; do
        i=$((i + 1))
        [ "$i" -lt 120 ] || { in_ct iofog-agent status >&2; in_ct journalctl -u iofogd --no-pager | tail -n 20 >&2
            die "iofogd not RUNNING, connected, with its microservice"; }
        sleep 1
    done
    log "ok: iofog-agent status: RUNNING, Controller ok (it accepted the node's token), 1 microservice running"
    xml() { in_ct sed -n "s|.*<$1>\(.*\)</$1>.*|\1|p" /etc/iofog-agent/config.xml; }
    expect "node uuid" "$(xml iofog_uuid)" "$NODE"
    expect "Controller token" "$(xml access_token)" "$NODE_TOKEN"
    expect "Iofog UUID in iofog-agent info" "$(in_ct iofog-agent info | sed -n 's/^Iofog UUID *: //p')" "$NODE"
    expect "local-api token" "$(in_ct sha256sum /etc/iofog-agent/local-api)" "$TOKEN_SUM"
    expect "container id (not recreated)" "$(inspect 'd["Id"]')" "$ID"
    # Stopped by the Java package's after-remove, started again by iofogd:
    # the same container, a new start.
    [ "$(inspect 'd["State"]["StartedAt"]')" != "$STARTED" ] || die "the Java after-remove did not stop $CONTAINER"
    STARTED=$(inspect 'd["State"]["StartedAt"]')
    log "ok: $CONTAINER, stopped by the Java package's after-remove, started again by iofogd"
    expect "container restarts" "$(inspect 'd["RestartCount"]') $(inspect 'd["State"]["Running"]')" "0 True"
    expect "/dev/random" "$(in_ct stat -c %F /dev/random) $(in_ct sh -c 'ls /dev/random.real 2>/dev/null || echo gone')" \
        "character special file gone"
    groups() { in_ct id -nG iofog-agent | tr ' ' '\n' | sort | tr '\n' ' '; }
    expect "groups of iofog-agent" "$(groups)" "docker iofog-agent "
    expect "owner of the node's files" "$(in_ct stat -c '%U:%G %a' /etc/iofog-agent /etc/iofog-agent/config.xml \
        /etc/iofog-agent/local-api | sort -u | tr '\n' ' ')" "iofog-agent:iofog-agent 640 iofog-agent:iofog-agent 750 "
    expect "preinst's copy removed" "$(in_ct sh -c 'ls -d /var/lib/iofogd-adopted-etc 2>/dev/null || echo gone')" gone
    in_ct service iofog-agent status >/dev/null || die "service iofog-agent status"
    out=$(in_ct service iofog-agent prune) || die "service iofog-agent prune: $out"
    case "$out" in *"Success - pruned unused docker images"*) ;; *) die "service iofog-agent prune said: $out" ;; esac
    log "ok: service iofog-agent prune: $(echo "$out" | tail -n 1)"
    expect "container after prune" "$(inspect 'd["Id"]') $(inspect 'd["State"]["StartedAt"]')" "$ID $STARTED"
    # A few more of iofogd's reconciliation passes (every 10 s, and at once
    # after each list from the Controller): still the same container.
    sleep 12
    expect "container 12 s later" "$(inspect 'd["Id"]') $(inspect 'd["State"]["StartedAt"]') $(field 'Running Microservices')" \
        "$ID $STARTED 1"

    if [ "$1" = apt ]; then
        # A later iofogd, given alone: the transitional package stays (it
        # depends on iofogd >= its own version), the node and container too.
        log "apt install ./$(basename "$DEB2") alone, after the move"
        in_ct apt-get install -y -q --no-install-recommends "/root/$(basename "$DEB2")" >>"$APTLOG" 2>&1 \
            || { tail -n 30 "$APTLOG" >&2; die "apt install ./$(basename "$DEB2")"; }
        expect "iofogd and iofog-agent after the upgrade" "$(in_ct dpkg-query -W -f='${Package} ${Version} ${db:Status-Status};' \
            iofogd iofog-agent)" "iofog-agent 1:$VERSION installed;iofogd $(dpkg-deb -f "$DEB2" Version) installed;"
        i=0
        until [ "$(field 'ioFog daemon')" = RUNNING ] && [ "$(field 'Running Microservices')" = 1 ]; do
            i=$((i + 1))
            [ "$i" -lt 60 ] || die "iofogd not RUNNING with its microservice after the upgrade"
            sleep 1
        done
        expect "node and container after the upgrade" "$(xml iofog_uuid) $(inspect 'd["Id"]') $(inspect 'd["State"]["StartedAt"]')" \
            "$NODE $ID $STARTED"
    fi
    if [ "$1" = iofogctl ]; then
        # iofogctl's delete agent: uninstall_iofogd.sh purges both packages.
        in_ct systemctl stop iofogd.service
        in_ct /etc/iofog/agent/uninstall_iofogd.sh >>"$APTLOG" 2>&1 || die "uninstall_iofogd.sh"
        expect "packages after uninstall_iofogd.sh" "$(in_ct dpkg-query -W -f='${db:Status-Status}' iofogd iofog-agent \
            2>/dev/null | grep -x installed || true)" ""
        expect "/etc/iofog-agent after uninstall_iofogd.sh (purged)" "$(in_ct ls -d /etc/iofog-agent 2>/dev/null || true)" ""
    fi
    case_done "$1"
}

migrate_case apt
migrate_case dpkg
migrate_case iofogctl
migrate_case iofogctl-repo
migrate_case apt-alone
log "PASS prove-migrate in $(($(date +%s) - START)) s"
