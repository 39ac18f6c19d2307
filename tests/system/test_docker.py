"""The Engine client against a real engine (and against no engine at all)."""
from __future__ import annotations

import os
import socket
import threading
import uuid
from typing import Iterator

import pytest

from iofogd.errors import DockerError, EngineUnavailable, EngineUnsupported
from iofogd.system import dockerproto as proto
from iofogd.system.docker import DockerClient
from tests.system.conftest import Engine


def test_missing_socket_is_engine_unavailable(tmp_path: os.PathLike[str]) -> None:
    client = DockerClient(f"unix://{tmp_path}/nothing.sock", timeout=2)
    for call in (client.ping, client.api_version, client.list_containers):
        with pytest.raises(EngineUnavailable) as info:
            call()
        assert "nothing.sock" in info.value.message and info.value.status == 0


def test_refused_tcp_is_engine_unavailable() -> None:
    with socket.socket() as probe:        # a port that was free a moment ago
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with pytest.raises(EngineUnavailable):
        DockerClient(f"tcp://127.0.0.1:{port}", timeout=2).ping()


@pytest.fixture
def fake_engine(tmp_path: os.PathLike[str]) -> Iterator[tuple[str, list[bytes]]]:
    """A unix socket that answers each connection with the next canned response, then closes."""
    path = f"{tmp_path}/fake.sock"
    answers: list[bytes] = []
    server = socket.socket(socket.AF_UNIX)
    server.bind(path)
    server.listen(4)

    def serve() -> None:
        while True:
            try:
                conn, _ = server.accept()
            except OSError:
                return
            with conn:
                conn.recv(65536)
                if answers:
                    conn.sendall(answers.pop(0))

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield f"unix://{path}", answers
    server.close()


def _http(status: str, body: bytes) -> bytes:
    return (f"HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {len(body)}\r\n"
            f"Connection: close\r\n\r\n").encode() + body


def test_too_old_engine_gets_one_clear_error(fake_engine: tuple[str, list[bytes]]) -> None:
    # the shape of GET /version from an engine older than API 1.24 (Docker 1.11)
    url, answers = fake_engine
    answers.append(_http("200 OK", b'{"Version":"1.11.2","ApiVersion":"1.23"}'))
    with pytest.raises(EngineUnsupported) as info:
        DockerClient(url, timeout=5).list_containers()
    assert info.value.message == "the Docker engine speaks API 1.23; iofogd needs at least 1.24"


def test_a_dropped_connection_is_engine_unavailable(fake_engine: tuple[str, list[bytes]]) -> None:
    url, answers = fake_engine
    answers.append(b"")       # accepts, reads the request, closes without a word
    with pytest.raises(EngineUnavailable):
        DockerClient(url, timeout=5).ping()


# -- a real engine ----------------------------------------------------------------


def test_version_is_negotiated(engine: Engine) -> None:
    body = engine.client.version()
    assert engine.client.api_version() == proto.negotiate_version(body)
    assert engine.client.ping() is True
    # a fresh client negotiates again, and every call goes out versioned
    client = DockerClient(engine.url, timeout=10)
    assert client.list_containers(all=True) is not None
    assert client.api_version() == engine.client.api_version()


def test_errors_carry_the_engines_status_and_message(engine: Engine) -> None:
    with pytest.raises(DockerError) as info:
        engine.client.start_container("iofogd-no-such-container")
    assert info.value.status == 404
    assert "No such container: iofogd-no-such-container" in info.value.message
    assert engine.client.inspect_container("iofogd-no-such-container") is None
    assert engine.client.inspect_image("iofogd-test/no-such-image:1") is None
    assert engine.client.remove_container("iofogd-no-such-container") is False
    # a version the engine refuses: its own message, verbatim
    status, data = engine.client._send("GET", "/v9.99/version", None, {"Host": "docker"}, 10, None)
    assert status == 400 and "9.99" in proto.error_message(status, data)


def test_slashes_and_colons_in_names_are_quoted(engine: Engine) -> None:
    image = engine.client.inspect_image(engine.image)
    assert image is not None and engine.image in image["RepoTags"]
    assert engine.client.inspect_image(str(image["Id"]))["Id"] == image["Id"]   # type: ignore[index]


def test_pull_reports_progress_and_reaches_100(engine: Engine) -> None:
    ref = f"{engine.registry}/iofogd-test/unique:{uuid.uuid4().hex[:8]}"
    engine.build_unique(ref)
    engine.push(ref)
    engine.client.remove_image(ref)
    assert engine.client.inspect_image(ref) is None
    seen: list[float] = []
    try:
        engine.client.pull(ref, progress=seen.append)
        assert engine.client.inspect_image(ref) is not None
        assert seen and seen[-1] == 100.0 and 0.0 in seen
        assert all(0.0 <= p <= 100.0 for p in seen)
    finally:
        engine.client.remove_image(ref)


def test_pull_errors(engine: Engine) -> None:
    with pytest.raises(DockerError) as info:          # Docker: 404 up front
        engine.client.pull(f"{engine.registry}/iofogd-test/busybox:no-such-tag")
    assert info.value.status == 404 and "manifest unknown" in info.value.message
    with pytest.raises(DockerError) as info:          # auth refused
        engine.client.pull(engine.remote(engine.auth_registry))
    assert "no basic auth credentials" in info.value.message
    # credentials as X-Registry-Auth make the same pull work
    auth = proto.registry_auth_header(engine.user, engine.password, "", engine.auth_registry)
    ref = engine.remote(engine.auth_registry)
    engine.client.pull(ref, auth)
    engine.client.remove_image(ref)


def test_an_error_inside_a_200_stream_is_raised(engine: Engine) -> None:
    # a push of a name that exists locally but to a registry that is not there: dockerd
    # answers 200 and reports the failure as the stream's last object
    ref = f"127.0.0.1:9/iofogd-test/busybox:{uuid.uuid4().hex[:8]}"
    parsed = proto.parse_image_ref(ref)
    engine.client.call("POST", "images", engine.image, "tag", query={"repo": parsed.repository, "tag": parsed.tag})
    try:
        status, _ = engine.client.call("POST", "images", parsed.repository, "push", query={"tag": parsed.tag},
                                       headers={"X-Registry-Auth": "e30="})
        assert status == 200                  # the raw call sees success...
        with pytest.raises(DockerError) as info:
            engine.push(ref)                  # ...the stream reader does not
        assert info.value.status == 200 and "connection refused" in info.value.message
    finally:
        engine.client.remove_image(ref)


def test_container_lifecycle(engine: Engine, node: str) -> None:
    client = engine.client
    name = f"iofog_lifecycle-{node}"
    cid = client.create_container(name, {
        "Image": engine.image, "Cmd": ["sleep", "100000"], "Labels": {proto.LABEL_NODE: node},
        "HostConfig": {"NetworkMode": "none", "Init": True},
    })
    client.start_container(cid)
    client.start_container(cid)                        # 304: already running is fine
    listed = client.list_containers(label=f"{proto.LABEL_NODE}={node}")
    assert [c["Id"] for c in listed] == [cid] and proto.container_state(listed[0]) == "RUNNING"
    assert client.list_containers(label=f"{proto.LABEL_NODE}=someone-else-{node}") == []
    stats = client.stats_once(cid)
    assert proto.memory_bytes(stats) > 0 and proto.cpu_sample(stats)[0] > 0
    client.stop_container(cid, timeout=1)
    client.stop_container(cid, timeout=1)              # 304: already stopped is fine
    inspect = client.inspect_container(name)
    assert inspect is not None and proto.container_state(inspect) == "EXITING"
    assert client.remove_container(cid, volumes=True) is True
    assert client.inspect_container(cid) is None


def test_tcp_urls_reach_the_same_engine(engine: Engine) -> None:
    """tcp:// through a loopback forwarder to the engine's unix socket (dockerd -H tcp://)."""
    if not engine.url.startswith("unix://"):
        pytest.skip("the forwarder needs the engine's unix socket")
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)

    def pump(src: socket.socket, dst: socket.socket) -> None:
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                dst.sendall(data)
        except OSError:
            pass
        finally:
            dst.close()

    def forward() -> None:
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            upstream = socket.socket(socket.AF_UNIX)
            upstream.connect(engine.url[len("unix://"):])
            threading.Thread(target=pump, args=(conn, upstream), daemon=True).start()
            threading.Thread(target=pump, args=(upstream, conn), daemon=True).start()

    threading.Thread(target=forward, daemon=True).start()
    try:
        client = DockerClient(f"tcp://127.0.0.1:{listener.getsockname()[1]}", timeout=10)
        assert client.ping() and client.api_version() == engine.client.api_version()
        assert client.inspect_image(engine.image) is not None
    finally:
        listener.close()
