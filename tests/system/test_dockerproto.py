"""Pure vectors for iofogd.system.dockerproto (no engine needed)."""
from __future__ import annotations

import base64
import json
from typing import Any

import pytest

from iofogd.errors import EngineUnsupported
from iofogd.system import dockerproto as proto
from tests.controller.captures import exchange

# GET agent/microservices as the Controller 3.0.4 sent it (agent4.log, A16): the
# router and a user microservice with ports, a bind volume, env, extra hosts, cmd.
A16 = json.loads(exchange("A16").response)["microservices"]
ROUTER, HELLO = A16

# GET /version of Debian's dockerd 20.10.24 on this machine kind (recipe, section 1)
VERSION_2010 = {"Version": "20.10.24+dfsg1", "ApiVersion": "1.41", "MinAPIVersion": "1.12"}


# -- transport ------------------------------------------------------------------


def test_docker_urls() -> None:
    assert proto.parse_docker_url("unix:///var/run/docker.sock") == proto.DockerUrl("unix", path="/var/run/docker.sock")
    assert proto.parse_docker_url("tcp://10.0.0.1:2376") == proto.DockerUrl("tcp", host="10.0.0.1", port=2376)
    assert proto.parse_docker_url("tcp://docker") == proto.DockerUrl("tcp", host="docker", port=2375)
    for bad in ("unix://", "ssh://host", "/var/run/docker.sock", "tcp://"):
        with pytest.raises(ValueError):
            proto.parse_docker_url(bad)


@pytest.mark.parametrize("body, expected", [
    (VERSION_2010, "1.41"),                                        # Debian 12's engine
    ({"ApiVersion": "1.52", "MinAPIVersion": "1.44"}, "1.47"),     # Docker 29: min raised to 1.44
    ({"ApiVersion": "1.43", "MinAPIVersion": "1.12"}, "1.43"),
    ({"ApiVersion": "1.41", "MinAPIVersion": "1.24"}, "1.41"),     # Podman 4.3
    ({"ApiVersion": "1.24"}, "1.24"),
])
def test_version_negotiation(body: dict[str, Any], expected: str) -> None:
    assert proto.negotiate_version(body) == expected


@pytest.mark.parametrize("body, words", [
    ({"ApiVersion": "1.23", "MinAPIVersion": "1.12"}, "needs at least 1.24"),
    ({"ApiVersion": "1.60", "MinAPIVersion": "1.50"}, "requires API 1.50"),
    ({"Version": "x"}, "no ApiVersion"),
    ({"ApiVersion": "one.two"}, "unreadable"),
])
def test_version_negotiation_refuses(body: dict[str, Any], words: str) -> None:
    with pytest.raises(EngineUnsupported) as info:
        proto.negotiate_version(body)
    assert words in info.value.message


def test_paths_quote_every_segment() -> None:
    assert proto.api_path("1.41", "images", "127.0.0.1:5000/x/y:1", "json") == \
        "/v1.41/images/127.0.0.1%3A5000%2Fx%2Fy%3A1/json"
    assert proto.api_path("1.41", "containers", "a?b/../c", "json") == "/v1.41/containers/a%3Fb%2F..%2Fc/json"
    assert proto.api_path("", "version") == "/version"
    path = proto.api_path("1.41", "containers", "json",
                          query={"all": True, "filters": proto.label_filter("iofog-uuid=n 1"), "x": None})
    assert path == "/v1.41/containers/json?all=1&filters=%7B%22label%22%3A%5B%22iofog-uuid%3Dn+1%22%5D%7D"
    assert proto.api_path("1.41", "images", "create", query={"changes": ["CMD x", "ENV y"]}) == \
        "/v1.41/images/create?changes=CMD+x&changes=ENV+y"


def test_error_messages_and_auth_header() -> None:
    body = b'{"message":"client version 1.45 is too new. Maximum supported API version is 1.41"}\n'
    assert proto.error_message(400, body) == "client version 1.45 is too new. Maximum supported API version is 1.41"
    assert proto.error_message(502, b"Bad Gateway") == "Bad Gateway"
    assert proto.error_message(500, b"") == "HTTP 500"
    header = proto.registry_auth_header("u", "p+/=", "e@x", "127.0.0.1:5001")
    assert json.loads(base64.urlsafe_b64decode(header)) == \
        {"username": "u", "password": "p+/=", "email": "e@x", "serveraddress": "127.0.0.1:5001"}


# -- images ---------------------------------------------------------------------


@pytest.mark.parametrize("ref, repository, tag, digest, text", [
    ("nginx", "nginx", "", "", "nginx:latest"),
    ("nginx:alpine", "nginx", "alpine", "", "nginx:alpine"),
    ("iofog/router:latest", "iofog/router", "latest", "", "iofog/router:latest"),
    # upstream split at the first ':' and pulled repo "127.0.0.1" with tag "5000/x/y:1" (7.2)
    ("127.0.0.1:5000/x/y:1", "127.0.0.1:5000/x/y", "1", "", "127.0.0.1:5000/x/y:1"),
    ("127.0.0.1:5000/x/y", "127.0.0.1:5000/x/y", "", "", "127.0.0.1:5000/x/y:latest"),
    ("busybox@sha256:" + "a" * 64, "busybox", "", "sha256:" + "a" * 64, "busybox@sha256:" + "a" * 64),
    ("h:1/r:t@sha256:" + "b" * 64, "h:1/r", "t", "sha256:" + "b" * 64, "h:1/r@sha256:" + "b" * 64),
])
def test_image_references(ref: str, repository: str, tag: str, digest: str, text: str) -> None:
    parsed = proto.parse_image_ref(ref)
    assert (parsed.repository, parsed.tag, parsed.digest, str(parsed)) == (repository, tag, digest, text)
    assert parsed.pull_tag == (digest or tag or "latest")


def test_bad_image_references() -> None:
    for bad in ("", "  ", ":tag", "@sha256:x"):
        with pytest.raises(ValueError):
            proto.parse_image_ref(bad)


def test_same_image() -> None:
    assert proto.same_image("nginx", "docker.io/library/nginx:latest")
    assert proto.same_image("iofog/router", "registry.hub.docker.com/iofog/router:latest")
    assert not proto.same_image("nginx:1", "nginx:2")
    assert not proto.same_image("a/nginx", "nginx")
    assert not proto.same_image("", "nginx")
    used = {"Id": "sha256:1", "RepoTags": ["127.0.0.1:5000/x:1"], "RepoDigests": []}
    assert proto.image_in_use(used, ["sha256:1"], [])
    assert proto.image_in_use(used, [], ["127.0.0.1:5000/x:1"])
    assert not proto.image_in_use(used, ["sha256:2"], ["127.0.0.1:5000/x:2"])
    assert not proto.image_in_use({"Id": "sha256:3", "RepoTags": None}, [], ["x"])


# -- streams ----------------------------------------------------------------------

# A real pull of a one-layer image from the local registry: dockerd 20.10.24 on this
# machine kind, POST /v1.41/images/create?fromImage=127.0.0.1:5000/iofogd-test/unique&tag=1
REAL_PULL = (
    b'{"status":"Pulling from iofogd-test/unique","id":"1"}\r\n'
    b'{"status":"Pulling fs layer","progressDetail":{},"id":"02f6147ccbde"}\r\n'
    b'{"status":"Downloading","progressDetail":{"current":3679,"total":15395},"progress":"[===========\\u003e'
    b'                                       ]  3.679kB/15.39kB","id":"02f6147ccbde"}\r\n'
    b'{"status":"Downloading","progressDetail":{"current":15395,"total":15395},"progress":"[====================='
    b'=============================\\u003e]  15.39kB/15.39kB","id":"02f6147ccbde"}\r\n'
    b'{"status":"Verifying Checksum","progressDetail":{},"id":"02f6147ccbde"}\r\n'
    b'{"status":"Download complete","progressDetail":{},"id":"02f6147ccbde"}\r\n'
    b'{"status":"Extracting","progressDetail":{"current":15395,"total":15395},"progress":"[===================='
    b'==============================\\u003e]  15.39kB/15.39kB","id":"02f6147ccbde"}\r\n'
    b'{"status":"Pull complete","progressDetail":{},"id":"02f6147ccbde"}\r\n'
    b'{"status":"Digest: sha256:c2b8ca32a327714677292823f2ad1d141e6492d5f85c8c085166634c662cc3c0"}\r\n'
    b'{"status":"Status: Downloaded newer image for 127.0.0.1:5000/iofogd-test/unique:1"}\r\n'
)


def _progression(stream: bytes) -> list[float]:
    tracker = proto.PullProgress()
    seen = []
    for line in stream.splitlines(keepends=True):
        obj = proto.parse_stream_line(line)
        assert obj is not None and proto.stream_error(obj) is None
        seen.append(tracker.feed(obj))
    return seen


def test_pull_progress_of_a_real_pull() -> None:
    assert _progression(REAL_PULL) == [0.0, 0.0, 23.9, 100.0] + [100.0] * 6


def test_pull_progress_is_averaged_over_layers() -> None:
    # constructed from the real lines: a second layer the engine already holds
    two = b'{"status":"Pulling fs layer","progressDetail":{},"id":"77aa"}\r\n'
    two += REAL_PULL.splitlines(keepends=True)[2]
    two += b'{"status":"Already exists","progressDetail":{},"id":"77aa"}\r\n'
    assert _progression(two) == [0.0, 11.95, 61.95]


def test_errors_inside_a_200_stream() -> None:
    # Podman answers a missing tag with 200 and one error object (recipe, section 2)
    line = b'{"errorDetail":{"message":"manifest unknown"},"error":"manifest unknown"}\r\n'
    obj = proto.parse_stream_line(line)
    assert obj is not None and proto.stream_error(obj) == "manifest unknown"
    assert proto.stream_error({"errorDetail": {"message": "only detail"}}) == "only detail"
    assert proto.stream_error({"status": "ok"}) is None
    assert proto.parse_stream_line(b"\r\n") is None
    assert proto.parse_stream_line(b"not json\n") == {"stream": "not json"}
    assert proto.parse_stream_line(b"[1]\n") == {"stream": "[1]"}


# -- container bodies ---------------------------------------------------------------


def test_create_body_follows_upstream_conventions() -> None:
    body = proto.container_config(HELLO, node_uuid="4JtjzB8c", agent_address="192.168.1.7", time_zone="Europe/Berlin")
    host = body["HostConfig"]
    assert proto.container_name(HELLO["uuid"]) == "iofog_2BHvhmmY32YDpWYNWNZ23QQzbKV2KhDQ"
    assert body["Image"] == "nginx:alpine"
    assert body["Labels"] == {"iofog-uuid": "4JtjzB8c"}
    assert body["Env"] == ["SELFNAME=2BHvhmmY32YDpWYNWNZ23QQzbKV2KhDQ", "TZ=Europe/Berlin", "FOO=bar"]
    assert body["Cmd"] == ["nginx", "-g", "daemon off;"]
    assert body["ExposedPorts"] == {"80/tcp": {}}
    assert host["PortBindings"] == {"80/tcp": [{"HostIp": "", "HostPort": "18080"}]}
    assert host["Binds"] == ["<host-dir>/hello:/data:rw"]
    assert host["ExtraHosts"] == ["db:10.0.0.5", "iofog:192.168.1.7"]
    assert host["NetworkMode"] == "default"
    # fixes: unprivileged, no CPU pinning (upstream: privileged, cpuset "0")
    assert host["Privileged"] is False and "CpusetCpus" not in host
    assert host["LogConfig"] == {"Type": "json-file", "Config": {"max-size": "2m", "max-file": "1"}}
    assert host["Init"] is True and host["RestartPolicy"] == {"Name": "no"}


def test_create_body_options() -> None:
    router = proto.container_config(ROUTER, node_uuid="n", agent_address="", time_zone="")
    assert "Cmd" not in router                                   # empty cmd: the image's own
    assert router["Env"] == ["SELFNAME=hpf2f8WNWYmLTp6n9T4ZxLpxWBHXZBfC"]
    assert router["HostConfig"]["ExtraHosts"] == []
    assert router["ExposedPorts"] == {"5672/tcp": {}}             # isUdp null means tcp
    root = dict(HELLO, rootHostAccess=True, logSize=10,
                env=[{"key": "TZ", "value": "UTC"}], extraHosts=["iofog:10.1.1.1"],
                portMappings=[{"portInternal": 53, "portExternal": 5353, "isUdp": True}],
                volumeMappings=[{"hostDestination": "vol1", "containerDestination": "/v",
                                 "accessMode": "ro", "type": "volume"}])
    body = proto.container_config(root, node_uuid="n", agent_address="192.168.1.7", time_zone="Europe/Berlin")
    host = body["HostConfig"]
    assert host["NetworkMode"] == "host" and host["Privileged"] is True
    assert body["Env"] == ["SELFNAME=2BHvhmmY32YDpWYNWNZ23QQzbKV2KhDQ", "TZ=UTC"]
    assert host["ExtraHosts"] == ["iofog:10.1.1.1"]
    assert host["Binds"] == ["vol1:/v:ro"]                        # read-only honoured
    assert host["PortBindings"] == {"53/udp": [{"HostIp": "", "HostPort": "5353"}]}
    assert host["LogConfig"]["Config"]["max-file"] == "5"


def _inspected(ms: dict[str, Any]) -> dict[str, Any]:
    """What inspect reports for a container created from ``ms`` (the fields compared)."""
    body = proto.container_config(ms, node_uuid="n", agent_address="a", time_zone="")
    return {"Config": {"Image": body["Image"], "Labels": body["Labels"]}, "HostConfig": body["HostConfig"]}


def test_recreate_reasons() -> None:
    inspect = _inspected(HELLO)
    assert proto.needs_recreate(HELLO, inspect) is None
    # env, volumes, cmd alone do not recreate (7.3); ports, network and image do
    assert proto.needs_recreate(dict(HELLO, env=[], cmd=["x"], volumeMappings=[]), inspect) is None
    moved = dict(HELLO, portMappings=[{"portInternal": 80, "portExternal": 18081, "isUdp": False}])
    assert proto.needs_recreate(moved, inspect) == "port mappings changed"
    assert proto.needs_recreate(dict(HELLO, portMappings=None), inspect) == "port mappings changed"
    assert proto.needs_recreate(dict(HELLO, rootHostAccess=True), inspect) == "network mode changed"
    assert proto.needs_recreate(dict(HELLO, imageId="nginx:1.25"), inspect) == "image changed"
    assert proto.needs_recreate(dict(HELLO, imageId="docker.io/library/nginx:alpine"), inspect) is None


# -- status -------------------------------------------------------------------------


@pytest.mark.parametrize("docker_state, status", [
    ("running", "RUNNING"), ("created", "CREATED"), ("exited", "EXITING"), ("restarting", "RESTARTING"),
    ("removing", "DELETING"), ("paused", "STOPPED"), ("dead", "FAILED"), ("weird", "UNKNOWN"),
])
def test_state_names(docker_state: str, status: str) -> None:
    assert proto.container_state({"State": {"Status": docker_state}}) == status   # inspect
    assert proto.container_state({"State": docker_state}) == status               # list item


def test_times() -> None:
    assert proto.parse_docker_time("2026-11-25T21:57:28.123456789Z") == 1795643848123
    assert proto.parse_docker_time("2026-11-25T22:57:28.5+01:00") == 1795643848500
    assert proto.parse_docker_time("2026-11-25T21:57:28Z") == 1795643848000
    assert proto.parse_docker_time("0001-01-01T00:00:00Z") is None      # never started
    assert proto.parse_docker_time("") is None


def test_cpu_and_memory() -> None:
    s1 = {"cpu_stats": {"cpu_usage": {"total_usage": 1_000_000}, "system_cpu_usage": 10_000_000, "online_cpus": 2}}
    s2 = {"cpu_stats": {"cpu_usage": {"total_usage": 1_500_000}, "system_cpu_usage": 20_000_000, "online_cpus": 2}}
    assert proto.cpu_percent(None, proto.cpu_sample(s2)) == 0.0
    assert proto.cpu_percent(proto.cpu_sample(s1), proto.cpu_sample(s2)) == pytest.approx(10.0)
    assert proto.cpu_percent(proto.cpu_sample(s2), proto.cpu_sample(s1)) == 0.0
    assert proto.cpu_sample({}) == (0, 0, 1)
    v1 = {"memory_stats": {"usage": 1_000_000, "stats": {"total_inactive_file": 200_000, "cache": 300_000}}}
    v2 = {"memory_stats": {"usage": 1_000_000, "stats": {"inactive_file": 100_000}}}
    assert proto.memory_bytes(v1) == 800_000
    assert proto.memory_bytes(v2) == 900_000
    assert proto.memory_bytes({}) == 0
    assert [proto.format_cpu(v) for v in (0.0, 0.5, 1.234, 99.999, 1234.5)] == ["0", "0.5", "1.23", "100", "1234.5"]


def test_status_items_have_the_controllers_types() -> None:
    bare = proto.status_item("u1", "PULLING", 37.5)
    assert bare == {"id": "u1", "status": "PULLING", "percentage": 37.5}
    full = proto.status_item("u1", "RUNNING", 100, container_id="abc", start_time_ms=1_000,
                             now_ms=61_000, cpu=0.456, memory=712704, error="x")
    assert full == {"id": "u1", "status": "RUNNING", "percentage": 100.0, "containerId": "abc",
                    "startTime": 1000, "operatingDuration": 60000, "cpuUsage": "0.46",
                    "memoryUsage": "712704", "errorMessage": "x"}
    # docs/controller-api.md#status: cpuUsage and memoryUsage are strings; times are integers
    assert [type(full[k]) for k in ("startTime", "operatingDuration", "cpuUsage", "memoryUsage", "percentage")] \
        == [int, int, str, str, float]
    assert proto.status_item("u", "CREATED", 0, container_id="c")["operatingDuration"] == 0
