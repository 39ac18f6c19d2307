"""Offline cache of what the Controller last sent (docs/controller-api.md#offline-cache).

Theory of operation: every time the agent fetches the microservice list, the
registries or the edge resources from the Controller, it writes them to a file
next to config.xml; at start, when the Controller cannot be reached, the daemon
reads them back so that microservices keep running and ``/v2/config/get``
keeps answering while offline.

The file format is upstream's, so that files written by the Java agent are
read and ours are readable by it::

    {"checksum": "<sha1 hex of base64(<data as JSON text>)>", "timestamp": <ms>, "data": [...]}

Upstream ignores a file whose checksum does not match; so do we, with a
warning. Writes are atomic (temporary file, fsync, rename, fsync of the
directory) so that a power cut leaves either the old file or the new one.
"""
from __future__ import annotations

import base64
import json
import logging
import os
import time

from iofogd.durable import atomic_write

TYPE_CHECKING = False   # typing is not imported at run time: see iofogd/record.py
if TYPE_CHECKING:
    from typing import Any, Callable

log = logging.getLogger(__name__)

MICROSERVICES = "microservices.json"
REGISTRIES = "registries.json"
EDGE_RESOURCES = "edge_resources.json"
NAMES = (MICROSERVICES, REGISTRIES, EDGE_RESOURCES)


def data_text(data: list[Any]) -> str:
    """The JSON text the checksum covers: compact, as Java's ``JsonArray.toString()``."""
    return json.dumps(data, separators=(",", ":"), ensure_ascii=False)


def checksum(data: list[Any]) -> str:
    """sha1 hex of base64 of the data's JSON text (docs/controller-api.md#offline-cache)."""
    # Imported here: hashlib loads OpenSSL's _hashlib (0.7 MiB of RSS), which an
    # idle node that never reads or writes its cache need not carry.
    import hashlib

    encoded = base64.b64encode(data_text(data).encode("utf-8"))
    return hashlib.sha1(encoded).hexdigest()


def encode(data: list[Any], timestamp_ms: int) -> bytes:
    """The whole cache file for ``data``."""
    doc = {"checksum": checksum(data), "timestamp": timestamp_ms, "data": data}
    return json.dumps(doc, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def decode(raw: bytes) -> list[Any]:
    """The data of a cache file; ``ValueError`` when it is unreadable or its checksum is wrong."""
    doc = json.loads(raw.decode("utf-8"))
    if not isinstance(doc, dict) or not isinstance(doc.get("data"), list):
        raise ValueError("not a cache document with a 'data' list")
    data: list[Any] = doc["data"]
    if doc.get("checksum") != checksum(data):
        raise ValueError("checksum mismatch")
    return data


class OfflineCache:
    """The three cache files in ``directory`` (upstream: /etc/iofog-agent/)."""

    def __init__(self, directory: str | os.PathLike[str], *, clock: Callable[[], float] = time.time) -> None:
        self.directory = os.fspath(directory)   # not pathlib: 0.2 MiB of RSS for two joins
        self._clock = clock

    def path(self, name: str) -> str:
        if name not in NAMES:
            raise ValueError(f"unknown cache file {name!r}")
        return os.path.join(self.directory, name)

    def save(self, name: str, data: list[Any]) -> None:
        """Write ``data`` atomically; an ``OSError`` is logged, never raised (the cache is best effort)."""
        target = self.path(name)
        raw = encode(data, int(self._clock() * 1000))
        try:
            # 0600 as before: the cache holds microservice configs and registry credentials.
            atomic_write(target, raw, mode=0o600)
        except OSError as exc:
            log.warning("offline cache %s not written: %s", target, exc)

    def load(self, name: str) -> list[Any] | None:
        """The cached data, or None when the file is absent, unreadable or corrupt (warning logged)."""
        target = self.path(name)
        try:
            with open(target, "rb") as f:
                raw = f.read()
        except FileNotFoundError:
            return None
        except OSError as exc:
            log.warning("offline cache %s not readable: %s", target, exc)
            return None
        try:
            return decode(raw)
        except (ValueError, UnicodeDecodeError) as exc:
            log.warning("offline cache %s ignored: %s", target, exc)
            return None
