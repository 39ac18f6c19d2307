"""iofogd.ws.handshake: the server side of RFC 6455 section 4.2."""
from __future__ import annotations

from email.message import Message
from typing import Dict

import pytest

from iofogd.errors import HandshakeError
from iofogd.ws.handshake import accept_key, validate_request
from tests.vectors import HANDSHAKE_ACCEPT, HANDSHAKE_KEY


def request(**overrides: str) -> Dict[str, str]:
    headers = {
        "Host": "iofog:54321",
        "Upgrade": "websocket",
        "Connection": "Upgrade",
        "Sec-WebSocket-Key": HANDSHAKE_KEY,
        "Sec-WebSocket-Version": "13",
        "Origin": "ws://iofog:54321",  # what ws4py (the Python SDK) sends
    }
    for name, value in overrides.items():
        name = name.replace("_", "-")
        if value:
            headers[name] = value
        else:
            del headers[name]
    return headers


def status(method: str = "GET", **overrides: str) -> int:
    with pytest.raises(HandshakeError) as info:
        validate_request(method, request(**overrides))
    return info.value.status


def test_accept_key_is_the_rfc_example() -> None:
    assert accept_key(HANDSHAKE_KEY) == HANDSHAKE_ACCEPT


def test_valid_request_gets_the_101_headers() -> None:
    assert validate_request("GET", request()) == (
        ("Upgrade", "websocket"),
        ("Connection", "Upgrade"),
        ("Sec-WebSocket-Accept", HANDSHAKE_ACCEPT),
    )


def test_header_tokens_are_case_insensitive_lists() -> None:
    # Firefox sends "keep-alive, Upgrade"; Node's ws offers permessage-deflate, which we decline.
    headers = request(Connection="keep-alive, Upgrade", Upgrade="WebSocket")
    headers["Sec-WebSocket-Extensions"] = "permessage-deflate; client_max_window_bits"
    response = validate_request("GET", headers)
    assert all(name != "Sec-WebSocket-Extensions" for name, _ in response)


def test_http_server_headers_object_with_repeated_connection() -> None:
    msg = Message()
    for name, value in request(Connection="keep-alive").items():
        msg[name] = value
    msg["Connection"] = "Upgrade"
    assert dict(validate_request("GET", msg))["Sec-WebSocket-Accept"] == HANDSHAKE_ACCEPT


def test_not_get_is_400() -> None:
    assert status("POST") == 400


@pytest.mark.parametrize("missing", ["Host", "Upgrade", "Connection", "Sec-WebSocket-Key", "Sec-WebSocket-Version"])
def test_missing_header_is_400(missing: str) -> None:
    assert status(**{missing.replace("-", "_"): ""}) == 400


@pytest.mark.parametrize("key", ["short", "dGhlIHNhbXBsZSBub25jZQ", "!!!!dGhlIHNhbXBsZSBub25jZQ==", "AAAAAAAAAAAAAAAAAAAAAAAA"])
def test_bad_key_is_400(key: str) -> None:
    assert status(Sec_WebSocket_Key=key) == 400


def test_wrong_upgrade_is_400() -> None:
    assert status(Upgrade="h2c") == 400


def test_other_version_is_426_naming_13() -> None:
    with pytest.raises(HandshakeError) as info:
        validate_request("GET", request(Sec_WebSocket_Version="8"))
    assert info.value.status == 426
    assert info.value.headers == (("Sec-WebSocket-Version", "13"),)
