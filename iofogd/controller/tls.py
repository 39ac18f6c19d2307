"""TLS to the Controller: imported only for an https ``controller_url``, so that a
node whose Controller speaks plain HTTP never loads OpenSSL (docs/host.md#memory).

:class:`TLSConnection` is http.client's plain connection with the socket
wrapped after connecting, rather than ``http.client.HTTPSConnection``, which
the daemon's http.client does not have (iofogd/http/stdlib.py).
"""
from __future__ import annotations

import http.client
import logging
import ssl

from iofogd.errors import CertificateError

log = logging.getLogger(__name__)


class TLSConnection(http.client.HTTPConnection):
    """HTTPS; the handshake runs under the connect timeout, reads under the read timeout.

    A handshake that fails is a :class:`CertificateError` (not trusted, or no
    TLS agreed); a timeout or a refused connection stays an ``OSError``.
    """

    default_port = 443

    def __init__(
        self, host: str, port: int | None, connect_timeout: float, read_timeout: float, context: ssl.SSLContext
    ) -> None:
        super().__init__(host, port, timeout=connect_timeout)
        self.context = context
        self.read_timeout = read_timeout

    def connect(self) -> None:
        super().connect()   # TCP (with TCP_NODELAY), under the connect timeout
        try:
            self.sock = self.context.wrap_socket(self.sock, server_hostname=self.host)
        except ssl.SSLCertVerificationError as exc:
            raise CertificateError(f"controller certificate not trusted: {exc.verify_message}") from exc
        except ssl.SSLError as exc:
            raise CertificateError(f"TLS handshake with the controller failed: {exc.reason or exc}") from exc
        self.sock.settimeout(self.read_timeout)


def tls_context(cert_path: str | None) -> ssl.SSLContext:
    """System CAs plus the configured controller certificate, PEM or DER (docs/controller-api.md#client).

    Hostname verification stays on. An unreadable certificate file is logged
    and skipped, as upstream does; the system CAs may still validate the chain.
    """
    ctx = ssl.create_default_context()
    if cert_path:
        try:
            with open(cert_path, "rb") as fh:
                raw = fh.read()
        except OSError as exc:
            log.warning("controller certificate %s not readable: %s", cert_path, exc)
            return ctx
        try:
            if b"-----BEGIN" in raw:
                ctx.load_verify_locations(cadata=raw.decode("ascii", "replace"))
            else:
                ctx.load_verify_locations(cadata=raw)
        except (ssl.SSLError, ValueError) as exc:
            raise CertificateError(f"controller certificate {cert_path} is not a valid PEM or DER certificate: {exc}") from exc
    return ctx
