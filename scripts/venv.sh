# Sourced by the project's scripts: make (once) and activate the virtual
# environment that the daemon and the tests run from.
#   VENV   where it lives (default: .venv in the checkout)
#   EXTRAS which extras of iofogd to install (default: psutil,test)
set -euo pipefail
top=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
VENV=${VENV:-$top/.venv}
EXTRAS=${EXTRAS:-psutil,test}
stamp="$VENV/.iofogd-installed-$(sha1sum "$top/setup.cfg" | cut -c1-12)-${EXTRAS//,/_}"
if [ ! -x "$VENV/bin/python" ]; then
    python3 -m venv "$VENV"
fi
if [ ! -e "$stamp" ]; then
    "$VENV/bin/pip" install --quiet --disable-pip-version-check -e "$top[$EXTRAS]"
    touch "$stamp"
fi
export PATH="$VENV/bin:$PATH"
