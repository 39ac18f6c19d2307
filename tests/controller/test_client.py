"""ControllerClient against the stand-in: headers, answers, every error class, timeouts, TLS."""
from __future__ import annotations

import ssl
import uuid
from pathlib import Path
from typing import Iterator

import pytest

from iofogd.controller.client import ControllerClient, explain, normalize_url
from iofogd.errors import CertificateError, ControllerError, ControllerUnreachable
from tests.controller.standin import TLS_DIR, ControllerStandIn, tls_server



def client(url: str, token: str | None = None, **kw: object) -> ControllerClient:
    options: dict[str, object] = {"cert_path": None, "secure_mode": False, "connect_timeout": 5.0, "read_timeout": 5.0}
    options.update(kw)
    return ControllerClient(url, token=token, **options)  # type: ignore[arg-type]


@pytest.fixture()
def standin() -> Iterator[ControllerStandIn]:
    with ControllerStandIn() as st:
        yield st


def provisioned(st: ControllerStandIn) -> tuple[str, str]:
    fog = st.create_fog()
    answer = client(st.url).provision(st.provisioning_key(fog), 1)
    return answer["uuid"], answer["token"]


def test_provision_sends_key_and_type_without_authorization(standin: ControllerStandIn) -> None:
    fog = standin.create_fog()
    key = standin.provisioning_key(fog)
    answer = client(standin.url).provision(key, 1)
    assert answer == {"uuid": fog, "token": standin.token(fog)}
    (call,) = standin.recorded("POST", "agent/provision")
    assert call.body == {"key": key, "type": 1}
    assert "authorization" not in call.headers
    assert call.headers["content-type"] == "application/json"
    assert uuid.UUID(call.headers["request-id"]).version == 4


def test_agent_calls_send_the_raw_token_and_a_fresh_request_id(standin: ControllerStandIn) -> None:
    fog, token = provisioned(standin)
    c = client(standin.url, token)
    assert c.get_config()["statusFrequency"] == 10
    c.patch_config({"latitude": 52.5, "longitude": 13.4, "gpsMode": "auto"})
    assert c.get_changes()["microserviceList"] is True
    assert [m["imageId"] for m in c.get_microservices()] == ["iofog/router:latest"]
    assert [r["url"] for r in c.get_registries()] == ["registry.hub.docker.com", "from_cache"]
    assert c.get_edge_resources() == []
    calls = standin.recorded()[1:]
    assert {r.headers["authorization"] for r in calls} == {token}
    assert len({r.headers["request-id"] for r in calls}) == len(calls)
    assert standin.fog_view(fog)["latitude"] == 52.5


def test_writes_without_payload_send_an_empty_object(standin: ControllerStandIn) -> None:
    _, token = provisioned(standin)
    with pytest.raises(ControllerError) as info:
        client(standin.url, token).request("POST", "agent/deprovision")
    assert (info.value.status, info.value.message) == (400, "Required field 'microserviceUuids' is missing")
    assert standin.recorded("POST", "agent/deprovision")[0].raw == b"{}"


def test_base_url_without_trailing_slash(standin: ControllerStandIn) -> None:
    assert normalize_url("http://h:1/api/v3") == "http://h:1/api/v3/"
    assert client(standin.url.rstrip("/")).ping()["status"] == "online"


def test_invalid_key_is_404_with_a_clear_explanation(standin: ControllerStandIn) -> None:
    with pytest.raises(ControllerError) as info:
        client(standin.url).provision("XXXXXXXX", 1)
    assert (info.value.status, info.value.message) == (404, "Invalid Provisioning Key")
    assert "unknown, already used, or replaced" in explain(info.value)


def test_used_key_is_404(standin: ControllerStandIn) -> None:
    fog = standin.create_fog()
    key = standin.provisioning_key(fog)
    client(standin.url).provision(key, 1)
    with pytest.raises(ControllerError) as info:
        client(standin.url).provision(key, 1)
    assert info.value.status == 404


def test_expired_key_is_401(standin: ControllerStandIn) -> None:
    fog = standin.create_fog()
    key = standin.provisioning_key(fog)
    standin.expire_key(fog)
    with pytest.raises(ControllerError) as info:
        client(standin.url).provision(key, 1)
    assert (info.value.status, info.value.message) == (401, "Expired provision key")
    assert "older than 20 minutes" in explain(info.value)


def test_fog_type_mismatch_is_400(standin: ControllerStandIn) -> None:
    fog = standin.create_fog(router_mode="none", host=None)
    standin.add_microservice(fog, "x86only", images={1: "nginx:alpine"})
    with pytest.raises(ControllerError) as info:
        client(standin.url).provision(standin.provisioning_key(fog), 2)
    assert info.value.status == 400
    assert "no image for this fog type" in explain(info.value)


def test_unknown_and_expired_tokens_are_401(standin: ControllerStandIn) -> None:
    fog, token = provisioned(standin)
    with pytest.raises(ControllerError) as info:
        client(standin.url, "badtoken123").get_config()
    assert (info.value.status, info.value.message) == (401, "authorization failed")
    assert "provision again" in explain(info.value)
    standin.expire_token(fog)
    with pytest.raises(ControllerError) as info:
        client(standin.url, token).get_config()
    assert (info.value.status, info.value.message) == (401, "token expired")


def test_bearer_prefix_is_refused(standin: ControllerStandIn) -> None:
    _, token = provisioned(standin)
    with pytest.raises(ControllerError) as info:
        client(standin.url, f"Bearer {token}").get_config()
    assert (info.value.status, info.value.message) == (401, "authorization failed")


def test_html_error_pages_become_readable_messages(standin: ControllerStandIn) -> None:
    _, token = provisioned(standin)
    with pytest.raises(ControllerError) as info:
        client(standin.url, token).request("GET", "agent/nope")
    assert (info.value.status, info.value.message) == (404, "HTTP 404: Cannot GET /api/v3/agent/nope")


def test_server_errors_keep_the_controllers_message(standin: ControllerStandIn) -> None:
    _, token = provisioned(standin)
    c = client(standin.url, token)
    with pytest.raises(ControllerError) as info:
        c.request("PUT", "agent/status", {"daemonStatus": "RUNNING"})
    assert (info.value.status, info.value.message) == (500, '"undefined" is not valid JSON')
    standin.fail(503, route="agent/config")
    with pytest.raises(ControllerError) as info:
        c.get_config()
    assert info.value.status == 503 and not isinstance(info.value, ControllerUnreachable)


def test_vanished_controller_is_unreachable(standin: ControllerStandIn) -> None:
    standin.vanish()
    with pytest.raises(ControllerUnreachable) as info:
        client(standin.url).ping()
    assert "Connection error: unable to connect to fog controller." in explain(info.value)
    standin.reappear()
    assert client(standin.url).ping()["status"] == "online"


def test_hung_controller_hits_the_read_timeout(standin: ControllerStandIn) -> None:
    standin.hang()
    with pytest.raises(ControllerUnreachable) as info:
        client(standin.url, read_timeout=0.3).ping()
    assert "did not answer" in info.value.message
    standin.hang(False)
    assert client(standin.url).ping()["status"] == "online"


def test_secure_mode_refuses_plain_http(standin: ControllerStandIn) -> None:
    with pytest.raises(ControllerUnreachable) as info:
        client(standin.url, secure_mode=True).ping()
    assert "non-secure" in info.value.message
    assert standin.recorded() == []


def test_https_trusts_the_configured_certificate(tmp_path: Path) -> None:
    pem = (TLS_DIR / "cert.pem").read_text()
    der = tmp_path / "cert.der"
    der.write_bytes(ssl.PEM_cert_to_DER_cert(pem))
    with ControllerStandIn(tls=tls_server()) as st:
        assert st.url.startswith("https://")
        for cert in (str(TLS_DIR / "cert.pem"), str(der)):
            assert client(st.url, cert_path=cert, secure_mode=True).ping()["status"] == "online"


def test_https_with_an_untrusted_certificate_is_a_certificate_error(tmp_path: Path) -> None:
    with ControllerStandIn(tls=tls_server()) as st:
        with pytest.raises(CertificateError) as info:
            client(st.url, cert_path=str(tmp_path / "missing.crt")).ping()
        assert explain(info.value).startswith("Certificate error:")


def test_a_certificate_file_that_is_no_certificate_is_a_certificate_error(tmp_path: Path) -> None:
    bad = tmp_path / "bad.crt"
    bad.write_text("-----BEGIN CERTIFICATE-----\nnot base64\n-----END CERTIFICATE-----\n")
    with ControllerStandIn(tls=tls_server()) as st:
        with pytest.raises(CertificateError):
            client(st.url, cert_path=str(bad)).ping()
