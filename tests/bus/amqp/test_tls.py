"""amqps://: our client over TLS (the ssl module) to the broker, through a TLS
terminator in front of RabbitMQ (the private broker listens in plain AMQP)."""
from __future__ import annotations

import os
import shutil
import socket
import ssl
import subprocess
import threading
import uuid
from typing import Any, Iterator, List

import pytest

from iofogd.bus.amqp import message as m
from iofogd.bus.amqp.client import Client
from iofogd.errors import AmqpConnectionLost
from tests.bus.amqp.conftest import Broker, wait_for


def _pipe(src: socket.socket, dst: socket.socket) -> None:
    try:
        while True:
            data = src.recv(65536)
            if not data:
                break
            dst.sendall(data)
    except OSError:
        pass
    finally:
        for s in (src, dst):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


class TlsTerminator:
    """Accepts TLS on a loopback port and forwards the plain bytes to the broker."""

    def __init__(self, certfile: str, keyfile: str, upstream_port: int) -> None:
        self.context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.context.load_cert_chain(certfile, keyfile)
        self.upstream_port = upstream_port
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.sockets: List[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                raw, _ = self.listener.accept()
            except OSError:
                return
            try:
                tls = self.context.wrap_socket(raw, server_side=True)
            except (OSError, ssl.SSLError):
                raw.close()
                continue
            upstream = socket.create_connection(("127.0.0.1", self.upstream_port))
            self.sockets += [tls, upstream]
            threading.Thread(target=_pipe, args=(tls, upstream), daemon=True).start()
            threading.Thread(target=_pipe, args=(upstream, tls), daemon=True).start()

    def close(self) -> None:
        self.listener.close()
        for s in self.sockets:
            s.close()


@pytest.fixture
def terminator(broker: Broker, tmp_path: Any) -> Iterator[tuple[TlsTerminator, str]]:
    if shutil.which("openssl") is None:
        pytest.skip("openssl (to make a throwaway certificate) is not installed")
    cert, key = str(tmp_path / "cert.pem"), str(tmp_path / "key.pem")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=127.0.0.1",
                    "-addext", "subjectAltName=IP:127.0.0.1", "-days", "1", "-keyout", key, "-out", cert],
                   check=True, capture_output=True)
    t = TlsTerminator(cert, key, broker.port)
    yield t, cert
    t.close()


def test_amqps_with_a_trusted_certificate(terminator: tuple[TlsTerminator, str]) -> None:
    t, cert = terminator
    context = ssl.create_default_context(cafile=cert)
    c = Client(f"amqps://guest:guest@127.0.0.1:{t.port}", ssl_context=context)
    c.connect()
    try:
        q = uuid.uuid4().hex
        got: List[Any] = []
        c.receiver(q, lambda r, d: (got.append(m.decode_message(d.payload).body), c.settle(d)))
        body = b"\xab" * 200_000  # many TLS records, many frames
        c.send(c.sender(q), m.encode_message(m.Message([body], m.BODY_DATA)))
        assert wait_for(lambda: got == [[body]])
    finally:
        c.close()
    assert c.error is None


def test_amqps_refuses_an_untrusted_certificate(terminator: tuple[TlsTerminator, str]) -> None:
    t, _ = terminator
    c = Client(f"amqps://guest:guest@127.0.0.1:{t.port}", ssl_context=ssl.create_default_context())
    with pytest.raises(AmqpConnectionLost, match="TLS handshake"):
        c.connect()


def test_the_default_port_of_amqps_is_5671() -> None:
    from iofogd.bus.amqp.client import Endpoint
    e = Endpoint.parse("amqps://router.example")
    assert (e.host, e.port, e.tls) == ("router.example", 5671, True)
    e = Endpoint.parse("amqp://u%40x:p%3A@10.0.0.1")
    assert (e.port, e.username, e.password, e.tls) == (5672, "u@x", "p:", False)
    with pytest.raises(ValueError):
        Endpoint.parse("http://x")
