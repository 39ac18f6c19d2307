"""The Local API's admin endpoints against a real daemon over real sockets."""
from __future__ import annotations

import json
import re
import socket
import time

import pytest

from iofogd import __version__
from tests.daemon_process import RunningDaemon, free_port

STATUS_KEYS = [
    "iofog-daemon", "memory-usage", "disk-usage", "cpu-usage", "running-microservices",
    "connection-to-controller", "messages-processed", "system-time", "system-available-disk",
    "system-available-memory", "system-total-cpu", "docker-engine", "router",
]
INFO_KEYS = [
    "iofog-uuid", "ip-address", "network-interface", "secure-mode", "iofog-controller",
    "iofog-certificate", "docker-url", "message-storage-limit", "message-storage-directory",
    "memory-ram-limit", "cpu-usage-limit", "log-disk-limit", "log-file-directory",
    "log-rolling-file-count", "log-level", "status-update-frequency", "get-changes-frequency",
    "scan-devices-frequency", "post-diagnostics-frequency", "isolated-docker-containers-mode",
    "gps-mode", "gps-coordinates", "fog-type", "docker-pruning-frequency",
    "available-disk-threshold", "ready-to-upgrade-scan-frequency", "developer-mode", "time-zone",
    "strict-microservice-identity",
]


def assert_failed(status: int, headers, body, code: int) -> None:  # type: ignore[no-untyped-def]
    assert status == code, body
    assert headers["content-type"] == "application/json"
    assert body["status"] == "failed"
    assert isinstance(body["error"], str) and body["error"]


# -- admin endpoints --------------------------------------------------------------------

def test_status_has_every_key_as_strings(daemon: RunningDaemon) -> None:
    status, headers, body = daemon.request("GET", "/v2/status")
    assert status == 200 and headers["content-type"] == "application/json"
    assert list(body) == STATUS_KEYS
    assert all(isinstance(v, str) for v in body.values())
    assert body["iofog-daemon"] == "RUNNING"
    assert body["connection-to-controller"] == "not provisioned"
    assert body["running-microservices"] == "0"
    assert body["router"].startswith("no router: local delivery only")   # unprovisioned (issue 14)
    assert re.fullmatch(r"about \d+\.\d\d MiB", body["memory-usage"])
    rss = float(body["memory-usage"].split()[1])
    assert 5 < rss < 500  # the daemon's own RSS in MiB, not the machine's
    assert re.fullmatch(r"\d\d/\d\d/\d{4} \d\d:\d\d [AP]M", body["system-time"])
    assert re.fullmatch(r"\d+\.\d\d MB \(\d+\.\d\d %\)", body["system-available-disk"])


def test_status_query_string_is_ignored(daemon: RunningDaemon) -> None:
    assert daemon.request("GET", "/v2/status?x=1")[0] == 200


def test_info_has_every_key(daemon: RunningDaemon) -> None:
    status, _, body = daemon.request("GET", "/v2/info")
    assert status == 200
    assert list(body) == INFO_KEYS
    assert body["iofog-uuid"] == "not provisioned"
    assert body["log-level"] == "INFO"
    assert body["fog-type"] in ("intel_amd", "arm")
    assert body["docker-url"] == "unix:///var/run/docker.sock"
    assert body["message-storage-directory"].startswith(daemon.root)


def test_version(daemon: RunningDaemon) -> None:
    status, _, body = daemon.request("GET", "/v2/version")
    assert (status, body) == (200, {"version": __version__})


@pytest.mark.parametrize("method,path", [
    ("GET", "/v2/status"), ("GET", "/v2/info"), ("GET", "/v2/version"),
    ("POST", "/v2/config"), ("POST", "/v2/commandline"), ("POST", "/v2/provision"),
    ("DELETE", "/v2/deprovision"), ("POST", "/v2/prune"),
])
@pytest.mark.parametrize("auth", [None, "", "wrong", "Bearer wrong"])
def test_admin_endpoints_refuse_bad_tokens(daemon: RunningDaemon, method: str, path: str,
                                           auth: str | None) -> None:
    headers = {} if auth is None else {"Authorization": auth}
    status, hdrs, body = daemon.request(method, path, {}, token=None, headers=headers)
    assert_failed(status, hdrs, body, 401)
    assert body["error"] == "Incorrect access token"


def test_token_is_case_sensitive_and_bearer_works(daemon: RunningDaemon) -> None:
    token = daemon.token
    swapped = token.swapcase()
    assert daemon.request("GET", "/v2/version", token=swapped)[0] == 401
    assert daemon.request("GET", "/v2/version", token=f"Bearer {token}")[0] == 200
    assert daemon.request("GET", "/v2/version", token=token)[0] == 200


def test_replaced_token_file_is_obeyed(daemon: RunningDaemon) -> None:
    old = daemon.token
    path = f"{daemon.root}/etc/iofog-agent/local-api"
    new = "A" * 32
    with open(path, "w") as f:
        f.write(new)
    # Obeyed within TokenFile.RECHECK_SECONDS (1 s; docs/local-api.md#checks).
    deadline = time.monotonic() + 5
    while daemon.request("GET", "/v2/version", token=old)[0] != 401:
        assert time.monotonic() < deadline, "the replaced token is still accepted after 5 s"
        time.sleep(0.05)
    assert daemon.request("GET", "/v2/version", token=new)[0] == 200


# -- /v2/config ---------------------------------------------------------------------------

def test_config_accepts_and_rejects_per_key(daemon: RunningDaemon) -> None:
    status, _, body = daemon.request("POST", "/v2/config", {"status-frequency": "15", "disk-limit": "0"})
    assert status == 200
    assert list(body) == ["disk-limit"]
    assert "Disk limit range must be 1 to 1048576 GB" in body["disk-limit"]
    info = daemon.request("GET", "/v2/info")[2]
    assert info["status-update-frequency"] == "15"
    with open(f"{daemon.root}/etc/iofog-agent/config.xml") as f:
        assert "<status_update_freq>15</status_update_freq>" in f.read()


def test_config_all_good_is_empty_object(daemon: RunningDaemon) -> None:
    assert daemon.request("POST", "/v2/config", {"logs-level": "fine"})[::2] == (200, {})


def test_config_no_known_key(daemon: RunningDaemon) -> None:
    status, hdrs, body = daemon.request("POST", "/v2/config", {"nope": "1"})
    assert_failed(status, hdrs, body, 400)


def test_config_number_values_are_400(daemon: RunningDaemon) -> None:
    status, hdrs, body = daemon.request("POST", "/v2/config", {"status-frequency": 15})
    assert_failed(status, hdrs, body, 400)


def test_config_requires_json_content_type(daemon: RunningDaemon) -> None:
    status, hdrs, body = daemon.request(
        "POST", "/v2/config", raw_body=b'{"status-frequency":"15"}', headers={"Content-Type": "text/plain"})
    assert_failed(status, hdrs, body, 400)
    assert body["error"] == "Incorrect content type text/plain"


@pytest.mark.parametrize("raw", [b"", b"{", b"[1,2]", b'"x"', b"\xff\xfe", b"null"])
def test_malformed_bodies_are_400(daemon: RunningDaemon, raw: bytes) -> None:
    for path in ("/v2/config", "/v2/commandline", "/v2/config/get", "/v2/gps"):
        status, hdrs, body = daemon.request(
            "POST", path, raw_body=raw, headers={"Content-Type": "application/json"})
        assert_failed(status, hdrs, body, 400)
    assert daemon.request("GET", "/v2/version")[0] == 200  # still serving


def read_until_closed(s: socket.socket) -> bytes:
    s.settimeout(10)
    chunks = []
    while True:
        chunk = s.recv(65536)
        if not chunk:
            return b"".join(chunks)
        chunks.append(chunk)


# -- limits -------------------------------------------------------------------------------

def test_oversized_body_is_413_and_not_read(daemon: RunningDaemon) -> None:
    with socket.create_connection(("127.0.0.1", daemon.port)) as s:
        s.sendall(b"POST /v2/config HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                  b"Authorization: " + daemon.token.encode() + b"\r\nContent-Length: 104857600\r\n\r\n")
        data = read_until_closed(s)  # the daemon closes: the body stays unread
        assert data.startswith(b"HTTP/1.1 413 ")
        assert b'"status":"failed"' in data
        assert b"Connection: close" in data


def test_chunked_body_refused(daemon: RunningDaemon) -> None:
    with socket.create_connection(("127.0.0.1", daemon.port)) as s:
        s.sendall(b"POST /v2/config HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n"
                  b"Content-Type: application/json\r\n\r\n5\r\nhello\r\n0\r\n\r\n")
        assert read_until_closed(s).startswith(b"HTTP/1.1 411 ")


def test_huge_headers_are_431(daemon: RunningDaemon) -> None:
    with socket.create_connection(("127.0.0.1", daemon.port)) as s:
        s.sendall(b"GET /v2/version HTTP/1.1\r\n" + b"X-Pad: " + b"a" * 8000 + b"\r\n" * 1
                  + b"X-Pad2: " + b"b" * 9000 + b"\r\n\r\n")
        assert read_until_closed(s).startswith(b"HTTP/1.1 431 ")


def test_keep_alive_serves_several_requests(daemon: RunningDaemon) -> None:
    conn = daemon.connection()
    try:
        for _ in range(5):
            conn.request("GET", "/v2/version", headers={"Authorization": daemon.token})
            resp = conn.getresponse()
            assert resp.status == 200
            assert json.loads(resp.read()) == {"version": __version__}
    finally:
        conn.close()


def test_silent_client_does_not_block_others(daemon: RunningDaemon) -> None:
    silent = [socket.create_connection(("127.0.0.1", daemon.port)) for _ in range(5)]
    try:
        assert daemon.request("GET", "/v2/version")[0] == 200
    finally:
        for s in silent:
            s.close()


# -- routing --------------------------------------------------------------------------------

def test_unknown_path_is_404_json(daemon: RunningDaemon) -> None:
    status, hdrs, body = daemon.request("GET", "/v2/logout")
    assert_failed(status, hdrs, body, 404)


def test_wrong_method_is_405_with_allow(daemon: RunningDaemon) -> None:
    status, hdrs, body = daemon.request("POST", "/v2/status", {})
    assert_failed(status, hdrs, body, 405)
    assert hdrs["allow"] == "GET"


def test_unknown_method_is_json(daemon: RunningDaemon) -> None:
    status, hdrs, body = daemon.request("BREW", "/v2/status")
    assert status == 501 and body["status"] == "failed"


def test_provisioning_without_a_controller_fails(daemon: RunningDaemon) -> None:
    # Nothing listens there (the stand-in tests are tests/controller/test_daemon_e2e.py).
    closed = f"http://127.0.0.1:{free_port()}/api/v3/"
    assert daemon.request("POST", "/v2/config", {"controller-url": closed})[0] == 200
    status, hdrs, out = daemon.request("POST", "/v2/provision", {"provisioning-key": "abc"})
    assert_failed(status, hdrs, out, 500)
    assert out["error"].startswith("Connection error: unable to connect to fog controller.")
    assert closed in out["error"]
    status, hdrs, out = daemon.request("DELETE", "/v2/deprovision")
    assert_failed(status, hdrs, out, 500)
    assert out["error"] == "Failure - not provisioned"


def test_prune_without_an_engine_says_503(daemon: RunningDaemon) -> None:
    missing = f"unix://{daemon.root}/no-docker.sock"
    assert daemon.request("POST", "/v2/config", {"docker-url": missing})[0] == 200
    status, hdrs, out = daemon.request("POST", "/v2/prune")
    assert_failed(status, hdrs, out, 503)


def test_provision_needs_a_key(daemon: RunningDaemon) -> None:
    status, hdrs, body = daemon.request("POST", "/v2/provision", {})
    assert_failed(status, hdrs, body, 400)
    assert body["error"] == "Missing required property 'provisioning-key'"


# -- /v2/gps ----------------------------------------------------------------------------------

def test_gps_get_and_post(daemon: RunningDaemon) -> None:
    status, _, body = daemon.request("GET", "/v2/gps", token=None)
    assert status == 200 and body["status"] == "okay"
    assert (body["lat"], body["lon"]) == ("0", "0")
    assert isinstance(body["timestamp"], int)
    status, _, body = daemon.request("POST", "/v2/gps", {"lat": "45.5", "lon": "-73.25"}, token=None)
    assert (status, body) == (200, {"status": "okay"})
    body = daemon.request("GET", "/v2/gps", token=None)[2]
    assert (body["lat"], body["lon"]) == ("45.5", "-73.25")
    assert daemon.request("GET", "/v2/info")[2]["gps-mode"] == "dynamic"


@pytest.mark.parametrize("payload", [{"lat": 45.5, "lon": "1"}, {"lat": "91", "lon": "0"},
                                     {"lat": "", "lon": ""}, {"lon": "1"}])
def test_gps_post_bad_values_are_400(daemon: RunningDaemon, payload: dict) -> None:  # type: ignore[type-arg]
    status, hdrs, body = daemon.request("POST", "/v2/gps", payload, token=None)
    assert_failed(status, hdrs, body, 400)


def test_gps_other_methods_405(daemon: RunningDaemon) -> None:
    status, hdrs, body = daemon.request("PUT", "/v2/gps", {}, token=None)
    assert_failed(status, hdrs, body, 405)


# -- microservice endpoints before any Controller ------------------------------------------

def test_config_get_unknown_id(daemon: RunningDaemon) -> None:
    status, hdrs, body = daemon.request("POST", "/v2/config/get", {"id": "nope"}, token=None)
    assert_failed(status, hdrs, body, 400)
    assert body["error"] == "No configuration found for the id nope"


def test_edge_resources_empty(daemon: RunningDaemon) -> None:
    status, _, body = daemon.request("GET", "/v2/edgeResources", token=None)
    assert (status, body) == (200, {"edgeResources": "[]"})


def test_messages_next_for_an_unknown_id_is_empty(daemon: RunningDaemon) -> None:
    # The message bus is tested in tests/bus; an id nothing waits for gets count 0 (docs/local-api.md#messages-next).
    status, hdrs, body = daemon.request("POST", "/v2/messages/next", {"id": "x"}, token=None)
    assert (status, body) == (200, {"status": "okay", "count": 0, "messages": []})
