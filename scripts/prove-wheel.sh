#!/bin/sh
# Proof of the air-gapped install: `pip wheel` gives exactly one
# py3-none-any wheel; in a fresh venv of a Python without psutil, copying that
# one file and `pip install --no-index iofogd-*.whl` works with no network at
# all (a network namespace with only loopback, when unshare is allowed), and
# the daemon runs: `iofog-agent status` says RUNNING, figures from /proc.
#
#   scripts/prove-wheel.sh [PYTHON]     (default /usr/bin/python3)
#
# Building the wheel fetches setuptools and wheel from PyPI (build isolation);
# everything after that is offline. Work dir ./run/prove-wheel.
set -eu
ROOT=$(cd "$(dirname "$0")/.." && pwd)
. "$ROOT/scripts/lib/debian.sh"
PYTHON="${1:-/usr/bin/python3}"
WORK="$ROOT/run/prove-wheel"
START=$(date +%s)
rm -rf "$WORK"
mkdir -p "$WORK/airgap"

build_wheel "$WORK/dist" "$PYTHON"
log "ok: one wheel: $(basename "$WHEEL")"
cp "$WHEEL" "$WORK/airgap/"

# Offline from here: a network namespace that has only loopback.
OFFLINE=""
if unshare --net true 2>/dev/null; then
    OFFLINE="unshare --net"
    log "offline: new network namespace with only loopback"
else
    log "unshare --net not allowed here: relying on --no-index alone"
fi
PORT=$(free_port)
# shellcheck disable=SC2016 # expanded by the inner shell
$OFFLINE sh -eu -c '
    ip link set lo up 2>/dev/null || true
    "$1" -m venv "$2/venv"
    if "$2/venv/bin/python" -c "import psutil" 2>/dev/null; then
        echo "psutil is importable in the fresh venv" >&2; exit 1
    fi
    "$2/venv/bin/pip" install --quiet --disable-pip-version-check --no-index "$2"/airgap/iofogd-*.whl
    "$2/venv/bin/iofogd" --root "$2/root" --address 127.0.0.1 --port "$3" >"$2/iofogd.out" 2>&1 &
    pid=$!
    trap "kill -TERM $pid 2>/dev/null || true" EXIT
    i=0
    until "$2/venv/bin/iofog-agent" --root "$2/root" --port "$3" status >"$2/status.out" 2>&1 \
        && head -n 1 "$2/status.out" | grep -q ": RUNNING"; do
        i=$((i + 1))
        if [ "$i" -gt 60 ] || ! kill -0 "$pid" 2>/dev/null; then
            cat "$2/iofogd.out" >&2; exit 1
        fi
        sleep 0.5
    done
    head -n 1 "$2/status.out" >&2
    kill -TERM "$pid"
    wait "$pid"
    trap - EXIT
' prove-wheel "$PYTHON" "$WORK" "$PORT" || die "offline install and run"
log "ok: installed offline, status RUNNING, daemon stopped on SIGTERM with status 0"
grep -q "resource figures from proc" "$WORK/iofogd.out" || die "figures not from /proc: $(head -n 3 "$WORK/iofogd.out")"
log "ok: resource figures from /proc (no psutil)"
log "PASS prove-wheel in $(($(date +%s) - START)) s"
