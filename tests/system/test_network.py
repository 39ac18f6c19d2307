"""system/network.py: the address the Controller is reached from, on real sockets."""
from __future__ import annotations

import subprocess
import sys

from iofogd.system.network import route_source_address


def test_route_source_address_of_a_loopback_controller() -> None:
    assert route_source_address("http://127.0.0.1:54421/api/v3/") == "127.0.0.1"
    assert route_source_address("http://localhost/api/v3/") == "127.0.0.1"   # the scheme's port
    assert route_source_address("not a url") is None


def test_an_ascii_host_does_not_load_the_idna_codec() -> None:
    # ~0.4 MiB of resident memory (encodings.idna, stringprep, unicodedata) for nothing.
    code = ("import sys; from iofogd.system.network import route_source_address as r; "
            "r('http://localhost:54421/api/v3/'); "
            "print(sorted(m for m in ('encodings.idna', 'stringprep') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
