"""Microservice identity (issue 12): a container of this agent may act only as its
own microservice on the endpoints without a token; other callers keep upstream's
behaviour unless strict mode refuses them.

Three levels: the map and the check as plain objects; the in-process daemon
over real sockets, with the loopback address standing for a container's (no
engine needed); and real containers on the private engine, on a user-defined
bridge network, that talk to a real daemon from inside with busybox's nc.
"""
from __future__ import annotations

import json
import os
import struct
import urllib.error
import urllib.request
import uuid
from typing import Any, Iterator, Optional

import pytest
import websocket  # websocket-client

from iofogd.config import Origin
from iofogd.daemon import Daemon
from iofogd.errors import DockerError, Forbidden
from iofogd.system import dockerproto as proto
from iofogd.system.identity import ContainerAddresses, MicroserviceIdentity, addresses_of, normalise_address
from iofogd.ws.endpoints import MAX_SESSIONS_PER_ID
from tests.controller.standin import ControllerStandIn, wait_until
from tests.daemon_process import RunningDaemon
from tests.test_config import make_store
from tests.system.conftest import Engine, microservice

SLEEPER = ["sh", "-c", "trap 'exit 0' TERM; sleep 100000 & wait"]
PASS = 35.0   # more than three reconciler passes on a loaded machine


# -- the map and the check ----------------------------------------------------------------------


def test_addresses_are_compared_as_the_engine_reports_them() -> None:
    assert normalise_address("::ffff:10.0.0.2") == "10.0.0.2"
    assert normalise_address("[FE80::1%eth0]") == "fe80::1"
    assert normalise_address(" 10.0.0.2 ") == "10.0.0.2"
    item = {"NetworkSettings": {"Networks": {
        "bridge": {"IPAddress": "", "GlobalIPv6Address": ""},            # --bridge=none: empty
        "net1": {"IPAddress": "10.1.0.5", "GlobalIPv6Address": "FD00::5"},
        "net2": None}}}
    assert addresses_of(item) == ["10.1.0.5", "fd00::5"]
    assert addresses_of({}) == [] and addresses_of({"NetworkSettings": None}) == []


def test_the_map_follows_passes_starts_and_removals() -> None:
    addresses = ContainerAddresses()
    addresses.replace([("ms-a", "cid-a", ["10.1.0.2"]), ("ms-b", "cid-b", ["10.1.0.3", "fd00::3"])])
    assert addresses.owner("10.1.0.2") == "ms-a" and addresses.owner("::ffff:10.1.0.3") == "ms-b"
    assert addresses.owner("fd00::3") == "ms-b" and addresses.owner("10.1.0.9") is None
    addresses.learn("ms-a", "cid-a2", ["10.1.0.7"])       # recreated: the old address is no longer A's
    assert addresses.owner("10.1.0.2") is None and addresses.owner("10.1.0.7") == "ms-a"
    addresses.forget("cid-b")
    assert addresses.snapshot() == {"10.1.0.7": "ms-a"}
    addresses.replace(())
    assert addresses.snapshot() == {}


def test_the_check(tmp_path: Any) -> None:
    addresses = ContainerAddresses()
    addresses.replace([("ms-a", "cid-a", ["10.1.0.2"])])
    store = make_store(tmp_path)
    identity = MicroserviceIdentity(addresses, store)
    identity.check("10.1.0.2", "ms-a")
    with pytest.raises(Forbidden) as info:
        identity.check("10.1.0.2", "ms-b")
    assert info.value.status == 403
    assert info.value.message == "This caller is microservice ms-a: it may use only its own id, not 'ms-b'"
    identity.check("10.1.0.2", "ms-b", admin=True)          # the admin token is the admin's
    identity.check("127.0.0.1", "ms-b")                     # not a container: upstream's behaviour
    assert store.apply({"smi": "on"}, Origin.LOCAL).errors == []   # read at each check: at once
    with pytest.raises(Forbidden) as info:
        identity.check("127.0.0.1", "ms-b")
    assert info.value.message == ("Strict microservice identity is on: '127.0.0.1' is not a container of "
                                  "this agent, so it may not act as microservice 'ms-b'")
    identity.check("127.0.0.1", "ms-b", admin=True)
    identity.check("10.1.0.2", "ms-a")
    with pytest.raises(Forbidden) as info:
        identity.check("10.1.0.2", "x" * 10_000)
    assert len(info.value.message) < 200                    # a client's id is bounded in the message


# -- the in-process daemon, the loopback address standing for a container's --------------------


def api(d: Daemon) -> str:
    return f"http://127.0.0.1:{d.api_port}"  # type: ignore[attr-defined]


def post_json(base: str, path: str, body: Any, token: Optional[str] = None) -> tuple[int, Any]:
    headers = {"Content-Type": "application/json"}
    if token is not None:
        headers["Authorization"] = token
    req = urllib.request.Request(base + path, data=json.dumps(body).encode(), headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def control_socket(d: Daemon, mid: str, token: Optional[str] = None) -> int:
    """The handshake's status: 101, or the refusal's."""
    header = [f"Authorization: {token}"] if token else []
    try:
        ws = websocket.create_connection(f"ws://127.0.0.1:{d.api_port}/v2/control/socket/id/{mid}",  # type: ignore[attr-defined]
                                         timeout=5, header=header)
    except websocket.WebSocketBadStatusException as exc:
        return int(exc.status_code)
    ws.close()
    return 101


def test_a_container_may_use_only_its_own_id(inproc_daemon: Daemon) -> None:
    d = inproc_daemon
    d.state.set_microservice_configs({"ms-a": '{"who":"a"}', "ms-b": '{"who":"b"}'})
    d.app.identity.addresses.replace([("ms-a", "cid-a", ["127.0.0.1"])])
    assert post_json(api(d), "/v2/config/get", {"id": "ms-a"}) == (200, {"status": "okay", "config": '{"who":"a"}'})
    assert post_json(api(d), "/v2/config/get", {"id": "ms-b"}) == (403, {
        "status": "failed", "error": "This caller is microservice ms-a: it may use only its own id, not 'ms-b'"})
    # An unknown id is refused the same way: nothing tells whether it exists.
    assert post_json(api(d), "/v2/config/get", {"id": "ms-x"})[0] == 403
    assert control_socket(d, "ms-a") == 101
    # More refusals than the per-id bound: each 403 gave back the place its
    # admission took before the identity check (iofogd/ws/endpoints.py, Seat),
    # so the owner (here the admin) still gets its socket below.
    for _ in range(MAX_SESSIONS_PER_ID + 4):
        assert control_socket(d, "ms-b") == 403
    assert d.control.sessions("ms-b") == []
    token = d.app.token.current()
    assert post_json(api(d), "/v2/config/get", {"id": "ms-b"}, token=token)[0] == 200
    assert control_socket(d, "ms-b", token=token) == 101


def test_strict_mode_refuses_callers_that_are_not_containers(inproc_daemon: Daemon) -> None:
    d = inproc_daemon
    d.state.set_microservice_configs({"ms-a": '{"who":"a"}'})
    token = d.app.token.current()
    assert post_json(api(d), "/v2/config/get", {"id": "ms-a"})[0] == 200       # default: upstream's
    assert control_socket(d, "ms-a") == 101
    assert post_json(api(d), "/v2/config", {"strict-microservice-identity": "on"}, token=token) == (200, {})
    status, body = post_json(api(d), "/v2/config/get", {"id": "ms-a"})
    assert (status, body["error"]) == (403, "Strict microservice identity is on: '127.0.0.1' is not a container "
                                            "of this agent, so it may not act as microservice 'ms-a'")
    assert control_socket(d, "ms-a") == 403
    assert post_json(api(d), "/v2/config/get", {"id": "ms-a"}, token=token)[0] == 200
    req = urllib.request.Request(api(d) + "/v2/info", headers={"Authorization": token})
    with urllib.request.urlopen(req, timeout=10) as resp:
        assert json.loads(resp.read())["strict-microservice-identity"] == "on"
    assert "<strict_microservice_identity>on</strict_microservice_identity>" in open(d.paths.config_xml).read()


def test_info_shows_strict_mode_in_the_cli(tmp_path: Any) -> None:
    d = RunningDaemon(str(tmp_path / "root")).start()
    try:
        out = d.cli("config", "-smi", "on")
        assert "Change accepted for Parameter : - smi" in out.stdout, out
        line = d.cli("info").stdout.rstrip("\n").splitlines()[-1]
        assert line == f"{'Strict Microservice Identity':<40} : on"
    finally:
        d.stop()


# -- real containers on the private engine --------------------------------------------------------


def free_subnet() -> str:
    """A /24 under 10.231/16 that no interface of this host uses (three octets)."""
    used = open("/proc/net/route").read() + os.popen("ip -4 addr 2>/dev/null").read()
    for third in [int.from_bytes(os.urandom(1), "big") for _ in range(20)]:
        prefix = f"10.231.{third}"
        if f"{prefix}." not in used:
            return prefix
    pytest.skip("no free 10.231.x.0/24 subnet on this host")


@pytest.fixture
def bridge(private_engine: Engine) -> Iterator[tuple[str, str]]:
    """A user-defined bridge network of the engine: (name, gateway). The engine runs with
    --iptables=false, so nothing is masqueraded: traffic stays between this host and its containers."""
    prefix = free_subnet()
    name = f"iofogd-id-{uuid.uuid4().hex[:8]}"
    gateway = f"{prefix}.1"
    private_engine.client.call("POST", "networks", "create", body={
        "Name": name, "Driver": "bridge", "CheckDuplicate": True,
        "IPAM": {"Config": [{"Subnet": f"{prefix}.0/24", "Gateway": gateway}]},
        "Options": {"com.docker.network.bridge.enable_ip_masquerade": "false"}})
    try:
        yield name, gateway
    finally:
        try:
            private_engine.client.call("DELETE", "networks", name)
        except DockerError:
            pass


def exec_in(engine: Engine, container: str, script: str, env: dict[str, str]) -> bytes:
    """Run ``sh -c script`` in the container; its stdout and stderr."""
    _, data = engine.client.call("POST", "containers", container, "exec", body={
        "Cmd": ["sh", "-c", script], "AttachStdout": True, "AttachStderr": True,
        "Env": [f"{k}={v}" for k, v in env.items()]})
    exec_id = json.loads(data)["Id"]
    _, stream = engine.client.call("POST", "exec", exec_id, "start", body={"Detach": False, "Tty": False},
                                   timeout=30)
    out = b""
    while len(stream) >= 8:   # the engine's multiplexed stream: 8-byte header, then the chunk
        size = struct.unpack(">I", stream[4:8])[0]
        out, stream = out + stream[8:8 + size], stream[8 + size:]
    return out


def http_from(engine: Engine, container: str, host: str, port: int, raw: str) -> tuple[int, bytes]:
    """Send a raw HTTP request with busybox nc from inside the container: (status, body)."""
    out = exec_in(engine, container, 'printf "%s" "$REQ" | nc -w 3 "$HOST" "$PORT"',
                  {"REQ": raw, "HOST": host, "PORT": str(port)})
    head, _, body = out.partition(b"\r\n\r\n")
    first = head.split(b"\r\n", 1)[0].split()
    if len(first) < 2 or not first[1].isdigit():
        raise AssertionError(f"no HTTP answer from inside {container}: {out!r}")
    return int(first[1]), body


def config_get(engine: Engine, container: str, host: str, port: int, mid: str) -> tuple[int, Any]:
    body = json.dumps({"id": mid})
    status, data = http_from(engine, container, host, port,
                             f"POST /v2/config/get HTTP/1.1\r\nHost: iofog\r\nContent-Type: application/json\r\n"
                             f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n{body}")
    return status, json.loads(data)


def socket_status(engine: Engine, container: str, host: str, port: int, mid: str) -> int:
    return http_from(engine, container, host, port,
                     f"GET /v2/control/socket/id/{mid} HTTP/1.1\r\nHost: iofog\r\nUpgrade: websocket\r\n"
                     "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                     "Sec-WebSocket-Version: 13\r\n\r\n")[0]


def run_as_microservice(engine: Engine, network: str, fog: str, mid: str, image: str) -> str:
    """The container the agent would make for ``mid``, but on ``network``: this engine has no
    default bridge (--bridge=none), and a container made without a network cannot join one later
    (docker network connect succeeds, yet no interface appears), so the test makes it and the
    agent adopts it (same name, node label, image, ports and network mode: nothing to recreate)."""
    config = proto.container_config(microservice(mid, image, cmd=SLEEPER), node_uuid=fog,
                                    agent_address="", time_zone="UTC")
    config["HostConfig"]["NetworkMode"] = network
    cid = engine.client.create_container(proto.container_name(mid), config)
    engine.client.start_container(cid)
    return cid


def test_real_containers_act_only_as_themselves(private_engine: Engine, bridge: tuple[str, str],
                                                tmp_path: Any) -> None:
    engine, (network, gateway) = private_engine, bridge
    image = engine.remote(engine.registry)
    engine.client.pull(image)   # as the agent would have before creating the container
    # The daemon listens on the bridge's gateway: the containers' way to this host.
    agent = RunningDaemon(str(tmp_path / "root"), host=gateway).start()
    fog = ""
    try:
        with ControllerStandIn() as standin:
            assert agent.request("POST", "/v2/config", {
                "docker-url": engine.url, "status-frequency": "1", "changes-frequency": "1",
                "controller-url": standin.url})[:3:2] == (200, {})
            fog = standin.create_fog("identity", router_mode="none")
            # Containers first, then the list that names them, then the agent: it adopts them
            # (a container of its node that its list does not name, it would remove).
            a, b = uuid.uuid4().hex, uuid.uuid4().hex
            containers = {mid: run_as_microservice(engine, network, fog, mid, image) for mid in (a, b)}
            for mid, who in ((a, "a"), (b, "b")):
                standin.add_microservice(fog, who, uuid=mid, images={1: image, 2: image}, cmd=SLEEPER,
                                         rebuild=False, config=json.dumps({"who": who}))
            status, _, body = agent.request("POST", "/v2/provision",
                                            {"provisioning-key": standin.provisioning_key(fog)})
            assert (status, body) == (200, {"status": "ok", "uuid": fog})
            port = agent.port

            def get(caller: str, mid: str) -> tuple[int, Any]:
                return config_get(engine, containers[caller], gateway, port, mid)

            # The agent adopts both and learns their addresses; until then A passes as any caller.
            assert wait_until(lambda: get(a, b)[0] == 403, timeout=PASS), agent.log()
            assert wait_until(lambda: get(a, a)[0] == 200, timeout=PASS), (get(a, a), agent.log())
            assert get(a, a) == (200, {"status": "okay", "config": json.dumps({"who": "a"})})
            assert get(a, b) == (403, {"status": "failed", "error":
                                       f"This caller is microservice {a}: it may use only its own id, not '{b}'"})
            assert wait_until(lambda: get(b, b)[0] == 200, timeout=PASS)
            assert get(b, a)[0] == 403
            assert socket_status(engine, containers[a], gateway, port, a) == 101
            assert socket_status(engine, containers[a], gateway, port, b) == 403
            for c in containers.values():   # adopted, not recreated
                assert engine.client.inspect_container(c)["State"]["Running"]  # type: ignore[index]

            # This host is no container: upstream's behaviour by default ...
            status, _, body = agent.request("POST", "/v2/config/get", {"id": a}, token=None)
            assert status == 200 and body["config"] == json.dumps({"who": "a"})
            # ... refused in strict mode (set through /v2/config: the CLI talks to 127.0.0.1).
            assert agent.request("POST", "/v2/config", {"strict-microservice-identity": "on"})[::2] == (200, {})
            status, _, body = agent.request("POST", "/v2/config/get", {"id": a}, token=None)
            assert (status, body["error"]) == (403, f"Strict microservice identity is on: '{gateway}' is not a "
                                                    f"container of this agent, so it may not act as microservice '{a}'")
            assert agent.request("POST", "/v2/config/get", {"id": a})[0] == 200   # with the admin token
            assert agent.request("GET", "/v2/info")[2]["strict-microservice-identity"] == "on"
            assert get(a, a)[0] == 200 and get(a, b)[0] == 403
            assert "Traceback" not in agent.log()
    finally:
        agent.stop()
        if fog:
            for item in engine.client.list_containers(all=True, label=f"{proto.LABEL_NODE}={fog}"):
                engine.client.remove_container(item["Id"], force=True)


def test_addresses_of_a_real_container(private_engine: Engine, bridge: tuple[str, str]) -> None:
    """What the reconciler reads (a list item, an inspect) gives the address the container has."""
    engine, (network, gateway) = private_engine, bridge
    name = f"iofogd-id-{uuid.uuid4().hex[:12]}"
    cid = engine.client.create_container(name, {"Image": engine.image, "Cmd": SLEEPER,
                                                "HostConfig": {"NetworkMode": network}})
    try:
        engine.client.start_container(cid)
        inspect = engine.client.inspect_container(cid)
        assert inspect is not None
        [address] = addresses_of(inspect)
        assert address.startswith(gateway.rsplit(".", 1)[0] + ".") and address != gateway
        [item] = [c for c in engine.client.list_containers(all=True) if c["Id"] == cid]
        assert addresses_of(item) == [address]
        seen = exec_in(engine, cid, "ip -4 addr show eth0", {})
        assert f"inet {address}/24".encode() in seen, seen
    finally:
        engine.client.remove_container(cid, force=True)
