#!/bin/sh
# iofogctl Agent spec, scripts.deps: the prerequisite check for iofogd.
# iofogctl copies this folder to /etc/iofog/agent/ on the node and runs this
# script over SSH as the login user (no sudo), before `sudo install_iofogd.sh`.
# It installs nothing: it says what is missing and exits 1 if the node cannot
# take the package (iofogd needs a Debian-based system: apt, dpkg, Python >= 3.9
# from the distribution, and a service manager: systemd, sysvinit or OpenRC).
set -eu

missing=0
need() {  # need WHAT COMMAND...
    what="$1"
    shift
    if "$@" >/dev/null 2>&1; then
        echo "# ok: $what"
    else
        echo "# missing: $what" >&2
        missing=1
    fi
}

need "a Debian-based system (/etc/debian_version)" test -r /etc/debian_version
need "apt-get and dpkg" sh -c 'command -v apt-get && command -v dpkg'
need "root through sudo (iofogctl runs the install with sudo)" \
    sh -c '[ "$(id -u)" = 0 ] || command -v sudo'
# python3 (>= 3.9) is a dependency that apt installs; it must be the one the
# distribution has (Debian 11+, Raspberry Pi OS 11+, Ubuntu 22.04+).
need "python3 >= 3.9 installed or installable" sh -c '
    if command -v python3; then
        python3 -c "import sys; sys.exit(sys.version_info < (3, 9))"
    else
        v=$(apt-cache policy python3 | sed -n "s/^ *Candidate: \([0-9]*\.[0-9]*\).*/\1/p")
        [ -n "$v" ] && [ "${v%%.*}" -ge 3 ] && [ "${v#*.}" -ge 9 ]
    fi'
need "a service manager: systemd, sysvinit (/etc/init.d) or OpenRC" \
    sh -c '[ -d /run/systemd/system ] || [ -e /run/openrc/softlevel ] || [ -d /etc/init.d ]'
if command -v docker >/dev/null 2>&1 || [ -S /var/run/docker.sock ]; then
    echo "# ok: a Docker engine"
else
    echo "# note: no Docker engine yet; iofogd serves the Local API without one," \
        "microservices need one (apt-get install docker.io)"
fi
exit "$missing"
