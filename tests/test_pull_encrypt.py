"""Encryption pulled by the sink (an HTTP body): ``envelope.Sealed`` and ``luks.encrypted_chunks``.

Sealed: the header exists before any data (``upload`` records its length on the image first);
the chunks make a file :func:`envelope.decrypt` opens; no chunk is larger than one output
buffer, whatever the input size (constant memory). LUKS1: the chunks are an image
:func:`luks.decrypt` opens, of the size :func:`luks.image_size` announces.
"""

from __future__ import annotations

import io
import uuid

import pytest

from img_crypt import _cobblestone, envelope, luks
from img_crypt._payload import encrypt_buffer_size
from img_crypt.envelope import Kek, KekLookup
from img_crypt.errors import BindingError, UsageError
from img_crypt.format import parse
from tests.support.data import plaintext

CHUNK = _cobblestone.CHUNK
SIZES = [0, 1, CHUNK - 1, CHUNK, CHUNK + 1, 3 * (1 << 20) + 7]


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("read_size", [512, CHUNK + 1, 1 << 20])
def test_the_chunks_are_a_file_that_decrypts_to_the_input(
        kek: Kek, lookup: KekLookup, size: int, read_size: int) -> None:
    data = plaintext(size)
    image = uuid.uuid4()
    sealed = envelope.Sealed([kek], image_id=image)
    file = b"".join(sealed.chunks(io.BytesIO(data), read_size=read_size))
    out = io.BytesIO()
    summary = envelope.decrypt(io.BytesIO(file), out, lookup, image_id=image)
    assert out.getvalue() == data
    assert summary.header_size == len(sealed.raw_header)
    assert sealed.plaintext_size == size
    assert len(file) == sealed.file_size(size)


def test_the_header_is_known_before_any_data_is_read(kek: Kek) -> None:
    image = uuid.uuid4()
    sealed = envelope.Sealed([kek], image_id=image)
    header = parse(sealed.raw_header)
    assert header.image_id == image
    assert [(s.kind, s.key_id) for s in header.slots] == [(kek.kind, kek.key_id)]
    assert sealed.plaintext_size == 0


def test_the_first_chunk_is_the_header_alone(kek: Kek) -> None:
    sealed = envelope.Sealed([kek])
    chunks = sealed.chunks(io.BytesIO(b"x" * 1000))
    assert next(chunks) == sealed.raw_header
    assert sealed.plaintext_size == 0  # nothing read yet: the body is pulled, not pushed


def test_no_chunk_is_larger_than_one_output_buffer(kek: Kek) -> None:
    read_size = 64 * 1024
    sealed = envelope.Sealed([kek])
    sizes = [len(c) for c in sealed.chunks(io.BytesIO(plaintext(2 * (1 << 20) + 3)),
                                           read_size=read_size)]
    assert max(sizes[1:]) <= encrypt_buffer_size(read_size)
    assert len(sizes) > 2 * (1 << 20) // encrypt_buffer_size(read_size)


def test_the_file_is_bound_to_its_image(kek: Kek, lookup: KekLookup) -> None:
    sealed = envelope.Sealed([kek], image_id=uuid.uuid4())
    file = b"".join(sealed.chunks(io.BytesIO(b"data")))
    with pytest.raises(BindingError):
        envelope.decrypt(io.BytesIO(file), io.BytesIO(), lookup, image_id=uuid.uuid4())


def test_a_file_needs_a_key() -> None:
    with pytest.raises(UsageError):
        envelope.Sealed([])


@pytest.mark.parametrize("size", [0, 1, 511, 512, 513, 3 * (1 << 20) + 7])
def test_luks_chunks_are_an_image_that_opens_with_the_passphrase(size: int) -> None:
    data = plaintext(size)
    image = b"".join(luks.encrypted_chunks(io.BytesIO(data), b"secret", read_size=64 * 1024))
    assert len(image) == luks.image_size(size)
    out = io.BytesIO()
    luks.decrypt(io.BytesIO(image), out, b"secret", size=size)
    assert out.getvalue() == data


def test_luks_chunks_after_the_header_are_at_most_one_read_and_a_sector() -> None:
    read_size = 64 * 1024
    chunks = luks.encrypted_chunks(io.BytesIO(plaintext(1 << 20)), b"secret",
                                   read_size=read_size)
    header = next(chunks)
    assert len(header) == luks.PAYLOAD_OFFSET * 512
    assert max(len(c) for c in chunks) <= read_size + 512
