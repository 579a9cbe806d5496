"""The img-crypt header: typed records, strict parser, canonical encoder (FORMAT.md sections 2-5).

Pure: bytes in, bytes out. Every length is checked against its bound before anything is
allocated from it, so a hostile header costs at most :data:`MAX_HEADER` bytes.
"""

from __future__ import annotations

import re
import struct
import uuid
from dataclasses import dataclass, field

from img_crypt._cobblestone import COBBLESTONE_256, Suite
from img_crypt.errors import FormatError, InvalidValueError

MAGIC = b"\x89ICR\r\n\x1a\n"
VERSION = 1
SUITE_ID = 1
SUITES: dict[int, Suite] = {SUITE_ID: COBBLESTONE_256}
PREFIX_SIZE = 12
"""magic, version, suite and header_length: what a reader checks before reading more."""
MAC_SIZE = 32
WRAP_NONCE_SIZE = 12
WRAPPED_DEK_SIZE = 48
MAX_HEADER = 8192
MIN_HEADER = PREFIX_SIZE + 2 + (4 + WRAP_NONCE_SIZE + WRAPPED_DEK_SIZE) + MAC_SIZE
MAX_SLOTS = 16
MAX_KIND = 32
MAX_KEY_ID = 255
_KIND_RE = re.compile(r"[a-z0-9_-]+")
_CONTROL_RE = re.compile(r"[\x00-\x1f\x7f-\x9f]")


@dataclass(frozen=True)
class KeySlot:
    """One wrapped copy of the DEK, under the KEK ``key_id`` of key manager ``kind``.

    Construction validates every field (:class:`InvalidValueError` with a one-line reason),
    so a slot object always encodes to a header this module would parse back.
    """

    kind: str
    key_id: str
    nonce: bytes = field(repr=False)
    wrapped_dek: bytes = field(repr=False)

    def __post_init__(self) -> None:
        if not 1 <= len(self.kind) <= MAX_KIND or not _KIND_RE.fullmatch(self.kind):
            raise InvalidValueError(f"kind must be 1 to {MAX_KIND} ASCII characters [a-z0-9_-]")
        if (not self.key_id or len(self.key_id.encode()) > MAX_KEY_ID
                or _CONTROL_RE.search(self.key_id)):
            raise InvalidValueError(f"key id must be 1 to {MAX_KEY_ID} UTF-8 bytes without "
                                    "controls")
        if len(self.nonce) != WRAP_NONCE_SIZE:
            raise InvalidValueError(f"wrap nonce must be {WRAP_NONCE_SIZE} bytes")
        if len(self.wrapped_dek) != WRAPPED_DEK_SIZE:
            raise InvalidValueError(f"wrapped DEK must be {WRAPPED_DEK_SIZE} bytes")

    def label(self) -> bytes:
        """The slot's own fields as they appear in the slot AAD (FORMAT.md section 3)."""
        kind, key_id = self.kind.encode(), self.key_id.encode()
        return bytes([len(kind)]) + kind + bytes([len(key_id)]) + key_id


@dataclass(frozen=True)
class Header:
    """A parsed (or to-be-written) header; ``mac`` is empty until sealed."""

    slots: tuple[KeySlot, ...]
    image_id: uuid.UUID | None = None
    version: int = VERSION
    suite: int = SUITE_ID
    mac: bytes = field(default=b"", repr=False)

    def __post_init__(self) -> None:
        if not 1 <= len(self.slots) <= MAX_SLOTS:
            raise InvalidValueError(f"a header has 1 to {MAX_SLOTS} key slots")
        if len({(s.kind, s.key_id) for s in self.slots}) != len(self.slots):
            raise InvalidValueError("two key slots name the same key")

    def binding(self) -> bytes:
        """The file binding ``B``: version, suite and image id (FORMAT.md section 1)."""
        image = self.image_id.bytes if self.image_id else b""
        return bytes([self.version, self.suite, len(image)]) + image

    def signed_part(self) -> bytes:
        """Every header byte before the MAC, in canonical encoding."""
        body = self.binding()[2:] + bytes([len(self.slots)])
        body += b"".join(s.label() + s.nonce + s.wrapped_dek for s in self.slots)
        length = PREFIX_SIZE + len(body) + MAC_SIZE
        if length > MAX_HEADER:
            raise FormatError(f"header would be {length} bytes, over the {MAX_HEADER} limit")
        return MAGIC + struct.pack(">BBH", self.version, self.suite, length) + body

    def encode(self) -> bytes:
        """The header bytes, MAC included."""
        if len(self.mac) != MAC_SIZE:
            raise ValueError("header is not sealed")
        return self.signed_part() + self.mac


def parse_prefix(prefix: bytes) -> int:
    """Check magic, version, suite and length; return ``header_length``."""
    if len(prefix) < PREFIX_SIZE or not prefix.startswith(MAGIC):
        raise FormatError("not an img-crypt file (bad magic)")
    version, suite, length = struct.unpack_from(">BBH", prefix, len(MAGIC))
    if version != VERSION:
        raise FormatError(f"unsupported format version {version} (this img-crypt reads 1)")
    if suite not in SUITES:
        raise FormatError(f"unsupported suite {suite}")
    if not MIN_HEADER <= length <= MAX_HEADER:
        raise FormatError(f"header length {length} is outside {MIN_HEADER}..{MAX_HEADER}")
    return int(length)


class _Cursor:
    """Bounds-checked reads from the header bytes; running past the body is a format error."""

    def __init__(self, data: bytes, end: int) -> None:
        self.data, self.pos, self.end = data, PREFIX_SIZE, end

    def take(self, size: int, what: str) -> bytes:
        if self.pos + size > self.end:
            raise FormatError(f"header is truncated inside the {what}")
        self.pos += size
        return self.data[self.pos - size:self.pos]

    def byte(self, what: str) -> int:
        return self.take(1, what)[0]


def parse(data: bytes) -> Header:
    """Parse a whole header (exactly ``header_length`` bytes) strictly."""
    length = parse_prefix(data)
    if len(data) != length:
        raise FormatError("header is truncated")
    cur = _Cursor(data, length - MAC_SIZE)
    version, suite = data[8], data[9]
    image_len = cur.byte("image id length")
    if image_len not in (0, 16):
        raise FormatError(f"image id length {image_len} is not 0 or 16")
    image = uuid.UUID(bytes=cur.take(16, "image id")) if image_len else None
    count = cur.byte("slot count")
    if not 1 <= count <= MAX_SLOTS:
        raise FormatError(f"slot count {count} is outside 1..{MAX_SLOTS}")
    slots = tuple(_parse_slot(cur, n) for n in range(count))
    if cur.pos != cur.end:
        raise FormatError("header has bytes after its last key slot")
    try:
        return Header(version=version, suite=suite, image_id=image, slots=slots,
                      mac=data[length - MAC_SIZE:])
    except InvalidValueError as e:
        raise FormatError(f"invalid header: {e}") from None


def _parse_slot(cur: _Cursor, n: int) -> KeySlot:
    what = f"key slot {n}"
    kind_raw = cur.take(cur.byte(what), what)
    key_id_raw = cur.take(cur.byte(what), what)
    nonce = cur.take(WRAP_NONCE_SIZE, what)
    wrapped = cur.take(WRAPPED_DEK_SIZE, what)
    try:
        kind, key_id = kind_raw.decode("ascii"), key_id_raw.decode("utf-8")
        return KeySlot(kind=kind, key_id=key_id, nonce=nonce, wrapped_dek=wrapped)
    except UnicodeDecodeError as e:
        raise FormatError(f"invalid {what}: {e.encoding} text expected") from None
    except InvalidValueError as e:
        raise FormatError(f"invalid {what}: {e}") from None

