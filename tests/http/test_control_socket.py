"""The control socket through the real daemon (spec 2.1, 2.5): independent
clients, the published Python SDK, and shutdown."""
from __future__ import annotations

import json
import threading
import time
import urllib.request
from typing import Any, Callable

import pytest
import websocket  # websocket-client

from iofogd.daemon import Daemon


def url(d: Daemon, mid: str) -> str:
    return f"ws://127.0.0.1:{d.api_port}/v2/control/socket/id/{mid}"  # type: ignore[attr-defined]


def wait_for(predicate: Callable[[], Any], timeout: float = 5.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.01)
    return predicate()


def get_config(d: Daemon, mid: str) -> tuple[int, Any]:
    req = urllib.request.Request(
        f"http://127.0.0.1:{d.api_port}/v2/config/get", data=json.dumps({"id": mid}).encode(),  # type: ignore[attr-defined]
        headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=5) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def test_config_change_signals_every_socket_of_that_id(inproc_daemon: Daemon) -> None:
    d = inproc_daemon
    a = websocket.create_connection(url(d, "ms1"), timeout=5)
    assert wait_for(lambda: len(d.control.sessions("ms1")) == 1)   # so the hub's order is a, b
    b = websocket.create_connection(url(d, "ms1"), timeout=5)   # an SDK that reconnected
    other = websocket.create_connection(url(d, "ms2"), timeout=5)
    try:
        assert wait_for(lambda: len(d.control.sessions("ms1")) == 2)
        changed = d.state.set_microservice_configs({"ms1": '{"threshold":5}'})
        assert changed == ["ms1"]
        for ws in (a, b):
            opcode, data = ws.recv_data()
            assert (opcode, data) == (websocket.ABNF.OPCODE_BINARY, b"\x0c")
        other.settimeout(0.3)
        with pytest.raises(websocket.WebSocketTimeoutException):
            other.recv_data()
        assert get_config(d, "ms1") == (200, {"status": "okay", "config": '{"threshold":5}'})
        # The ACK clears the pending signal of that socket only.
        a.send_binary(b"\x0b")
        sa, sb = d.control.sessions("ms1")
        assert wait_for(lambda: d.control.pending(sa) is None)
        assert d.control.pending(sb) == (0x0C, 1)
        # An unchanged config sends nothing.
        assert d.state.set_microservice_configs({"ms1": '{"threshold":5}'}) == []
    finally:
        for ws in (a, b, other):
            ws.close()


def test_edge_resources_signal_goes_to_every_socket(inproc_daemon: Daemon) -> None:
    d = inproc_daemon
    socks = [websocket.create_connection(url(d, f"ms{i}"), timeout=5) for i in range(3)]
    try:
        assert wait_for(lambda: len(d.control.sessions()) == 3)
        assert d.state.set_edge_resources([{"id": 1, "name": "lamp"}])
        for ws in socks:
            assert ws.recv_data() == (websocket.ABNF.OPCODE_BINARY, b"\x0f")
    finally:
        for ws in socks:
            ws.close()


def test_every_ping_gets_a_pong(inproc_daemon: Daemon) -> None:
    ws = websocket.create_connection(url(inproc_daemon, "ms1"), timeout=5)
    try:
        ws.ping(b"\x09")
        assert ws.recv_data(control_frame=True) == (websocket.ABNF.OPCODE_PONG, b"\x0a")
        ws.ping(b"abcd")
        assert ws.recv_data(control_frame=True) == (websocket.ABNF.OPCODE_PONG, b"abcd")
    finally:
        ws.close()


def test_plain_get_is_refused_with_426_or_400(inproc_daemon: Daemon) -> None:
    d = inproc_daemon
    req = urllib.request.Request(f"http://127.0.0.1:{d.api_port}/v2/control/socket/id/ms1")  # type: ignore[attr-defined]
    with pytest.raises(urllib.error.HTTPError) as info:
        urllib.request.urlopen(req, timeout=5)
    assert info.value.code in (400, 426)
    assert json.loads(info.value.read())["status"] == "failed"


def test_shutdown_closes_sockets_with_1001(inproc_daemon: Daemon) -> None:
    d = inproc_daemon
    ws = websocket.create_connection(url(d, "ms1"), timeout=10)
    assert wait_for(lambda: len(d.control.sessions()) == 1)
    d.stop.set()
    opcode, data = ws.recv_data(control_frame=True)
    assert opcode == websocket.ABNF.OPCODE_CLOSE
    assert int.from_bytes(data[:2], "big") == 1001


def test_published_python_sdk_gets_0x0c_and_acks(inproc_daemon: Daemon) -> None:
    # The published SDK, as a microservice has it (a test dependency in setup.cfg).
    from iofog.microservices.client import Client
    from iofog.microservices.listener import IoFogControlWsListener

    d = inproc_daemon
    signalled = threading.Event()

    class Listener(IoFogControlWsListener):  # type: ignore[misc]
        def on_control_signal(self) -> None:
            signalled.set()

    client = Client(id="sdk-ms", ssl=False, host="127.0.0.1", port=d.api_port)  # type: ignore[attr-defined]
    client.establish_control_ws_connection(Listener())
    try:
        assert wait_for(lambda: d.control.sessions("sdk-ms"), timeout=10)
        d.state.set_microservice_configs({"sdk-ms": '{"k":"v"}'})
        assert signalled.wait(10)
        session = d.control.sessions("sdk-ms")[0]
        # The SDK ACKs after its listener returns; the agent sees it.
        assert wait_for(lambda: d.control.pending(session) is None, timeout=10)
    finally:
        client.control_ws_client.close()
