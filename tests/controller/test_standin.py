"""The stand-in's fidelity: every captured agent-side exchange replayed against it, in order.

The user-side steps of the captures (creating fogs, keys, applications ...)
are done through the stand-in's Python API at the same points of the
sequence, with the captured identifiers, so that the agent-side answers must
come out equal to the captured ones: same status, same JSON values (only the
clock-dependent values are masked), the same HTML pages byte for byte.
"""
from __future__ import annotations

import http.client
import json
from typing import Any, Callable, Iterator

import pytest

from tests.controller.captures import EXCHANGES, Exchange
from tests.controller.standin import API, ControllerStandIn, iso_ms, js_json, parse_iso, validate, STATUS_SCHEMA

FOG1 = "4JtjzB8ccWMMyLm7wg8VrbGPKXpnYQyr"
ROUTER = "hpf2f8WNWYmLTp6n9T4ZxLpxWBHXZBfC"
HELLO = "2BHvhmmY32YDpWYNWNZ23QQzbKV2KhDQ"
HELLO2 = "9b8PfVg7xF8F6BywcBtKqDqKkWnx8cJV"
FOG2 = "9XTfrvYwNrdXVHM63gckZMhxcDJ3tWQh"
FOG3 = "tHGqVH3QV8KqxXy8bQTnNmVfQXWDHdmV"
TOKENS = ["n4GgC3nGTZJt3VvW", "7RgYkrfLZ3gM4dC7", "HJBxvnJXZHF6fyc8", "6Q3zQJyyGkBdXQKQ", "Vv9YPHCHGCfKHd8P"]

# Values that depend on the clock of the capturing run.
VOLATILE = {"lastUpdated", "timestamp", "uptimeSec", "expirationTime", "createdAt", "updatedAt", "configLastUpdated"}


def mask(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: ("<volatile>" if k in VOLATILE else mask(v)) for k, v in value.items()}
    if isinstance(value, list):
        return [mask(v) for v in value]
    return value


class Raw:
    """One HTTP call exactly as captured (headers and body bytes as given)."""

    def __init__(self, standin: ControllerStandIn) -> None:
        self.standin = standin

    def __call__(
        self, method: str, path: str, auth: str | None = None, body: str | None = None
    ) -> tuple[int, dict[str, str], bytes]:
        conn = http.client.HTTPConnection("127.0.0.1", self.standin.port, timeout=10)
        headers = {"Content-Type": "application/json"}
        if auth is not None:
            headers["Authorization"] = auth
        try:
            conn.request(method, path, body=body.encode() if body is not None else None, headers=headers)
            resp = conn.getresponse()
            return resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read()
        finally:
            conn.close()


def provision(raw: Raw, key: str, fog_type: int = 1) -> None:
    status, _, _ = raw("POST", API + "agent/provision", None, json.dumps({"key": key, "type": fog_type}))
    assert status == 200


def _ignore(*_: object) -> None:
    return None


def user_hooks(st: ControllerStandIn, raw: Raw) -> dict[tuple[str, int], Callable[[], None]]:
    """The Python equivalent of each user-side captured step (run instead of the HTTP call)."""

    def app() -> None:
        st.add_microservice(
            FOG1, "hello", uuid=HELLO, config='{"greeting":"hi"}', env=[{"key": "FOO", "value": "bar"}],
            cmd=["nginx", "-g", "daemon off;"], port_mappings=[{"portInternal": 80, "portExternal": 18080, "isUdp": False}],
            volume_mappings=[{"hostDestination": "<host-dir>/hello", "containerDestination": "/data",
                              "accessMode": "rw", "type": "bind"}],
            extra_hosts=["db:10.0.0.5"],
        )

    def agent3() -> None:
        st.create_fog("agent-3", uuid=FOG3)
        provision(raw, st.provisioning_key(FOG3))
        st.delete_fog(FOG3)

    def expired_key() -> None:  # agent7.log X1: the key forced to expire in the Controller's database
        st.provisioning_key(FOG1, key="MXtnCjFN")
        st.expire_key(FOG1)

    def hello2_strace() -> None:
        st.add_microservice(FOG1, "hello2", uuid=HELLO2)
        st.enable_strace(HELLO2)

    return {
        ("7", 0): lambda: _ignore(st.create_fog("agent-1", fog_type=1, uuid=FOG1, router_uuid=ROUTER)),
        ("9", 0): lambda: _ignore(st.provisioning_key(FOG1, key="XVqqG4cW")),
        ("U2", 0): lambda: st.set_fog_config(FOG1, statusFrequency=5, changeFrequency=5, logLevel="FINE"),
        ("U3", 0): lambda: st.raise_flags(FOG1, "reboot"),
        ("U4", 0): lambda: st.raise_flags(FOG1, "prune"),
        ("P1", 0): app,
        ("U6", 0): lambda: st.request_upgrade(FOG1),
        ("U7", 0): lambda: st.remove_microservice(HELLO),
        ("D4", 0): lambda: _ignore(st.provisioning_key(FOG1, key="wYvKtr26")),
        ("X1", 0): expired_key,
        ("N1", 0): lambda: _ignore(st.create_fog("agent-2", fog_type=0, router_mode="none", host=None, uuid=FOG2)),
        ("N1", 1): lambda: _ignore(st.provisioning_key(FOG2, key="gzKLJ244")),
        ("N6", 0): agent3,
        ("G5", 0): lambda: st.request_image_snapshot(ROUTER),
        ("G1b", 0): hello2_strace,
    }


def is_agent_side(ex: Exchange) -> bool:
    return ex.path.startswith(API + "agent/") or ex.path == API + "status" or ex.step == "E5"


@pytest.fixture()
def standin() -> Iterator[ControllerStandIn]:
    with ControllerStandIn(tokens=iter(TOKENS), seed=1) as st:
        yield st


def test_every_captured_agent_exchange_replays(standin: ControllerStandIn) -> None:
    raw = Raw(standin)
    hooks = user_hooks(standin, raw)
    substitutions: dict[str, str] = {}  # captured lastUpdated -> the stand-in's
    replayed = 0
    for ex in EXCHANGES:
        if (ex.step, ex.seq) in hooks:
            hooks[(ex.step, ex.seq)]()
            continue
        if not is_agent_side(ex):
            continue  # signup, login, router, ...: outside the stand-in
        if ex.seq == 0 and ex.step == "X2":  # the token forced to expire in the Controller's database
            standin.expire_token(FOG1)
        if ex.seq == 0 and ex.step == "G2":  # agent10.log: "a later re-provisioning of agent-1 that is not shown"
            provision(raw, standin.provisioning_key(FOG1))
        body = ex.body
        for captured, ours in substitutions.items():
            body = body.replace(captured, ours) if body else body
        status, headers, payload = raw(ex.method, ex.path, ex.auth, body)
        where = f"{ex.file} {ex.step}[{ex.seq}] {ex.method} {ex.path}"
        assert status == ex.status, where
        if 200 <= status < 300:
            assert headers.get("x-timestamp", "").isdigit(), where
        if ex.kind == "empty":
            assert payload == b"", where
        elif ex.kind == "html":
            assert headers["content-type"].startswith("text/html"), where
            assert payload.decode() == ex.response, where
        else:
            assert headers["content-type"].startswith("application/json"), where
            ours_json = json.loads(payload)
            expected = json.loads(ex.response)
            if ex.step == "A19":
                ours_json["provisionKey"] = expected["provisionKey"]
                assert len(json.loads(payload)["provisionKey"]) == 8
            assert mask(ours_json) == mask(expected), where
            if isinstance(expected, dict) and "lastUpdated" in expected:
                parse_iso(ours_json["lastUpdated"])
                substitutions[expected["lastUpdated"]] = ours_json["lastUpdated"]
        replayed += 1
    assert replayed >= 60


def test_reset_is_refused_when_something_changed_after_the_echoed_time(standin: ControllerStandIn) -> None:
    raw = Raw(standin)
    fog = standin.create_fog()
    provision(raw, standin.provisioning_key(fog))
    token = standin.token(fog)
    _, _, first = raw("GET", API + "agent/config/changes", token)
    stale = json.loads(first)["lastUpdated"]
    standin.raise_flags(fog, "prune")
    status, _, answer = raw("PATCH", API + "agent/config/changes", token, json.dumps({"lastUpdated": stale}))
    assert (status, answer) == (200, b"{}")
    assert standin.changes(fog)["prune"] is True
    assert standin.changes(fog)["microserviceList"] is True


def test_token_lifetime_slides_with_each_call() -> None:
    now = [1_000_000.0]
    with ControllerStandIn(clock=lambda: now[0]) as st:
        raw = Raw(st)
        fog = st.create_fog()
        provision(raw, st.provisioning_key(fog))
        token = st.token(fog)
        for _ in range(3):  # 3 x 3000 s idle is more than one lifetime, but each call adds 3600 s
            now[0] += 3000
            assert raw("GET", API + "agent/config", token)[0] == 200
        now[0] += 4 * 3600 + 1
        status, _, body = raw("GET", API + "agent/config", token)
        assert (status, json.loads(body)["message"]) == (401, "token expired")


def test_provisioning_key_expires_after_twenty_minutes() -> None:
    now = [1_000_000.0]
    with ControllerStandIn(clock=lambda: now[0]) as st:
        raw = Raw(st)
        fog = st.create_fog()
        key = st.provisioning_key(fog)
        now[0] += 20 * 60 + 1
        status, _, body = raw("POST", API + "agent/provision", None, json.dumps({"key": key, "type": 1}))
        assert (status, json.loads(body)["message"]) == (401, "Expired provision key")


def test_fog_type_without_image_is_refused() -> None:
    with ControllerStandIn() as st:
        raw = Raw(st)
        fog = st.create_fog(router_mode="none", host=None)
        st.add_microservice(fog, "x86only", images={1: "nginx:alpine"})
        key = st.provisioning_key(fog)
        status, _, body = raw("POST", API + "agent/provision", None, json.dumps({"key": key, "type": 2}))
        assert status == 400
        assert json.loads(body) == {
            "name": "ValidationError",
            "message": "Some of microservices haven't proper docker images for this ioFog type. "
            'List of invalid microservices:\n "x86only" microservice\n',
        }
        assert raw("POST", API + "agent/provision", None, json.dumps({"key": key, "type": 1}))[0] == 200


def test_provision_without_json_content_type_is_a_missing_field() -> None:
    # body-parser only parses application/json: anything else leaves an empty body.
    with ControllerStandIn() as st:
        fog = st.create_fog()
        key = st.provisioning_key(fog)
        conn = http.client.HTTPConnection("127.0.0.1", st.port, timeout=10)
        conn.request("POST", API + "agent/provision", body=json.dumps({"key": key, "type": 1}),
                     headers={"Content-Type": "text/plain"})
        resp = conn.getresponse()
        assert (resp.status, json.loads(resp.read())["message"]) == (400, "Required field 'type' is missing")
        conn.close()


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"microserviceStatus": "[]", "systemAvailableDisk": 1.5}, "Field 'systemAvailableDisk' is not of a type(s) integer"),
        ({"microserviceStatus": "[]", "cpuViolation": "false"}, "Field 'cpuViolation' is not of a type(s) boolean"),
        ({"microserviceStatus": [], "daemonStatus": "RUNNING"}, "Field 'microserviceStatus' is not of a type(s) string"),
        ({"microserviceStatus": "[]", "repositoryCount": True}, "Field 'repositoryCount' is not of a type(s) integer"),
    ],
)
def test_status_types_are_checked(body: dict[str, Any], message: str) -> None:
    assert validate(body, STATUS_SCHEMA) == message


def test_minimum_errors_are_the_validators_json() -> None:
    message = validate({"lastStatusTime": -1}, STATUS_SCHEMA)
    assert message is not None
    assert json.loads(message) == {
        "property": "instance.lastStatusTime", "message": "must have a minimum value of 0",
        "schema": {"type": "integer", "minimum": 0}, "instance": -1, "name": "minimum", "argument": 0,
        "stack": "instance.lastStatusTime must have a minimum value of 0",
    }


def test_iso_and_js_json_helpers() -> None:
    assert iso_ms(1795637743.799) == "2026-11-25T20:15:43.799Z"
    assert parse_iso("2026-11-25T20:15:43.799Z") == pytest.approx(1795637743.799)
    assert js_json({"a": 500.0, "b": [1.5]}) == '{"a":500,"b":[1.5]}'
