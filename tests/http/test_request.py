"""Request-head parsing, the JSON rules and the log helpers, directly (no sockets)."""
from __future__ import annotations

import logging

import pytest

from iofogd.errors import BadRequest, VersionNotSupported
from iofogd.http.peerlog import PeerLog, printable
from iofogd.http.request import (
    MAX_JSON_DEPTH,
    Headers,
    Request,
    Response,
    error_response,
    json_depth_exceeds,
    parse_header_lines,
    parse_request_line,
)

# -- the request line (RFC 9112 section 3) ---------------------------------------------------


@pytest.mark.parametrize("line,expected", [
    (b"GET /v2/status HTTP/1.1", ("GET", "/v2/status", "HTTP/1.1")),
    (b"POST /v2/config?x=1 HTTP/1.0", ("POST", "/v2/config?x=1", "HTTP/1.0")),
    (b"BREW /pot HTTP/1.1", ("BREW", "/pot", "HTTP/1.1")),   # a token: 501 is the handler's call
])
def test_request_line_parts(line: bytes, expected: tuple[str, str, str]) -> None:
    assert parse_request_line(line) == expected


@pytest.mark.parametrize("line,message", [
    (b"GET /v2/version", "HTTP/0.9"),                 # one-line HTTP/0.9: 400, not a hang
    (b"HELLO", "Malformed request line"),
    (b"", "Malformed request line"),
    (b"GET /v2/version HTTP/1.1 extra", "Malformed request line"),
    (b"GET  /v2/version HTTP/1.1", "Malformed request line"),       # two spaces
    (b"GET /v2/version HTTP/1.1000", "Malformed HTTP version"),
    (b"GET /v2/version HTTP/1.", "Malformed HTTP version"),
    (b"GET /v2/version HTTP/x.y", "Malformed HTTP version"),
    (b"GET /v2/version http/1.1", "Malformed HTTP version"),
    (b"GET /v2/version HTTP/01.1", "Malformed HTTP version"),
    (b"G(T /v2/version HTTP/1.1", "Malformed request method"),
    (b"GET /v2/\x1b[31m HTTP/1.1", "Malformed request target"),
    (b"GET /v2/\x00 HTTP/1.1", "Malformed request target"),
])
def test_malformed_request_lines_are_400(line: bytes, message: str) -> None:
    with pytest.raises(BadRequest) as info:
        parse_request_line(line)
    assert message in info.value.message


@pytest.mark.parametrize("version", [b"HTTP/2.0", b"HTTP/9.9", b"HTTP/0.9"])
def test_other_http_versions_are_505(version: bytes) -> None:
    with pytest.raises(VersionNotSupported) as info:
        parse_request_line(b"GET / " + version)
    assert info.value.status == 505


# -- header fields (RFC 9112 section 5) ---------------------------------------------------------


def test_headers_are_case_insensitive_and_keep_order_and_repeats() -> None:
    h = parse_header_lines([b"Host: x", b"X-A:  one \t", b"x-a: two", b"Empty:"])
    assert h.get("host") == "x" and h["HOST"] == "x"
    assert h.get("X-A") == "one" and h.get_all("x-a") == ["one", "two"]
    assert h.get("Empty") == "" and "empty" in h and "missing" not in h
    assert h.get("missing") is None and h.get_all("missing") is None
    assert h.items() == [("Host", "x"), ("X-A", "one"), ("x-a", "two"), ("Empty", "")]
    assert list(h) == ["Host", "X-A", "x-a", "Empty"] and len(h) == 4


def test_header_values_are_latin_1() -> None:
    assert parse_header_lines([b"X: caf\xe9"]).get("X") == "caf\xe9"


@pytest.mark.parametrize("line,message", [
    (b"no colon here", "Malformed header line"),
    (b": no name", "Malformed header line"),
    (b"Name : space before the colon", "Malformed header line"),   # RFC 9112 section 5.1
    (b"\x00\x01\x02: \xff\xfe", "Malformed header line"),
    (b" leading: continuation", "line folding"),
    (b"\tleading: continuation", "line folding"),
    (b"X: a\x00b", "Control character"),
    (b"X: a\rb", "Control character"),
    (b"X: \x1b[31mred", "Control character"),
])
def test_malformed_header_lines_are_400(line: bytes, message: str) -> None:
    with pytest.raises(BadRequest) as info:
        parse_header_lines([b"Host: x", line])
    assert message in info.value.message


# -- JSON bodies --------------------------------------------------------------------------------


def request(body: bytes, content_type: str = "application/json") -> Request:
    return Request("POST", "/v2/config", "", Headers([("Content-Type", content_type)]), body)


def test_json_object() -> None:
    assert request(b'{"a": [1, {"b": "c"}]}').json_object() == {"a": [1, {"b": "c"}]}
    assert request('{"a":"é"}'.encode("utf-16")).json_object() == {"a": "é"}   # as json.loads(bytes)
    assert request(b'\xef\xbb\xbf{"a":1}').json_object() == {"a": 1}


@pytest.mark.parametrize("body,message", [
    (b"", "empty"),
    (b"  ", "empty"),
    (b"[1]", "must be a JSON object"),
    (b"{", "Malformed JSON"),
    (b"\xff\xfe\xfd", "Malformed JSON"),
    (b"[" * 1000, f"nested deeper than {MAX_JSON_DEPTH} levels"),           # issue 12: was a RecursionError
    (b'{"a":' * 100_000 + b"1" + b"}" * 100_000, f"nested deeper than {MAX_JSON_DEPTH}"),
])
def test_bad_json_bodies_are_400_with_a_clear_message(body: bytes, message: str) -> None:
    with pytest.raises(BadRequest) as info:
        request(body).json_object()
    assert message in info.value.message


def test_depth_bound_counts_nesting_not_brackets_in_strings() -> None:
    limit = MAX_JSON_DEPTH
    assert not json_depth_exceeds("[" * limit + "]" * limit, limit)
    assert json_depth_exceeds("[" * (limit + 1) + "]" * (limit + 1), limit)
    assert not json_depth_exceeds('{"a":"' + "[{" * 1000 + '"}', limit)      # inside a string
    assert not json_depth_exceeds('["\\"' + "[" * 100 + '"]', limit)          # an escaped quote
    assert not json_depth_exceeds("[]" * 10_000, limit)                         # many, but shallow
    assert not json_depth_exceeds('"' + "[" * 100, limit)                      # unterminated: the parser's to say
    assert request(b'{"a":' + b"[" * (limit - 1) + b"]" * (limit - 1) + b"}").json_object()


def test_content_type_check() -> None:
    request(b"{}", "application/json; charset=utf-8").require_json_type()
    with pytest.raises(BadRequest) as info:
        request(b"{}", "text/plain").require_json_type()
    assert info.value.message == "Incorrect content type text/plain"


def test_response_shapes() -> None:
    assert Response.json({"a": 1}).body == b'{"a":1}'
    err = error_response(404, "Request not found: /x", (("X", "y"),))
    assert (err.status, err.body, err.headers) == (404, b'{"status":"failed","error":"Request not found: /x"}',
                                                   (("X", "y"),))


# -- log lines about clients ---------------------------------------------------------------------


def test_printable_escapes_every_control_character() -> None:
    assert printable("GET /v2/\x1b[31mred\r\nInjected: yes\x7f\x9b") == \
        "GET /v2/\\x1b[31mred\\x0d\\x0aInjected: yes\\x7f\\x9b"
    assert printable("/v2/caf\xe9 ok") == "/v2/caf\xe9 ok"


def test_peer_log_is_rate_limited_per_peer_and_kind(caplog: pytest.LogCaptureFixture) -> None:
    logger = logging.getLogger("test.peerlog")
    peers = PeerLog(logger, interval=60.0)
    with caplog.at_level(logging.WARNING, logger="test.peerlog"):
        logged = [peers.warning("10.0.0.1", "busy", "refusing %s: %s", "10.0.0.1", "x\x1b") for _ in range(100)]
        assert logged.count(True) == 1
        assert peers.warning("10.0.0.2", "busy", "refusing %s", "10.0.0.2")       # another peer
        assert peers.warning("10.0.0.1", "other", "something else")                # another kind
        peers.interval = 0.0
        assert peers.warning("10.0.0.1", "busy", "refusing %s", "10.0.0.1")
    lines = [r.getMessage() for r in caplog.records]
    assert lines[0] == "refusing 10.0.0.1: x\\x1b"
    assert "99 more like this from 10.0.0.1" in lines[-1]
    assert len(lines) == 4


def test_peer_log_forgets_peers_within_its_bound() -> None:
    peers = PeerLog(logging.getLogger("test.peerlog.bound"), max_peers=16)
    logging.getLogger("test.peerlog.bound").setLevel(logging.WARNING)
    for i in range(1000):
        peers.warning(f"10.0.{i // 256}.{i % 256}", "busy", "x")
    assert len(peers._last) <= 16
