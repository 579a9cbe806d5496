"""LUKS1 writer and reader in process (specs/LUKS1.md): layout, round trips, refusals, tamper.

The real tools (cryptsetup, qemu-img, oslo.utils) check the same files in test_luks_interop.py.
"""

from __future__ import annotations

import io
import os
import struct
import tracemalloc
from collections.abc import Callable
from typing import BinaryIO

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from img_crypt import luks
from img_crypt.errors import AuthenticationError, FormatError
from tests.support.sinks import ShortWriteSink

PASS = b"5f" * 32  # a 64-character lowercase hex passphrase, as Cinder derives it
MIB = 1 << 20
PAYLOAD = 2 * MIB
SLOT = 208  # first key slot in the phdr; each is 48 bytes


def seal(data: bytes, **kw: int) -> bytes:
    out = io.BytesIO()
    assert luks.encrypt(io.BytesIO(data), out, PASS, **kw) == len(data)
    return out.getvalue()


def open_(image: bytes, passphrase: bytes = PASS, **kw: int) -> bytes:
    out = io.BytesIO()
    written = luks.decrypt(io.BytesIO(image), out, passphrase, **kw)
    assert written == len(out.getvalue())
    return out.getvalue()


def patched(image: bytes, offset: int, fmt: str, *values: object) -> bytes:
    buf = bytearray(image)
    struct.pack_into(fmt, buf, offset, *values)
    return bytes(buf)


@pytest.fixture(scope="module")
def image() -> bytes:
    """One small image: 1000 bytes of plaintext (two sectors, the second padded)."""
    return seal(bytes(range(250)) * 4)


# --- what we write ------------------------------------------------------------------------------

def test_header_layout_is_cryptsetups_luks1_with_one_active_slot(image: bytes) -> None:
    magic, version, cipher, mode, hash_, payload, key_bytes = struct.unpack_from(
        ">6sH32s32s32sII", image)
    assert (magic, version) == (b"LUKS\xba\xbe", 1)
    assert (cipher.rstrip(b"\0"), mode.rstrip(b"\0"), hash_.rstrip(b"\0")) == (
        b"aes", b"xts-plain64", b"sha256")
    assert (payload, key_bytes) == (4096, 64)
    assert struct.unpack_from(">I", image, 164) == (luks.DIGEST_ITERATIONS,)
    slots = [struct.unpack_from(">II32sII", image, SLOT + 48 * i) for i in range(8)]
    assert slots[0][:2] == (0x00AC71F3, luks.SLOT_ITERATIONS)
    assert all(s[0] == 0x0000DEAD and s[1] == 0 for s in slots[1:])
    assert [s[3] for s in slots] == [8 + 504 * i for i in range(8)]
    assert {s[4] for s in slots} == {4000}
    assert len(image) == PAYLOAD + 1024


def test_iteration_counts_are_fixed_at_luks1s_minimum() -> None:
    assert luks.SLOT_ITERATIONS == luks.DIGEST_ITERATIONS == 1000


def test_each_image_has_its_own_master_key_salts_and_uuid() -> None:
    a, b = seal(b"x" * 512), seal(b"x" * 512)
    assert a[112:208] != b[112:208] and a[PAYLOAD:] != b[PAYLOAD:]
    assert luks.inspect(io.BytesIO(a)).uuid != luks.inspect(io.BytesIO(b)).uuid


def test_inspect_reports_the_header_without_a_key(image: bytes) -> None:
    info = luks.inspect(io.BytesIO(image))
    assert (info.version, info.cipher, info.mode, info.hash, info.key_bits) == (
        1, "aes", "xts-plain64", "sha256", 512)
    assert (info.active_slots, info.payload_offset) == ((0,), PAYLOAD)
    assert len(info.uuid) == 36 and luks.is_luks(image) and not luks.is_luks(b"QFI\xfb")


# --- round trips --------------------------------------------------------------------------------

@pytest.mark.parametrize("size", [0, 1, 511, 512, 513, MIB + 512, MIB + 1000])
def test_round_trip_with_the_plaintext_size_is_exact(size: int) -> None:
    data = os.urandom(size)
    image = seal(data)
    assert len(image) == PAYLOAD + -(-size // 512) * 512
    assert open_(image, size=size) == data


@pytest.mark.parametrize("size", [1, 511, 513, 1000])
def test_without_the_size_the_reader_returns_the_zero_padded_last_sector(size: int) -> None:
    data = os.urandom(size)
    assert open_(seal(data)) == data + bytes(-size % 512)


@settings(max_examples=40, deadline=None)
@given(data=st.binary(max_size=3000), write_read=st.integers(1, 1500),
       read_read=st.integers(1, 1500), pieces=st.integers(1, 700))
def test_round_trip_over_sizes_read_sizes_and_input_pieces(
        data: bytes, write_read: int, read_read: int, pieces: int) -> None:
    chunks = [data[i:i + pieces] for i in range(0, len(data), pieces)]
    out = io.BytesIO()
    assert luks.encrypt(iter(chunks), out, PASS, read_size=write_read) == len(data)
    sink = ShortWriteSink(limit=700)
    luks.decrypt(io.BytesIO(out.getvalue()), sink, PASS, size=len(data), read_size=read_read)
    assert sink.data == data


def test_pipes_work_for_input_in_both_directions(
        pipe_feeder: Callable[[bytes, int], BinaryIO]) -> None:
    data = os.urandom(MIB + 77)
    out = io.BytesIO()
    assert luks.encrypt(pipe_feeder(data, 4099), out, PASS) == len(data)
    back = io.BytesIO()
    luks.decrypt(pipe_feeder(out.getvalue(), 65537), back, PASS, size=len(data))
    assert back.getvalue() == data


# --- refusals -----------------------------------------------------------------------------------

def test_wrong_passphrase_is_an_opaque_authentication_error(image: bytes) -> None:
    with pytest.raises(AuthenticationError) as err:
        open_(image, b"5F" * 32)  # uppercase hex: a different passphrase
    assert str(err.value) == str(AuthenticationError())


BAD_HEADERS: dict[str, tuple[int, str, tuple[object, ...], str]] = {
    "bad magic": (0, ">6s", (b"LUKS\0\0",), "bad magic"),
    "luks2": (6, ">H", (2,), "LUKS2 is not supported"),
    "version 3": (6, ">H", (3,), "unknown LUKS version 3"),
    "cipher": (8, ">32s", (b"twofish",), "unsupported LUKS1 cipher"),
    "mode": (40, ">32s", (b"cbc-essiv:sha256",), "unsupported LUKS1 cipher"),
    "hash": (72, ">32s", (b"sha1",), "unsupported LUKS1 cipher"),
    "not ascii": (72, ">32s", (b"sha\xff",), "not ASCII"),
    "key size": (108, ">I", (32,), "key size 256 bits"),
    "payload in header": (104, ">I", (1,), "out of range"),
    "payload offset zero": (104, ">I", (0,), "out of range"),
    "digest iterations 0": (164, ">I", (0,), "mk-digest iterations 0"),
    "digest iterations huge": (164, ">I", (1 << 30,), "mk-digest iterations"),
    "slot state": (SLOT, ">I", (1,), "invalid state"),
    "no active slot": (SLOT, ">I", (0xDEAD,), "no active key slot"),
    "slot iterations 0": (SLOT + 4, ">I", (0,), "iterations 0"),
    "slot iterations huge": (SLOT + 4, ">I", (0xFFFFFFFF,), "iterations"),
    "material in header": (SLOT + 40, ">I", (1,), "out of range"),
    "material past payload": (SLOT + 40, ">I", (4000,), "out of range"),
    "stripes": (SLOT + 44, ">I", (1,), "1 stripes"),
}


@pytest.mark.parametrize("case", BAD_HEADERS)
def test_headers_we_do_not_accept_are_one_line_format_errors(image: bytes, case: str) -> None:
    offset, fmt, values, message = BAD_HEADERS[case]
    bad = patched(image, offset, fmt, *values)
    for attempt in (lambda: luks.inspect(io.BytesIO(bad)), lambda: open_(bad)):
        with pytest.raises(FormatError, match=message) as err:
            attempt()
        assert "\n" not in str(err.value)


def test_overlapping_active_key_slots_are_refused(image: bytes) -> None:
    second = patched(image, SLOT + 48, ">II32sII", 0x00AC71F3, 1000, bytes(32), 100, 4000)
    with pytest.raises(FormatError, match="overlaps"):
        open_(second)


@pytest.mark.parametrize(("cut", "message"), [
    (0, "inside the 592-byte header"), (591, "inside the 592-byte header"),
    (592, "before the payload"), (4096 + 1000, "inside key material"),
    (PAYLOAD - 1, "before the payload"), (PAYLOAD + 100, "not a whole number of sectors")])
def test_truncated_images_are_format_errors(image: bytes, cut: int, message: str) -> None:
    with pytest.raises(FormatError, match=message):
        open_(image[:cut])


@pytest.mark.parametrize(("size", "message"), [
    (-1, "invalid plaintext size"), (1025, "shorter than"), (512, "longer than"),
    (0, "longer than")])
def test_a_plaintext_size_that_does_not_fit_the_payload_is_refused(
        image: bytes, size: int, message: str) -> None:
    with pytest.raises(FormatError, match=message):
        open_(image, size=size)


def test_the_reader_accepts_any_size_within_the_last_sector(image: bytes) -> None:
    assert len(open_(image, size=513)) == 513 and len(open_(image, size=1024)) == 1024


# --- tamper: what LUKS does and does not detect -------------------------------------------------

@pytest.mark.parametrize("offset", [112, 140, 8 * 512, 8 * 512 + 255999])
def test_a_changed_master_key_digest_or_key_material_fails_authentication(
        image: bytes, offset: int) -> None:
    bad = bytearray(image)
    bad[offset] ^= 1
    with pytest.raises(AuthenticationError):
        open_(bytes(bad))


def test_non_promise_a_changed_payload_byte_is_not_detected() -> None:
    """LUKS has no integrity: one flipped bit garbles exactly its 16-byte XTS block."""
    data = os.urandom(4 * 512)
    bad = bytearray(seal(data))
    bad[PAYLOAD + 512 + 100] ^= 1
    out = open_(bytes(bad), size=len(data))
    assert out != data and len(out) == len(data)
    differs = [i for i in range(len(data)) if out[i] != data[i]]
    assert differs and min(differs) >= 512 + 96 and max(differs) < 512 + 112


def test_non_promise_swapped_or_appended_sectors_are_not_detected() -> None:
    data = os.urandom(3 * 512)
    image = seal(data)
    swapped = image[:PAYLOAD] + image[PAYLOAD + 512:PAYLOAD + 1024] + image[PAYLOAD:PAYLOAD + 512]
    assert open_(swapped[:PAYLOAD + 1024])[512:] != data[:512]  # garbage, and no error
    assert open_(image + image[PAYLOAD:PAYLOAD + 512])[:len(data)] == data


# --- memory ---------------------------------------------------------------

class Discard:
    """A sink that keeps nothing, so only the writer's own memory is measured."""

    def write(self, data: bytes | bytearray | memoryview) -> int:
        return len(data)


def peak_memory_of_encrypting(size: int) -> int:
    piece = bytes(64 * 1024)
    tracemalloc.start()
    try:
        luks.encrypt((piece for _ in range(size // len(piece))), Discard(), PASS,
                     read_size=256 * 1024)
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_the_writer_runs_in_constant_memory() -> None:
    small, large = peak_memory_of_encrypting(2 * MIB), peak_memory_of_encrypting(24 * MIB)
    assert large < small + MIB // 2 and large < 8 * MIB
