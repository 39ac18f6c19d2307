"""Kernel timeouts on blocking sockets: SO_RCVTIMEO and SO_SNDTIMEO.

The daemon's sockets stay blocking, with no Python timeout: CPython polls
before every recv and send on a socket that has one, two more syscalls per
call, each dropping and retaking the GIL (measured: iofogd/http/handler.py,
``_DeadlineSocketIO``). The kernel keeps the time instead: a read or a write
that waits longer than the bound fails with EAGAIN (``BlockingIOError``).
"""
from __future__ import annotations

import socket
import struct

TYPE_CHECKING = False   # typing is not imported at run time: see iofogd/record.py
if TYPE_CHECKING:
    from typing import Optional

_TIMEVAL = struct.Struct("@ll")   # struct timeval on Linux: time_t and suseconds_t, both long


def set_timeout(sock: socket.socket, option: int, seconds: Optional[float]) -> None:
    """SO_RCVTIMEO or SO_SNDTIMEO of ``sock``: each wait bounded by ``seconds``
    (at least 1 ms: a zero timeval would mean no bound); None: no bound."""
    if seconds is None:
        sock.setsockopt(socket.SOL_SOCKET, option, _TIMEVAL.pack(0, 0))
        return
    usec = max(1000, int(seconds * 1_000_000))
    sock.setsockopt(socket.SOL_SOCKET, option, _TIMEVAL.pack(usec // 1_000_000, usec % 1_000_000))
