"""A WebSocket echo server built from :mod:`iofogd.ws`: the target of the conformance run and the bench.

``python -m iofogd.ws.echo --port N`` serves ``ws://127.0.0.1:N/<any path>`` and
echoes every text and binary message unchanged, as the Autobahn|Testsuite
fuzzing client requires.  Limits are raised above the 16 MiB messages and 4 MiB
fragmented messages (in up to 65536 fragments) of sections 9.x; everything else
is the daemon's path: a ``ThreadingHTTPServer`` whose accepted sockets have
TCP_NODELAY, the pure handshake, the 101 in one write, then
:class:`~iofogd.ws.session.WebSocketSession` with the ioFog ping rule.  With a
:class:`~iofogd.ws.control.ControlHub`, ``/v2/control/socket/id/<id>`` paths
are control sockets.  It lives in the package (not under tests/) because
bench/ and scripts/autobahn.sh use it too; the daemon never imports it.
"""
from __future__ import annotations

import argparse
import json
import logging
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from iofogd.errors import HandshakeError
from iofogd.ws import handshake
from iofogd.ws.control import ControlHub, control_socket_id
from iofogd.ws.envelope import SDK_PING, sdk_pong
from iofogd.ws.session import SessionLimits, SessionRegistry, WebSocketSession, read_buffered

TYPE_CHECKING = False   # typing is not imported at run time: see iofogd/record.py
if TYPE_CHECKING:
    from typing import Any, List, Optional, Tuple, Union

log = logging.getLogger(__name__)

ECHO_LIMITS = SessionLimits(max_message_size=32 << 20, max_frame_size=32 << 20, max_fragments=1 << 17)


def echo(session: WebSocketSession, data: Union[str, bytes]) -> None:
    if isinstance(data, str):
        session.send_text(data)
    else:
        session.send_binary(data)


class EchoServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128

    def __init__(
        self,
        address: Tuple[str, int],
        limits: SessionLimits = ECHO_LIMITS,
        hub: Optional[ControlHub] = None,
    ) -> None:
        super().__init__(address, EchoHandler)
        self.limits = limits
        self.hub = hub
        self.registry = SessionRegistry()

    def process_request(self, request: Any, client_address: Any) -> None:
        request.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        super().process_request(request, client_address)


class EchoHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: EchoServer

    def do_GET(self) -> None:
        server = self.server
        self.close_connection = True
        try:
            headers = handshake.validate_request(self.command, self.headers, self.request_version)
        except HandshakeError as exc:
            body = json.dumps({"status": "failed", "error": exc.message}).encode()
            self.send_response(exc.status)
            for name, value in exc.headers:
                self.send_header(name, value)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
            return
        sock = self.connection
        sock.sendall(handshake.response(headers))
        buffered = read_buffered(self.rfile, sock)
        session = WebSocketSession(
            sock, server.limits, path=self.path, peer=str(self.client_address[0]),
            ping_payload=SDK_PING, pong_payload=sdk_pong,
        )
        server.registry.add(session)
        hub = server.hub
        control_id = control_socket_id(self.path) if hub is not None else None
        try:
            if hub is not None and control_id is not None:
                hub.register(control_id, session)
                session.run(hub.on_message, buffered)
            else:
                session.run(echo, buffered)
        finally:
            if hub is not None:
                hub.unregister(session)
            server.registry.discard(session)

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 (stdlib name)
        log.debug("%s %r", self.address_string(), format % args)


def serve(
    port: int = 0, *, limits: SessionLimits = ECHO_LIMITS, hub: Optional[ControlHub] = None
) -> Tuple[EchoServer, threading.Thread]:
    """Start an echo server on 127.0.0.1:``port`` (0: a free one) in a thread."""
    server = EchoServer(("127.0.0.1", port), limits, hub)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), name="echo-server", daemon=True)
    thread.start()
    return server, thread


def stop(server: EchoServer) -> None:
    server.registry.close_all(wait=2.0)
    server.shutdown()
    server.server_close()


def main(argv: Optional[List[str]] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--port", type=int, default=9001)
    parser.add_argument("--host", default="127.0.0.1")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    server = EchoServer((args.host, args.port))
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.registry.close_all()
        server.server_close()


if __name__ == "__main__":
    main()
