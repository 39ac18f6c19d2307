#!/bin/sh
# Opt-in proof for Raspberry Pi gateways: scripts/prove-deb.sh (install,
# RUNNING, upgrade keeping identity, remove, purge) in arm64 and armhf
# bookworm chroots under qemu-user-static. Slow (emulated Python); CI does
# not run it.
#
#   scripts/prove-pi.sh [ARCH...]       (default: arm64 armhf)
#
# Root. Installs qemu-user-static and mounts binfmt_misc when needed.
set -eu
ROOT=$(cd "$(dirname "$0")/.." && pwd)
. "$ROOT/scripts/lib/debian.sh"
[ $# -gt 0 ] || set -- arm64 armhf

need_debs qemu-user-static debootstrap
BINFMT=/proc/sys/fs/binfmt_misc
[ -e "$BINFMT/register" ] || mount -t binfmt_misc binfmt_misc "$BINFMT"
for arch in "$@"; do
    case "$arch" in
        arm64) qemu="qemu-aarch64" ;;
        armhf) qemu="qemu-arm" ;;
        *) die "unknown arch $arch" ;;
    esac
    if [ ! -e "$BINFMT/$qemu" ]; then
        # Debian's qemu-user-static ships the registration with the F flag
        # (interpreter opened now), so nothing is copied into the chroots.
        conf="/usr/lib/binfmt.d/$qemu.conf"
        [ -e "$conf" ] || die "no $conf"
        cat "$conf" >"$BINFMT/register"
        log "registered $qemu in binfmt_misc"
    fi
done

build_debs "$ROOT/run/debs"
RESULT=0
for arch in "$@"; do
    start=$(date +%s)
    if sh "$ROOT/scripts/prove-deb.sh" --arch "$arch" --debs "$ROOT/run/debs"; then
        log "PASS $arch in $(($(date +%s) - start)) s"
    else
        log "FAIL $arch after $(($(date +%s) - start)) s"
        RESULT=1
    fi
done
exit "$RESULT"
