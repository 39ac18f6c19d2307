#!/bin/sh
# iofogctl Agent spec, scripts.uninstall: removes iofogd and everything it
# kept (purge: config.xml, token, node identity, state, logs), and the
# repository install_iofogd.sh added. iofogctl runs it after
# `sudo iofog-agent deprovision` and `sudo -S service iofog-agent stop`,
# as the login user without sudo, so it calls sudo itself when not root.
set -eu

sh_c="sh -c"
[ "$(id -u)" = 0 ] || sh_c="sudo -E sh -c"
export DEBIAN_FRONTEND=noninteractive

if dpkg-query -W -f='${Status}' iofogd 2>/dev/null | grep -q installed; then
    # With the transitional iofog-agent (epoch 1) of a node moved off the
    # Java agent, which depends on iofogd. A Java package left as config
    # files is not purged: its purge script may be upstream's remove.sh.
    pkgs=iofogd
    v=$(dpkg-query -W -f='${Version}' iofog-agent 2>/dev/null || true)
    if [ -n "$v" ] && dpkg --compare-versions "$v" ge 1:0; then
        pkgs="iofogd iofog-agent"
    fi
    echo "# Removing $pkgs (purge)"
    $sh_c "apt-get purge -y -q $pkgs"
fi
$sh_c "rm -f /etc/apt/sources.list.d/iofogd.list /usr/share/keyrings/iofogd-archive-keyring.gpg"
echo "# iofogd removed"
