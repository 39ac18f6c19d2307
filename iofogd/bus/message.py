"""The ioMessage: its 20 fields, its JSON form and its binary v4 form. Pure, no I/O.

JSON form (docs/iomessage.md#json): all 20 keys, always, in upstream's order; strings and
bytes never null (``""``); numbers as JSON integers; ``contextdata`` and
``contentdata`` as standard base64 with padding.

Binary v4 form (docs/iomessage.md#binary): a 33-byte header of big-endian field lengths, then
the fields' bytes in the same order.  We encode exactly as the Java agent
(fixed widths 4/4/1/8/8/4 for the numbers, a number equal to 0 omitted), and
fix two of its bugs on purpose (docs/compatibility.md#iomessage):

- lengths count UTF-8 bytes (Java counted UTF-16 units and wrote UTF-8, so a
  non-ASCII field corrupted the header), and are read unsigned (Java read the
  1-byte lengths signed, so a 128+ byte field misaligned the rest);
- decoding accepts every integer width 0-8 the SDKs write (Python, Go and C
  write minimal widths and a zero as one 0x00 byte, docs/iomessage.md#sdk-differences).
  A number in its native width is two's complement, as Java wrote it; a
  shorter one is unsigned, as the SDKs write it.

The agent assigns ``id`` (32 lowercase hex) and ``timestamp`` (ms) at publish
time (docs/iomessage.md#ids): :func:`stamped` takes both as arguments, the caller owns the
clock and the randomness.
"""
from __future__ import annotations

import base64
import binascii
import struct

from iofogd.errors import MessageError
from iofogd.record import Record

TYPE_CHECKING = False   # typing is not imported at run time: see iofogd/record.py
if TYPE_CHECKING:
    from typing import Any, Final, Optional

VERSION = 4
HEADER_SIZE = 33

# (attribute == JSON key, kind, width of its length in the header, native
# width of a number) in the order of the binary form (docs/iomessage.md#binary).
_STR, _INT, _BYTES = "s", "i", "b"
BINARY_LAYOUT: tuple[tuple[str, str, int, int], ...] = (
    ("id", _STR, 1, 0),
    ("tag", _STR, 2, 0),
    ("groupid", _STR, 1, 0),
    ("sequencenumber", _INT, 1, 4),
    ("sequencetotal", _INT, 1, 4),
    ("priority", _INT, 1, 1),
    ("timestamp", _INT, 1, 8),
    ("publisher", _STR, 1, 0),
    ("authid", _STR, 2, 0),
    ("authgroup", _STR, 2, 0),
    ("chainposition", _INT, 1, 8),
    ("hash", _STR, 2, 0),
    ("previoushash", _STR, 2, 0),
    ("nonce", _STR, 2, 0),
    ("difficultytarget", _INT, 1, 4),
    ("infotype", _STR, 1, 0),
    ("infoformat", _STR, 1, 0),
    ("contextdata", _BYTES, 4, 0),
    ("contentdata", _BYTES, 4, 0),
)

# The JSON form's keys, in upstream's order (docs/iomessage.md#fields, #json): version sits
# between authgroup and chainposition.
JSON_KEYS: tuple[str, ...] = (
    "id", "tag", "groupid", "sequencenumber", "sequencetotal", "priority", "timestamp", "publisher",
    "authid", "authgroup", "version", "chainposition", "hash", "previoushash", "nonce",
    "difficultytarget", "infotype", "infoformat", "contextdata", "contentdata",
)

_HEADER = struct.Struct(">HBHBBBBBBHHBHHHBBBII")
assert _HEADER.size == HEADER_SIZE
_LENGTH_MAX = {1: 0xFF, 2: 0xFFFF, 4: 0xFFFFFFFF}
_NUM_FORMAT = {1: ">b", 4: ">i", 8: ">q"}


def _wrap(value: int, width: int) -> int:
    """``value`` as a two's complement integer of ``width`` bytes (Java's casts)."""
    bits = 8 * width
    value &= (1 << bits) - 1
    return value - (1 << bits) if value >> (bits - 1) else value


class IoMessage(Record):
    """One ioMessage; strings are str, data fields bytes, numbers int."""

    __slots__ = (
        "id", "tag", "groupid", "sequencenumber", "sequencetotal", "priority", "timestamp", "publisher",
        "authid", "authgroup", "version", "chainposition", "hash", "previoushash", "nonce",
        "difficultytarget", "infotype", "infoformat", "contextdata", "contentdata",
    )
    id: Final[str]
    tag: Final[str]
    groupid: Final[str]
    sequencenumber: Final[int]
    sequencetotal: Final[int]
    priority: Final[int]
    timestamp: Final[int]
    publisher: Final[str]
    authid: Final[str]
    authgroup: Final[str]
    version: Final[int]
    chainposition: Final[int]
    hash: Final[str]
    previoushash: Final[str]
    nonce: Final[str]
    difficultytarget: Final[int]
    infotype: Final[str]
    infoformat: Final[str]
    contextdata: Final[bytes]
    contentdata: Final[bytes]

    def __init__(
        self, id: str = "", tag: str = "", groupid: str = "", sequencenumber: int = 0,
        sequencetotal: int = 0, priority: int = 0, timestamp: int = 0, publisher: str = "",
        authid: str = "", authgroup: str = "", version: int = VERSION, chainposition: int = 0,
        hash: str = "", previoushash: str = "", nonce: str = "", difficultytarget: int = 0,
        infotype: str = "", infoformat: str = "", contextdata: bytes = b"", contentdata: bytes = b"",
    ) -> None:
        self.id = id
        self.tag = tag
        self.groupid = groupid
        self.sequencenumber = sequencenumber
        self.sequencetotal = sequencetotal
        self.priority = priority
        self.timestamp = timestamp
        self.publisher = publisher
        self.authid = authid
        self.authgroup = authgroup
        self.version = version
        self.chainposition = chainposition
        self.hash = hash
        self.previoushash = previoushash
        self.nonce = nonce
        self.difficultytarget = difficultytarget
        self.infotype = infotype
        self.infoformat = infoformat
        self.contextdata = contextdata
        self.contentdata = contentdata


def stamped(message: IoMessage, message_id: str, timestamp_ms: int) -> IoMessage:
    """The message as published: the agent's id and timestamp replace the sender's (docs/iomessage.md#ids)."""
    return message.replace(id=message_id, timestamp=timestamp_ms, version=VERSION)


# -- JSON form -----------------------------------------------------------------------


def to_json(message: IoMessage) -> dict[str, Any]:
    """The JSON form as a dict in upstream's key order (json.dumps keeps it)."""
    out: dict[str, Any] = {}
    for key in JSON_KEYS:
        value = getattr(message, key)
        if isinstance(value, bytes):
            value = base64.b64encode(value).decode("ascii")
        out[key] = value
    return out


def from_json(obj: dict[str, Any]) -> IoMessage:
    """A message from its JSON form; every key optional, as upstream's JSON constructor.

    Wrong types and bad base64 raise :class:`MessageError`. ``version`` is read
    if present (upstream ignored it and reported 0, docs/local-api.md#messages-next); ``null`` data
    fields are taken as empty (Go's SDK sends them, docs/websocket.md#sdk-go).
    """
    values: dict[str, Any] = {}
    for name, kind, _, width in BINARY_LAYOUT:
        if name not in obj:
            continue
        value = obj[name]
        if kind == _STR:
            if value is None:
                value = ""
            if not isinstance(value, str):
                raise MessageError(f"field {name} must be a string")
        elif kind == _INT:
            if value is None:
                value = 0
            if isinstance(value, bool) or not isinstance(value, int):
                raise MessageError(f"field {name} must be an integer")
            # Java's getInt/getLong then a cast: priority was truncated to a byte.
            value = _wrap(value, width)
        else:
            if value is None:
                value = b""
            elif not isinstance(value, str):
                raise MessageError(f"field {name} must be a base64 string")
            else:
                try:
                    value = base64.b64decode(value.encode("ascii"), validate=True)
                except (binascii.Error, UnicodeEncodeError) as exc:
                    raise MessageError(f"field {name} is not valid base64: {exc}") from exc
        values[name] = value
    version = obj.get("version", VERSION)
    if isinstance(version, bool) or not isinstance(version, int):
        raise MessageError("field version must be an integer")
    values["version"] = _wrap(version, 2)
    return IoMessage(**values)


# -- binary v4 form -------------------------------------------------------------------


def encode_parts(message: IoMessage) -> tuple[bytes, bytes]:
    """``(header, data)``: the 33-byte header and the data section (the archive keeps them apart)."""
    lengths: list[int] = [VERSION]
    chunks: list[bytes] = []
    for name, kind, length_width, native in BINARY_LAYOUT:
        value = getattr(message, name)
        if kind == _INT:
            raw = b"" if value == 0 else struct.pack(_NUM_FORMAT[native], _wrap(value, native))
        else:
            raw = value.encode("utf-8") if kind == _STR else value
            if len(raw) > _LENGTH_MAX[length_width]:
                raise MessageError(
                    f"field {name} is {len(raw)} bytes; the binary form allows {_LENGTH_MAX[length_width]}"
                )
        lengths.append(len(raw))
        chunks.append(raw)
    return _HEADER.pack(*lengths), b"".join(chunks)


def encode(message: IoMessage) -> bytes:
    """The binary v4 form, exactly as the Java agent writes it."""
    header, data = encode_parts(message)
    return header + data


def data_length(header: bytes) -> int:
    """The size of the data section a 33-byte header announces."""
    if len(header) < HEADER_SIZE:
        raise MessageError(f"an ioMessage header is {HEADER_SIZE} bytes, got {len(header)}")
    return sum(_HEADER.unpack_from(header)[1:])


def message_length(data: bytes) -> Optional[int]:
    """The total length of the binary message at the start of ``data``, or None
    while fewer than the 33 header bytes are there (incremental readers)."""
    if len(data) < HEADER_SIZE:
        return None
    return HEADER_SIZE + data_length(data)


def decode_parts(header: bytes, data: bytes, offset: int = 0) -> IoMessage:
    """A message from its header and the data section starting at ``data[offset]``."""
    if len(header) < HEADER_SIZE:
        raise MessageError(f"an ioMessage header is {HEADER_SIZE} bytes, got {len(header)}")
    fields = _HEADER.unpack_from(header)
    if fields[0] != VERSION:
        raise MessageError(f"ioMessage version {fields[0]} is not supported (only 4)")
    if offset + sum(fields[1:]) > len(data):
        raise MessageError(
            f"ioMessage truncated: its header announces {sum(fields[1:])} data bytes, "
            f"{len(data) - offset} are there"
        )
    values: dict[str, Any] = {}
    pos = offset
    for (name, kind, _, native), size in zip(BINARY_LAYOUT, fields[1:]):
        raw = data[pos : pos + size]
        pos += size
        if kind == _STR:
            # Invalid UTF-8 becomes U+FFFD, as Java's default-charset decoding did.
            values[name] = raw.decode("utf-8", "replace")
        elif kind == _BYTES:
            values[name] = bytes(raw)
        elif size > 8:
            raise MessageError(f"field {name} is {size} bytes wide; numbers are at most 8")
        elif size:
            values[name] = _wrap(int.from_bytes(raw, "big", signed=size == native), native)
    return IoMessage(**values)


def decode(data: bytes) -> IoMessage:
    """A message from its binary v4 form; bytes after its end are ignored (the
    Agent tolerated them, docs/iomessage.md#sdk-differences)."""
    if len(data) < HEADER_SIZE:
        raise MessageError(f"ioMessage truncated: {len(data)} bytes, the header alone is {HEADER_SIZE}")
    return decode_parts(data[:HEADER_SIZE], data, HEADER_SIZE)
