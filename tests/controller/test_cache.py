"""The offline cache (docs/controller-api.md#offline-cache): upstream's format, checksum, atomic writes, corruption."""
from __future__ import annotations

import base64
import hashlib
import json
import logging
import os
from pathlib import Path

import pytest

from iofogd.controller.cache import EDGE_RESOURCES, MICROSERVICES, REGISTRIES, OfflineCache, checksum

SAMPLE = [{"uuid": "hpf2f8WNWYmLTp6n9T4ZxLpxWBHXZBfC", "config": "{\"mode\":\"edge\"}", "rebuild": False, "logSize": 1}]


def test_checksum_is_sha1_of_base64_of_the_compact_json() -> None:
    text = '[{"uuid":"hpf2f8WNWYmLTp6n9T4ZxLpxWBHXZBfC","config":"{\\"mode\\":\\"edge\\"}","rebuild":false,"logSize":1}]'
    assert checksum(SAMPLE) == hashlib.sha1(base64.b64encode(text.encode())).hexdigest()


def test_round_trip_in_upstreams_format(tmp_path: Path) -> None:
    cache = OfflineCache(tmp_path, clock=lambda: 1795637763.147)
    cache.save(MICROSERVICES, SAMPLE)
    doc = json.loads((tmp_path / "microservices.json").read_text())
    assert doc == {"checksum": checksum(SAMPLE), "timestamp": 1795637763147, "data": SAMPLE}
    assert cache.load(MICROSERVICES) == SAMPLE
    assert cache.load(REGISTRIES) is None
    cache.save(EDGE_RESOURCES, [])
    assert cache.load(EDGE_RESOURCES) == []
    assert sorted(os.listdir(tmp_path)) == ["edge_resources.json", "microservices.json"]  # no temporary left


def test_a_file_written_by_the_java_agent_is_read(tmp_path: Path) -> None:
    data = [{"id": 1, "url": "registry.hub.docker.com", "isPublic": True}]
    text = json.dumps(data, separators=(",", ":"))
    digest = hashlib.sha1(base64.b64encode(text.encode())).hexdigest()
    (tmp_path / "registries.json").write_text(f'{{"checksum":"{digest}","timestamp":0,"data":{text}}}')
    assert OfflineCache(tmp_path).load(REGISTRIES) == data


@pytest.mark.parametrize(
    "content",
    [
        b"",
        b"\xff\xfe not utf-8",
        b"{not json",
        b"[]",
        b'{"checksum":"0","timestamp":0,"data":{}}',
    ],
)
def test_corrupt_files_are_ignored_with_a_warning(tmp_path: Path, caplog: pytest.LogCaptureFixture, content: bytes) -> None:
    (tmp_path / "microservices.json").write_bytes(content)
    with caplog.at_level(logging.WARNING, logger="iofogd.controller.cache"):
        assert OfflineCache(tmp_path).load(MICROSERVICES) is None
    assert "ignored" in caplog.text


def test_tampered_data_fails_the_checksum(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    cache = OfflineCache(tmp_path)
    cache.save(MICROSERVICES, SAMPLE)
    path = tmp_path / "microservices.json"
    path.write_text(path.read_text().replace('"logSize":1', '"logSize":2'))
    with caplog.at_level(logging.WARNING, logger="iofogd.controller.cache"):
        assert cache.load(MICROSERVICES) is None
    assert "checksum mismatch" in caplog.text


def test_save_replaces_and_never_raises(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    cache = OfflineCache(tmp_path)
    cache.save(REGISTRIES, [{"id": 1}])
    cache.save(REGISTRIES, [{"id": 2}])
    assert cache.load(REGISTRIES) == [{"id": 2}]
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with caplog.at_level(logging.WARNING, logger="iofogd.controller.cache"):
        OfflineCache(blocker / "sub").save(REGISTRIES, [])  # a file where the directory should be
    assert "not written" in caplog.text


def test_unknown_names_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        OfflineCache(tmp_path).save("../etc/passwd", [])
