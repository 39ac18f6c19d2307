#!/bin/sh
# iofogctl Agent spec, scripts.install: installs iofogd on the node, from a
# .deb or from a Debian repository, and waits until the agent is RUNNING.
# iofogctl runs it as `sudo /etc/iofog/agent/install_iofogd.sh ARGS...`:
#
#   install_iofogd.sh deb FILE
#       FILE: iofogd's .deb on the node, relative to this script's folder (a
#       .deb put in the scripts folder is copied to the node by iofogctl) or
#       absolute.
#   install_iofogd.sh repo "deb [signed-by=...] URL SUITE COMPONENT" [VERSION]
#       adds the repository to /etc/apt/sources.list.d/iofogd.list and installs
#       iofogd (=VERSION when given). A keyring file iofogd-archive-keyring.gpg
#       beside this script is installed to /usr/share/keyrings/ first.
#
# A node that runs the Java agent (package iofog-agent, a version without an
# epoch) moves to iofogd and keeps its node: the transitional package
# iofog-agent 1:<version> is installed in the same apt command, so that apt
# upgrades the Java package instead of removing it (its after-remove script
# deletes /etc/iofog-agent; README, "Moving off the Java agent"). With a .deb,
# the transitional one must lie beside it (iofog-agent_<version>_all.deb, as
# scripts/build-deb.sh names it); without it nothing is installed. Other
# nodes get iofogd alone.
# The version check is iofogctl's own (its install_iofog.sh): nothing is done
# when the installed agent already answers with the wanted version.
set -eu

HERE=$(cd "$(dirname "$0")" && pwd)
LIST=/etc/apt/sources.list.d/iofogd.list
KEYRING=iofogd-archive-keyring.gpg
export DEBIAN_FRONTEND=noninteractive

usage() {
    echo "usage: $0 deb FILE | $0 repo \"deb [signed-by=...] URL SUITE COMPONENT\" [VERSION]" >&2
    exit 2
}
[ "$(id -u)" = 0 ] || { echo "install_iofogd.sh: run it as root (iofogctl uses sudo)" >&2; exit 1; }
[ $# -ge 2 ] || usage

# What iofogctl compares: the first line of `iofog-agent version`, "ioFog "
# and spaces removed.
installed_version() {
    command -v iofog-agent >/dev/null 2>&1 || return 0
    iofog-agent version | head -n1 | sed "s/ioFog//g" | tr -d ' '
}

# 0 when the installed iofog-agent is the Java agent's (not the transitional
# package of iofogd, whose version has the epoch 1).
java_agent_installed() {
    v=$(dpkg-query -W -f='${Version} ${db:Status-Status}' iofog-agent 2>/dev/null) || return 1
    case "$v" in *" installed") ;; *) return 1 ;; esac
    dpkg --compare-versions "${v% installed}" lt 1:0
}

case "$1" in
    deb)
        case "$2" in /*) deb="$2" ;; *) deb="$HERE/$2" ;; esac
        [ -r "$deb" ] || { echo "install_iofogd.sh: no such .deb: $deb" >&2; exit 1; }
        want=$(dpkg-deb -f "$deb" Version)
        if [ "$(installed_version)" = "${want%%[+~-]*}" ] \
            && [ "$(dpkg-query -W -f='${Version}' iofogd 2>/dev/null || true)" = "$want" ]; then
            echo "Agent $want already installed."
            exit 0
        fi
        set -- "$deb"
        if java_agent_installed; then
            transitional="$(dirname "$deb")/iofog-agent_${want}_all.deb"
            if [ ! -r "$transitional" ]; then
                echo "install_iofogd.sh: the Java agent's package iofog-agent is installed: put the" \
                    "transitional $(basename "$transitional") beside $(basename "$deb")" \
                    "(iofogd alone would have apt remove the Java package, whose removal deletes the node)" >&2
                exit 1
            fi
            echo "# Moving off the Java agent $(dpkg-query -W -f='${Version}' iofog-agent): with $transitional"
            set -- "$deb" "$transitional"
        fi
        echo "# Installing iofogd $want from $deb"
        # apt pulls python3 and python3-psutil.
        apt-get install -y -q --no-install-recommends "$@"
        ;;
    repo)
        version="${3:-}"
        if [ -n "$version" ] && [ "$(installed_version)" = "$version" ]; then
            echo "Agent $version already installed."
            exit 0
        fi
        if [ -r "$HERE/$KEYRING" ]; then
            install -D -m 0644 "$HERE/$KEYRING" "/usr/share/keyrings/$KEYRING"
        fi
        echo "$2" >"$LIST"
        # Only this repository's lists, as iofogctl's own install script does.
        apt-get update -q -o Dir::Etc::sourcelist="$LIST" -o Dir::Etc::sourceparts=- \
            -o APT::Get::List-Cleanup=0
        set -- "iofogd${version:+=$version*}"
        # The Java agent's package: upgraded to the repository's transitional
        # one (an error, and nothing installed, when the repository has none).
        if java_agent_installed; then
            set -- "$@" "iofog-agent${version:+=1:$version*}"
        fi
        apt-get install -y -q --no-install-recommends "$@"
        ;;
    *)
        usage
        ;;
esac

# The package enables and starts the service; a host without a running
# service manager (a container) is started here. Then iofogctl's own wait.
if ! iofog-agent status >/dev/null 2>&1; then
    service iofog-agent start || true
fi
i=0
status=""
while [ "$status" != RUNNING ]; do
    i=$((i + 1))
    if [ "$i" -gt 60 ]; then
        echo "Timed out waiting for Agent to be RUNNING" >&2
        exit 1
    fi
    sleep 1
    status=$(iofog-agent status 2>/dev/null | cut -f2 -d: | head -n 1 | tr -d '[:space:]') || true
done
echo "# iofogd $(installed_version) is RUNNING"
