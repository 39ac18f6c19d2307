#!/usr/bin/env bash
# docker-engine.sh - a private, real Docker Engine for iofogd's tests.
#
#   scripts/docker-engine.sh start   install what is missing, start dockerd on its own
#                                    socket, two local registries, seed a busybox image;
#                                    prints "export NAME=value" lines (also in $ENGINE_DIR/env)
#   scripts/docker-engine.sh env     print the export lines of the running engine
#   scripts/docker-engine.sh stop    stop all of it and remove $ENGINE_DIR
#
#   eval "$(scripts/docker-engine.sh start)" && .venv/bin/pytest tests/system
#
# The engine is Debian's docker.io (dockerd 20.10, API 1.41) with vfs storage, the
# cgroupfs driver, no bridge and no iptables: it changes nothing in the host's
# network, and containers get loopback only (or the host's network with
# NetworkMode=host). Registries: Debian's docker-registry, one open and one with
# htpasswd (bcrypt) auth for the private-registry case, both on 127.0.0.1; dockerd
# treats 127.0.0.0/8 as an insecure registry, so plain HTTP needs no configuration.
#
# Settings (environment):
#   ENGINE_DIR            state dir (default <checkout>/run/engine; at most 60 characters,
#                         because containerd's socket paths live under it)
#   ENGINE_REGISTRY       open registry address       (default 127.0.0.1:5000)
#   ENGINE_AUTH_REGISTRY  registry with basic auth    (default 127.0.0.1:5001)
#   ENGINE_TIMEOUT        seconds to wait for each daemon (default 60)
#   ENGINE_NO_INSTALL=1   never call apt-get
#   ENGINE_KEEP=1         stop: keep the state dir
# Needs root. Stdout carries only the export lines; progress goes to stderr.
set -euo pipefail

HERE=$(cd "$(dirname "$0")/.." && pwd)
DEFAULT_DIR="$HERE/run/engine"
[ ${#DEFAULT_DIR} -le 60 ] || DEFAULT_DIR=/tmp/iofogd-engine
ENGINE_DIR=${ENGINE_DIR:-$DEFAULT_DIR}
ENGINE_DIR=${ENGINE_DIR%/}
ENGINE_REGISTRY=${ENGINE_REGISTRY:-127.0.0.1:5000}
ENGINE_AUTH_REGISTRY=${ENGINE_AUTH_REGISTRY:-127.0.0.1:5001}
ENGINE_TIMEOUT=${ENGINE_TIMEOUT:-60}
SEED_IMAGE=iofogd-test/busybox:1
REG_USER=iofogd
REG_PASSWORD=iofogd-test-secret
API=v1.41   # dockerd 20.10's highest API version; every newer engine accepts it too
SOCK="$ENGINE_DIR/docker.sock"
# dockerd's cgroup parent, derived from the dir so that two engines never share one
CGROUP_PARENT=$(printf '%s' "${ENGINE_DIR#/}" | tr -c 'A-Za-z0-9_.\n-' '-')
export PATH="/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin:${PATH:-}"

log() { printf '[docker-engine] %s\n' "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }
now() { date +%s.%N; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.2f", b - a }'; }

urlencode() { python3 -c 'import sys, urllib.parse; print(urllib.parse.quote(sys.argv[1], safe=""))' "$1"; }

# api METHOD PATH [curl args...]: call the engine, print the body, fail on HTTP >= 400
api() {
    local method=$1 path=$2
    shift 2
    curl -sS --fail-with-body --max-time 120 --unix-socket "$SOCK" -X "$method" "$@" "http://localhost/$API$path"
}
ping_engine() { [ -S "$SOCK" ] && [ "$(curl -s --max-time 2 --unix-socket "$SOCK" http://localhost/_ping 2>/dev/null)" = OK ]; }
ping_open_registry() { curl -fs --max-time 2 "http://$ENGINE_REGISTRY/v2/" >/dev/null 2>&1; }
ping_auth_registry() { curl -fs --max-time 2 -u "$REG_USER:$REG_PASSWORD" "http://$ENGINE_AUTH_REGISTRY/v2/" >/dev/null 2>&1; }
answers() { curl -s --max-time 2 -o /dev/null "http://$1/" 2>/dev/null; }

ours() {  # pid -> true if its command line names ENGINE_DIR (we only ever signal those)
    [ -r "/proc/$1/cmdline" ] && tr '\0' ' ' <"/proc/$1/cmdline" | grep -qF -- "$ENGINE_DIR"
}
pid_from() { [ -s "$1" ] && ours "$(cat "$1")" && cat "$1"; }

# wait_for NAME PID CHECK LOGFILE
wait_for() {
    local deadline=$(($(date +%s) + ENGINE_TIMEOUT))
    until "$3"; do
        kill -0 "$2" 2>/dev/null || { tail -n 25 "$4" >&2 || true; die "$1 exited during start-up (log: $4)"; }
        [ "$(date +%s)" -lt "$deadline" ] || { tail -n 25 "$4" >&2 || true; die "$1 did not answer within ${ENGINE_TIMEOUT}s"; }
        sleep 0.1
    done
}

print_env() {
    cat <<EOF
export DOCKER_HOST=unix://$SOCK
export IOFOGD_TEST_DOCKER=unix://$SOCK
export IOFOGD_TEST_ENGINE_DIR=$ENGINE_DIR
export IOFOGD_TEST_IMAGE=$SEED_IMAGE
export IOFOGD_TEST_REGISTRY=$ENGINE_REGISTRY
export IOFOGD_TEST_AUTH_REGISTRY=$ENGINE_AUTH_REGISTRY
export IOFOGD_TEST_REGISTRY_USER=$REG_USER
export IOFOGD_TEST_REGISTRY_PASSWORD=$REG_PASSWORD
EOF
}

check_dir() {
    case $ENGINE_DIR in /*) ;; *) die "ENGINE_DIR must be an absolute path" ;; esac
    case $ENGINE_DIR in / | /tmp | /var | /root | /home | /run) die "refusing ENGINE_DIR=$ENGINE_DIR" ;; esac
    [ ${#ENGINE_DIR} -le 60 ] || die "ENGINE_DIR is too long for the engine's unix sockets (60 characters at most)"
}

install_missing() {
    local missing=() guard=""
    command -v dockerd >/dev/null || missing+=(docker.io)
    command -v docker-registry >/dev/null || missing+=(docker-registry)
    command -v curl >/dev/null || missing+=(curl)
    # the seed image needs a static busybox (ldd succeeds only on dynamic binaries)
    if ! [ -x /bin/busybox ] || ldd /bin/busybox >/dev/null 2>&1; then missing+=(busybox-static); fi
    [ ${#missing[@]} -gt 0 ] || return 0
    [ "${ENGINE_NO_INSTALL:-0}" != 1 ] || die "missing packages: ${missing[*]}"
    local t
    t=$(now)
    if [ ! -e /usr/sbin/policy-rc.d ]; then
        # keep the packages' init scripts from starting a system-wide dockerd and registry
        printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
        chmod 755 /usr/sbin/policy-rc.d
        guard=1
        trap 'rm -f /usr/sbin/policy-rc.d' EXIT
    fi
    export DEBIAN_FRONTEND=noninteractive
    local opts=(-y -q --no-install-recommends -o DPkg::Lock::Timeout=300)
    if ! apt-get install "${opts[@]}" "${missing[@]}" >"$ENGINE_DIR/apt.log" 2>&1; then
        log "apt-get install failed; running apt-get update first"
        apt-get update -q -o DPkg::Lock::Timeout=300 >>"$ENGINE_DIR/apt.log" 2>&1 || true
        apt-get install "${opts[@]}" "${missing[@]}" >>"$ENGINE_DIR/apt.log" 2>&1 ||
            { tail -n 20 "$ENGINE_DIR/apt.log" >&2; die "apt-get install ${missing[*]} failed"; }
    fi
    if [ -n "$guard" ]; then rm -f /usr/sbin/policy-rc.d; trap - EXIT; fi
    log "installed ${missing[*]} in $(since "$t")s"
}

start_dockerd() {
    mkdir -p "$ENGINE_DIR/data" "$ENGINE_DIR/exec"
    echo '{}' >"$ENGINE_DIR/daemon.json"   # ignore any /etc/docker/daemon.json
    local t
    t=$(now)
    setsid dockerd \
        --config-file "$ENGINE_DIR/daemon.json" \
        --data-root "$ENGINE_DIR/data" \
        --exec-root "$ENGINE_DIR/exec" \
        --pidfile "$ENGINE_DIR/dockerd.pid" \
        --host "unix://$SOCK" \
        --storage-driver vfs \
        --exec-opt native.cgroupdriver=cgroupfs \
        --cgroup-parent "/$CGROUP_PARENT" \
        --iptables=false --ip6tables=false --ip-forward=false --ip-masq=false --bridge=none \
        --shutdown-timeout 2 \
        --log-level warn \
        </dev/null >>"$ENGINE_DIR/dockerd.log" 2>&1 &
    wait_for dockerd $! ping_engine "$ENGINE_DIR/dockerd.log"
    log "dockerd ready on $SOCK in $(since "$t")s"
}

# start_registry NAME ADDR CHECK [htpasswd-file]
start_registry() {
    local name=$1 addr=$2 check=$3 htpasswd=${4:-} t
    mkdir -p "$ENGINE_DIR/$name"
    {
        echo "version: 0.1"
        echo "log: {level: warn, accesslog: {disabled: true}}"
        echo "storage: {filesystem: {rootdirectory: $ENGINE_DIR/$name}, delete: {enabled: true}}"
        echo "http: {addr: $addr}"
        [ -z "$htpasswd" ] || echo "auth: {htpasswd: {realm: iofogd-test, path: $htpasswd}}"
    } >"$ENGINE_DIR/$name.yml"
    t=$(now)
    setsid docker-registry serve "$ENGINE_DIR/$name.yml" </dev/null >"$ENGINE_DIR/$name.log" 2>&1 &
    echo $! >"$ENGINE_DIR/$name.pid"
    wait_for "$name" $! "$check" "$ENGINE_DIR/$name.log"
    log "$name ready on http://$addr in $(since "$t")s"
}

seed_image() {
    local rootfs="$ENGINE_DIR/seed-rootfs" t q out
    t=$(now)
    rm -rf "$rootfs"
    mkdir -p "$rootfs/bin" "$rootfs/etc" "$rootfs/tmp" "$rootfs/root" "$rootfs/proc" "$rootfs/sys" "$rootfs/dev"
    cp /bin/busybox "$rootfs/bin/busybox"
    # skip the "busybox" applet itself: linking it would overwrite the binary with a self-link
    # (one process for ~400 links, not one ln each)
    /bin/busybox --list | grep -vx busybox | python3 -c \
        'import os, sys; [os.symlink("busybox", os.path.join(sys.argv[1], a.strip())) for a in sys.stdin]' "$rootfs/bin"
    echo 'root:x:0:0:root:/root:/bin/sh' >"$rootfs/etc/passwd"
    echo 'root:x:0:' >"$rootfs/etc/group"
    chmod 1777 "$rootfs/tmp"
    tar -C "$rootfs" --numeric-owner -cf "$ENGINE_DIR/seed-rootfs.tar" .
    rm -rf "$rootfs"
    # POST /images/create?fromSrc=- is "docker import"; repo may carry the tag
    q="fromSrc=-&repo=$(urlencode "$SEED_IMAGE")&changes=$(urlencode 'CMD ["/bin/sh"]')&changes=$(urlencode 'ENV PATH=/bin')"
    out=$(api POST "/images/create?$q" -H 'Content-Type: application/x-tar' \
        --data-binary "@$ENGINE_DIR/seed-rootfs.tar") || die "import of the seed image failed: $out"
    case $out in *'"error'*) die "import of the seed image failed: $out" ;; esac
    log "seeded $SEED_IMAGE in $(since "$t")s"
}

# push_seed REGISTRY AUTH_JSON: tag, push, drop the local copy (so that tests really pull)
push_seed() {
    local remote="$1/${SEED_IMAGE%:*}" tag=${SEED_IMAGE##*:} auth out
    auth=$(printf '%s' "$2" | base64 -w0)
    api POST "/images/$SEED_IMAGE/tag?repo=$(urlencode "$remote")&tag=$tag" >/dev/null || die "tagging $remote failed"
    out=$(api POST "/images/$remote/push?tag=$tag" -H "X-Registry-Auth: $auth") || die "push to $1 failed: $out"
    case $out in *'"error'*) die "push to $1 failed: $out" ;; esac
    api DELETE "/images/$remote:$tag" >/dev/null || true
    log "pushed $remote:$tag"
}

cmd_start() {
    check_dir
    [ "$(id -u)" = 0 ] || die "run as root (dockerd needs it)"
    local t_all
    t_all=$(now)
    if pid_from "$ENGINE_DIR/dockerd.pid" >/dev/null && ping_engine &&
        ping_open_registry && ping_auth_registry; then
        log "reusing the running engine in $ENGINE_DIR"
        api GET "/images/$SEED_IMAGE/json" >/dev/null 2>&1 || seed_image
        print_env | tee "$ENGINE_DIR/env"
        return 0
    fi
    [ ! -e "$ENGINE_DIR" ] || { log "removing stale state in $ENGINE_DIR"; cmd_stop; }
    for addr in "$ENGINE_REGISTRY" "$ENGINE_AUTH_REGISTRY"; do
        case $addr in 127.*:* | localhost:*) ;; *) die "registry address $addr is not on loopback" ;; esac
        ! answers "$addr" || die "something already answers on $addr; set ENGINE_REGISTRY / ENGINE_AUTH_REGISTRY"
    done
    mkdir -p "$ENGINE_DIR"
    install_missing
    # on failure, stop what this run started; the logs stay in ENGINE_DIR
    trap 'rc=$?; if [ $rc != 0 ]; then log "start failed; logs kept in $ENGINE_DIR"; ENGINE_KEEP=1 cmd_stop; fi' EXIT
    start_dockerd
    # distribution's htpasswd auth accepts bcrypt only (Python's crypt has it through libxcrypt);
    # cost 4, not 12: the registry checks the hash on every request of every pull
    python3 -W ignore -c 'import crypt, sys; print(sys.argv[1] + ":" + crypt.crypt(sys.argv[2], crypt.mksalt(crypt.METHOD_BLOWFISH, rounds=16)))' \
        "$REG_USER" "$REG_PASSWORD" >"$ENGINE_DIR/htpasswd"
    start_registry registry "$ENGINE_REGISTRY" ping_open_registry
    start_registry auth-registry "$ENGINE_AUTH_REGISTRY" ping_auth_registry "$ENGINE_DIR/htpasswd"
    seed_image
    push_seed "$ENGINE_REGISTRY" '{}'
    push_seed "$ENGINE_AUTH_REGISTRY" "{\"username\":\"$REG_USER\",\"password\":\"$REG_PASSWORD\",\"serveraddress\":\"$ENGINE_AUTH_REGISTRY\"}"
    trap - EXIT
    print_env | tee "$ENGINE_DIR/env"
    log "all ready in $(since "$t_all")s; stop with: ENGINE_DIR=$ENGINE_DIR $0 stop"
}

# stop_pid NAME PID SECONDS: SIGTERM, wait, then SIGKILL; false if it had to be killed
stop_pid() {
    local name=$1 pid=$2 secs=$3 i
    [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null || return 0
    kill -TERM "$pid" 2>/dev/null
    for ((i = 0; i < secs * 10; i++)); do
        kill -0 "$pid" 2>/dev/null || return 0
        sleep 0.1
    done
    log "$name (pid $pid) still running after ${secs}s: SIGKILL"
    kill -KILL "$pid" 2>/dev/null
    sleep 0.2
    return 1
}

cmd_stop() {
    check_dir
    [ -e "$ENGINE_DIR" ] || { log "nothing to do: $ENGINE_DIR does not exist"; return 0; }
    local t dockerd clean=1 ids id p pid m stoppers=()
    t=$(now)
    for name in registry auth-registry; do   # in the background: each drains for ~2 s
        stop_pid "$name" "$(pid_from "$ENGINE_DIR/$name.pid" || true)" 10 &
        stoppers+=($!)
    done
    dockerd=$(pid_from "$ENGINE_DIR/dockerd.pid" || true)
    if [ -n "$dockerd" ] && [ -S "$SOCK" ]; then
        # removing the containers first makes dockerd's own shutdown quick and clean
        ids=$(curl -s --max-time 10 --unix-socket "$SOCK" "http://localhost/$API/containers/json?all=1" |
            grep -o '"Id":"[0-9a-f]*"' | cut -d'"' -f4 || true)
        for id in $ids; do
            curl -s --max-time 20 --unix-socket "$SOCK" -X DELETE "http://localhost/$API/containers/$id?force=1&v=1" >/dev/null || true
        done
    fi
    stop_pid dockerd "$dockerd" 30 || clean=0
    wait "${stoppers[@]}" || true
    if [ "$clean" = 0 ] || [ -z "$dockerd" ]; then
        # dockerd was killed or is gone: its containerd, shims and container processes
        # are found through ENGINE_DIR (command line) and the private cgroup parent
        for p in /proc/[0-9]*; do
            pid=${p#/proc/}
            [ "$pid" != $$ ] || continue
            if tr '\0' ' ' <"$p/cmdline" 2>/dev/null | grep -qF -- "$ENGINE_DIR/exec/containerd/"; then
                kill -KILL "$pid" 2>/dev/null || true
            fi
        done
        for pid in $(cat /sys/fs/cgroup/*/"$CGROUP_PARENT"/*/cgroup.procs 2>/dev/null | sort -un); do
            kill -KILL "$pid" 2>/dev/null || true
        done
        sleep 0.3
    fi
    for d in /sys/fs/cgroup/*/"$CGROUP_PARENT"; do
        [ -d "$d" ] || continue
        find "$d" -depth -mindepth 1 -type d -exec rmdir {} \; 2>/dev/null || true
        rmdir "$d" 2>/dev/null || log "could not remove cgroup $d"
    done
    # dockerd leaves an nsfs mount at exec/netns/default (and overlay mounts if killed)
    for m in $(awk -v d="$ENGINE_DIR/" 'index($5, d) == 1 { print $5 }' /proc/self/mountinfo | sort -r); do
        umount "$m" 2>/dev/null || umount -l "$m" 2>/dev/null || log "could not unmount $m"
    done
    if [ "${ENGINE_KEEP:-0}" = 1 ]; then
        rm -f "$SOCK" "$ENGINE_DIR"/*.pid
        log "stopped in $(since "$t")s; kept $ENGINE_DIR"
    else
        rm -rf "$ENGINE_DIR" || log "could not remove all of $ENGINE_DIR"
        log "stopped in $(since "$t")s; removed $ENGINE_DIR"
    fi
}

cmd_env() {
    check_dir
    ping_engine || die "no engine answers on $SOCK; run $0 start"
    print_env
}

case ${1:-} in
    start) cmd_start ;;
    stop) cmd_stop ;;
    env) cmd_env ;;
    *) echo "usage: $0 start|stop|env" >&2; exit 2 ;;
esac
