# Shared by scripts/build-deb.sh and scripts/prove-*.sh (sourced, POSIX sh).
# Host packages, and bookworm chroots for the packaging proofs:
#   need_debs PKG...           apt-get install the missing ones (root)
#   chroot_base ARCH           cached pristine debootstrap (minbase) of bookworm
#   chroot_up ARCH DIR         fresh copy of it in DIR, /proc /sys /dev /run mounted
#   chroot_down                unmount everything chroot_up mounted (trap-safe)
#   in_chroot CMD...           run CMD in the chroot with a clean environment
# Cache: $IOFOGD_PROVE_CACHE (default /var/cache/iofogd-prove): the pristine
# chroots and the downloaded .debs, so a rerun downloads nothing.

SUITE=bookworm
MIRROR="${IOFOGD_PROVE_MIRROR:-http://deb.debian.org/debian}"
CACHE="${IOFOGD_PROVE_CACHE:-/var/cache/iofogd-prove}"
CHROOT=""
MOUNTED=""

log() { printf '%s [%s] %s\n' "$(date +%H:%M:%S)" "${0##*/}" "$*" >&2; }
die() { log "FAIL: $*"; exit 1; }
expect() {  # expect WHAT GOT WANTED
    [ "$2" = "$3" ] || die "$1: got '$2', expected '$3'"
    log "ok: $1 = $3"
}

# The options of the prove scripts: --arch ARCH (default: this machine's),
# --debs DIR (where the two .debs are built or found; default ./run/debs).
# Sets ARCH, DEBS and START.
# shellcheck disable=SC2034 # read by the sourcing script
proof_args() {
    DEBS="$(cd "$(dirname "$0")/.." && pwd)/run/debs"
    ARCH=$(dpkg --print-architecture)
    while [ $# -gt 0 ]; do
        case "$1" in
            --arch) ARCH="$2"; shift 2 ;;
            --debs) DEBS="$2"; shift 2 ;;
            *) echo "usage: $0 [--arch ARCH] [--debs DIR]" >&2; exit 2 ;;
        esac
    done
    START=$(date +%s)
}

need_debs() {
    missing=""
    for pkg in "$@"; do
        dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed' \
            || missing="$missing $pkg"
    done
    [ -z "$missing" ] && return 0
    log "apt-get install$missing"
    apt-get update -qq
    # shellcheck disable=SC2086 # a word list
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $missing >/dev/null
}

chroot_base() {
    arch="$1"
    base="$CACHE/$SUITE-$arch"
    [ -x "$base/usr/bin/apt-get" ] && return 0
    need_debs debootstrap
    mkdir -p "$CACHE/debs-$arch"
    rm -rf "$base.tmp"
    if [ "$arch" = "$(dpkg --print-architecture)" ]; then
        log "debootstrap $SUITE $arch"
        debootstrap --variant=minbase --arch="$arch" --cache-dir="$CACHE/debs-$arch" \
            "$SUITE" "$base.tmp" "$MIRROR" >"$CACHE/debootstrap-$arch.log" 2>&1 \
            || { tail -n 20 "$CACHE/debootstrap-$arch.log" >&2; die "debootstrap $arch"; }
    else
        # Foreign architecture: first stage here, second stage under qemu-user
        # (binfmt_misc with the F flag, so no qemu binary is copied in).
        log "debootstrap $SUITE $arch (foreign, qemu-user)"
        debootstrap --foreign --variant=minbase --arch="$arch" --cache-dir="$CACHE/debs-$arch" \
            "$SUITE" "$base.tmp" "$MIRROR" >"$CACHE/debootstrap-$arch.log" 2>&1 \
            && chroot "$base.tmp" /debootstrap/debootstrap --second-stage \
                >>"$CACHE/debootstrap-$arch.log" 2>&1 \
            || { tail -n 20 "$CACHE/debootstrap-$arch.log" >&2; die "debootstrap $arch"; }
    fi
    # Package installs in the chroot must not start services (no init runs there).
    printf '#!/bin/sh\nexit 101\n' >"$base.tmp/usr/sbin/policy-rc.d"
    chmod 755 "$base.tmp/usr/sbin/policy-rc.d"
    rm -rf "$base.tmp/var/cache/apt/archives/"*.deb
    mv "$base.tmp" "$base"
}

mount_in() {  # mount_in TARGET MOUNT-ARGS...
    target="$CHROOT$1"
    shift
    mkdir -p "$target"
    mount "$@" "$target"
    MOUNTED="$target $MOUNTED"
}

chroot_up() {
    arch="$1"
    CHROOT="$2"
    chroot_base "$arch"
    chroot_down
    rm -rf "$CHROOT"
    mkdir -p "$(dirname "$CHROOT")"
    cp -a "$CACHE/$SUITE-$arch" "$CHROOT"
    cp /etc/resolv.conf "$CHROOT/etc/resolv.conf" 2>/dev/null || true
    mount_in /proc -t proc proc
    mount_in /sys -t sysfs sysfs
    mount_in /dev --bind /dev
    mount_in /dev/pts --bind /dev/pts
    mount_in /run -t tmpfs -o mode=0755,nosuid,nodev tmpfs
    mount_in /var/cache/apt/archives --bind "$CACHE/debs-$arch"
}

# Ends the processes whose root is the chroot (a daemon a failed proof left
# running, e.g. one started by a service script), by pid: TERM, then KILL.
chroot_kill() {
    [ -n "$CHROOT" ] || return 0
    for signal in TERM KILL; do
        pids=""
        for dir in /proc/[0-9]*; do
            [ "$(readlink "$dir/root" 2>/dev/null)" = "$CHROOT" ] && pids="$pids ${dir#/proc/}"
        done
        [ -n "$pids" ] || return 0
        # shellcheck disable=SC2086 # a word list of pids
        kill -s "$signal" $pids 2>/dev/null || true
        [ "$signal" = KILL ] || sleep 2
    done
}

chroot_down() {
    [ -z "$MOUNTED" ] || chroot_kill
    for target in $MOUNTED; do
        umount "$target" 2>/dev/null || umount -l "$target" 2>/dev/null || true
    done
    MOUNTED=""
}

in_chroot() {
    chroot "$CHROOT" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root \
        LANG=C.UTF-8 DEBIAN_FRONTEND=noninteractive "$@"
}

# The .debs the proofs install: iofogd of the work tree's version (DEB1),
# the same rebuilt as a newer one (DEB2, for the upgrade), and the
# transitional iofog-agent (version 1:<version>) built with DEB1 (AGENT1, for
# the move off the Java agent). The fresh installs take iofogd alone.
build_debs() {  # build_debs DIR
    top=$(cd "$(dirname "$0")/.." && pwd)
    v=$(sed -n '1s/^iofogd (\([^)]*\)).*/\1/p' "$top/packaging/deb/changelog")
    DEB1="$1/iofogd_${v}_all.deb"
    DEB2="$1/iofogd_${v}+proof1_all.deb"
    AGENT1="$1/iofog-agent_${v}_all.deb"
    # Rebuilt when missing or older than any source of the package.
    if [ ! -e "$DEB1" ] || [ ! -e "$DEB2" ] || [ ! -e "$AGENT1" ] || [ -n "$(cd "$top" && find iofogd packaging \
        setup.cfg pyproject.toml -newer "$DEB1" ! -name '*.pyc' -print | head -n 1)" ]; then
        log "building $DEB1, $AGENT1 and $DEB2"
        sh "$top/scripts/build-deb.sh" --out "$1" >/dev/null
        sh "$top/scripts/build-deb.sh" --out "$1" --version "$v+proof1" >/dev/null
    fi
}

free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# Polls `iofog-agent status` in the chroot until its first line says RUNNING
# ($CLI: another iofog-agent, e.g. a venv's).
wait_running() {  # wait_running PORT TIMEOUT-SECONDS
    i=0
    while [ "$i" -lt "$2" ]; do
        first=$(in_chroot "${CLI:-iofog-agent}" --port "$1" status 2>/dev/null | head -n 1) || true
        case "$first" in *": RUNNING"*) log "status: $first"; return 0 ;; esac
        sleep 1
        i=$((i + 1))
    done
    return 1
}

# `pip wheel --no-deps` of the work tree into DIR (emptied first), with the
# given Python (default /usr/bin/python3) in a throw-away venv; it must give
# exactly one py3-none-any wheel. Sets WHEEL.
build_wheel() {  # build_wheel DIR [PYTHON]
    top=$(cd "$(dirname "$0")/.." && pwd)
    py="${2:-/usr/bin/python3}"
    [ "$py" != /usr/bin/python3 ] || need_debs python3-venv
    rm -rf "$1" "$1.env"
    mkdir -p "$1"
    log "pip wheel --no-deps"
    "$py" -m venv "$1.env"
    "$1.env/bin/pip" wheel --quiet --disable-pip-version-check --no-deps -w "$1" "$top" \
        || die "pip wheel"
    WHEEL=$(ls "$1"/*)
    [ "$(echo "$WHEEL" | wc -l)" = 1 ] || die "expected one wheel, got: $WHEEL"
    case "$WHEEL" in */iofogd-*-py3-none-any.whl) ;; *) die "not a py3-none-any wheel: $WHEEL" ;; esac
}

# Boots the chroot's tree ($CHROOT, unmounted: chroot_down first) with
# systemd-nspawn, private network, more nspawn options as arguments; the
# console goes to LOG. Sets NSPAWN_PID (nspawn) and LEADER (the container's
# init, for nsenter). nspawn_down powers it off (trap-safe).
NSPAWN_PID=""
LEADER=""
nspawn_boot() {  # nspawn_boot LOG [NSPAWN-OPTION...]
    log_file="$1"
    shift
    systemd-nspawn --quiet --directory="$CHROOT" --boot --private-network \
        --register=no --keep-unit --console=pipe "$@" >"$log_file" 2>&1 &
    NSPAWN_PID=$!
    LEADER=""
    i=0
    until [ -n "$LEADER" ]; do
        LEADER=$(cat /proc/"$NSPAWN_PID"/task/*/children 2>/dev/null | awk '{print $1}')
        i=$((i + 1))
        [ "$i" -lt 100 ] || { cat "$log_file" >&2; die "container did not start"; }
        sleep 0.1
    done
}
nspawn_down() {
    if [ -n "$NSPAWN_PID" ] && kill -0 "$NSPAWN_PID" 2>/dev/null; then
        # SIGTERM asks nspawn to shut the container down cleanly.
        kill -TERM "$NSPAWN_PID" 2>/dev/null || true
        wait "$NSPAWN_PID" 2>/dev/null || true
    fi
    NSPAWN_PID=""
}
in_ct() { nsenter --target "$LEADER" --all "$@"; }

# The Controller stand-in (tests/controller/standin.py) in a container:
# standin_copy, before the boot, puts it and what it imports under
# /root/proof; standin_start [OPTION...], in the booted container, runs
# scripts/lib/controller-standin.py there as unit proof-controller and sets
# URL, KEY and FOG from what it writes.
standin_copy() {
    top=$(cd "$(dirname "$0")/.." && pwd)
    mkdir -p "$CHROOT/root/proof/tests/controller"
    cp "$top/tests/__init__.py" "$CHROOT/root/proof/tests/"
    cp "$top/tests/controller/__init__.py" "$top/tests/controller/captures.py" "$top/tests/controller/standin.py" \
        "$CHROOT/root/proof/tests/controller/"
    cp "$top/scripts/lib/controller-standin.py" "$CHROOT/root/proof/"
}
standin_start() {
    rm -f "$CHROOT/root/proof/controller.env"
    in_ct systemd-run --quiet --unit=proof-controller python3 /root/proof/controller-standin.py \
        /root/proof/controller.env "$@"
    i=0
    until [ -e "$CHROOT/root/proof/controller.env" ]; do
        i=$((i + 1))
        [ "$i" -lt 100 ] || { in_ct journalctl -u proof-controller --no-pager | tail -n 20 >&2; die "controller stand-in"; }
        sleep 0.1
    done
    # shellcheck disable=SC1091 # written by the stand-in
    . "$CHROOT/root/proof/controller.env"
}
