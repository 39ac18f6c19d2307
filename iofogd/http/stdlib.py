"""http.server's classes, with http.client imported without the ssl module (docs/host.md#memory).

http.client, which http.server imports, imports ssl as it loads, only to define
HTTPSConnection, and ssl loads OpenSSL: on the bench machine (x86-64, Debian's
libssl 3) 3.4 MiB of the daemon's resident memory and about 4.5 ms of its
start-up, in a daemon that speaks TLS only to an https Controller or an amqps
router, and loads ssl then (iofogd/controller/tls.py, iofogd/bus/amqp/client.py).

So the daemon imports http.server from here: if http.client is not loaded yet,
it is imported with ssl blocked for the time of that one import, and has no
HTTPSConnection, which nothing in iofogd uses. In a process that loaded either
module before (a test, the CLI) this changes nothing.
"""
from __future__ import annotations

import sys

if "http.client" not in sys.modules and "ssl" not in sys.modules:
    sys.modules["ssl"] = None  # type: ignore[assignment]   # "import ssl" raises ImportError
    try:
        import http.client  # noqa: F401
    finally:
        del sys.modules["ssl"]

from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer  # noqa: E402

__all__ = ["BaseHTTPRequestHandler", "ThreadingHTTPServer"]
