"""The published Python SDK (PyPI ``iofog`` 3.0.0b2 on ``ws4py`` 0.5.1) against our control socket.

The SDK is used as published: its Python 3 client bugs (docs/websocket.md#sdk-python)
are neither patched nor worked around in the agent.  One of them shows at the
end: when the server goes away the SDK's reconnect thread dies on
``e.message`` (an AttributeError in its own thread), which is the only way to
stop that non-daemon thread, so the warning it raises is expected.
"""
from __future__ import annotations

import threading

import pytest

from iofogd.ws.control import ControlHub
from iofogd.ws.session import SessionLimits
from iofogd.ws.echo import stop
from tests.ws.conftest import ServerFactory, wait_for

client_module = pytest.importorskip(
    "iofog.microservices.client",
    reason="the Python SDK is not installed: pip install --pre 'iofog==3.0.0b2' 'ws4py==0.5.1'",
)
listener_module = pytest.importorskip("iofog.microservices.listener")

# Quick keepalive, so the test also shows the SDK's always-0x0A pongs keep it connected.
LIMITS = SessionLimits(ping_interval=0.2, pong_timeout=0.5, close_timeout=1.0)


class Listener(listener_module.IoFogControlWsListener):  # type: ignore[misc,name-defined]
    def __init__(self) -> None:
        super().__init__()
        self.config = threading.Event()
        self.edge = threading.Event()

    def on_control_signal(self) -> None:
        self.config.set()

    def on_edge_resources_signal(self) -> None:
        self.edge.set()


@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")
def test_sdk_control_socket_gets_signals_and_acks(make_server: ServerFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SSL", raising=False)  # the SDK takes any non-empty SSL as "use TLS"
    hub = ControlHub()
    server = make_server(LIMITS, hub=hub)
    client = client_module.Client(id="sdk-ms", host="127.0.0.1", port=server.server_address[1])
    listener = Listener()
    client.establish_control_ws_connection(listener)
    worker = client.control_ws_client.worker
    try:
        assert wait_for(lambda: len(hub.sessions("sdk-ms")) == 1)
        (session,) = hub.sessions("sdk-ms")

        assert hub.signal_config("sdk-ms") == 1
        assert listener.config.wait(5)
        assert wait_for(lambda: hub.pending(session) is None)  # the hub saw its ACK

        assert hub.signal_edge_resources() == 1
        assert listener.edge.wait(5)
        assert wait_for(lambda: hub.pending(session) is None)

        # Several ping intervals later it is still the same, open session: the
        # SDK answers our 0x09 pings with 0x0A and that counts as a pong.
        assert not session.wait_closed(1.0)
        assert hub.sessions("sdk-ms") == [session] and session.open
    finally:
        stop(server)
        worker.join(10)
    assert not worker.is_alive()
    assert session.close_code == 1001
