#!/bin/sh
# Builds the .debs with dpkg-buildpackage (dh-python/pybuild) from the work
# tree and checks them with lintian (no errors, no warnings): iofogd, and
# iofog-agent, the transitional package that moves a host off the Java agent
# (version 1:<version>, docs/host.md#packaging).
#
#   scripts/build-deb.sh [--version V] [--out DIR]
#
# --version V  build as Debian version V (a changelog entry is added in the
#              build copy only; the proofs use it to test upgrades)
# --out DIR    where the .debs go (default: dist/); their paths are printed
#              last, one a line: iofogd_<v>_all.deb, then iofog-agent_<v>_all.deb
#              (version 1:<v>: the file name leaves the epoch out).
# Installs the build dependencies with apt-get when they are missing (root).
set -eu

ROOT=$(cd "$(dirname "$0")/.." && pwd)
OUT="$ROOT/dist"
VERSION=""
while [ $# -gt 0 ]; do
    case "$1" in
        --version) VERSION="$2"; shift 2 ;;
        --out) OUT="$2"; shift 2 ;;
        *) echo "usage: $0 [--version V] [--out DIR]" >&2; exit 2 ;;
    esac
done

. "$ROOT/scripts/lib/debian.sh"
need_debs debhelper dh-python pybuild-plugin-pyproject python3-all \
    python3-setuptools python3-wheel dpkg-dev fakeroot lintian

# The upstream part of the Debian version must be the Python package's.
PY_VERSION=$(sed -n 's/^__version__ = "\(.*\)"$/\1/p' "$ROOT/iofogd/__init__.py")
DEB_VERSION=$(sed -n '1s/^iofogd (\([^)]*\)).*/\1/p' "$ROOT/packaging/deb/changelog")
case "$DEB_VERSION" in
    "$PY_VERSION"|"$PY_VERSION"[+~]*) ;;
    *) echo "packaging/deb/changelog has $DEB_VERSION, iofogd/__init__.py has $PY_VERSION" >&2; exit 1 ;;
esac

WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
SRC="$WORK/iofogd"
mkdir -p "$SRC"
# The work tree as it is (not HEAD), without caches, venvs or build output.
(cd "$ROOT" && tar -cf - --exclude=__pycache__ --exclude='*.egg-info' \
    iofogd packaging setup.cfg pyproject.toml) | tar -xf - -C "$SRC"
for doc in "$ROOT"/README* "$ROOT"/LICENSE*; do
    [ ! -e "$doc" ] || cp "$doc" "$SRC/"
done
cp -a "$SRC/packaging/deb" "$SRC/debian"
cp "$SRC/packaging/systemd/iofogd.service" "$SRC/debian/iofogd.service"

if [ -n "$VERSION" ]; then
    {
        printf 'iofogd (%s) unstable; urgency=medium\n\n' "$VERSION"
        printf '  * Rebuild as %s.\n\n' "$VERSION"
        printf ' -- iofogd developers <iofogd@example.org>  %s\n\n' "$(date -R)"
        cat "$SRC/debian/changelog"
    } >"$SRC/debian/changelog.new"
    mv "$SRC/debian/changelog.new" "$SRC/debian/changelog"
fi

# Debian's own python3 builds it: a pyenv or venv earlier in PATH would not
# have dh-python's modules.
(cd "$SRC" && PATH=/usr/sbin:/usr/bin:/sbin:/bin dpkg-buildpackage -us -uc -b \
    >"$WORK/build.log" 2>&1) || {
    tail -n 60 "$WORK/build.log" >&2
    exit 1
}
# iofogd and the transitional iofog-agent (epoch 1, for the move off the
# Java agent): both checked, both printed, iofogd's path first.
mkdir -p "$OUT"
for deb in "$WORK"/iofogd_*_all.deb "$WORK"/iofog-agent_*_all.deb; do
    [ -e "$deb" ] || { echo "the build made no $(basename "$deb")" >&2; exit 1; }
    cp "$deb" "$OUT/"
    lintian --fail-on error,warning --tag-display-limit 0 "$OUT/$(basename "$deb")" >&2
done
for deb in "$WORK"/iofogd_*_all.deb "$WORK"/iofog-agent_*_all.deb; do
    echo "$OUT/$(basename "$deb")"
done
