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
    echo "# Removing iofogd (purge)"
    $sh_c "apt-get purge -y -q iofogd"
fi
$sh_c "rm -f /etc/apt/sources.list.d/iofogd.list /usr/share/keyrings/iofogd-archive-keyring.gpg"
echo "# iofogd removed"
