"""The public, pure API: encrypt, decrypt, seek, inspect and rewrap img-crypt files.

It knows keys and byte streams only (FORMAT.md). Key managers stay outside: callers pass
KEKs in, and a :data:`KekLookup` that maps a slot's (kind, key id) to KEK bytes.
"""

from __future__ import annotations

import dataclasses
import os
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import BinaryIO

from img_crypt import _cobblestone, _keyslots, _payload_parallel
from img_crypt._io import DEFAULT_READ_SIZE, Input, Source, Writable, write_all
from img_crypt._keyslots import Kek, KekLookup
from img_crypt._payload import (
    PayloadDecryptor,
    PayloadEncryptor,
    decrypt_buffer_size,
    encrypt_buffer_size,
)
from img_crypt._writebehind import writer
from img_crypt.errors import BindingError, FormatError, UsageError
from img_crypt.format import PREFIX_SIZE, SUITES, Header, parse, parse_prefix

__all__ = ["Deferred", "Inspection", "Kek", "KekLookup", "Sealed", "Summary", "decrypt",
           "decrypt_range", "encrypt", "inspect", "rewrap"]

DEK_SIZE = 32
Progress = Callable[[int], None]
"""Called with the number of input bytes just processed."""


@dataclass(frozen=True)
class Summary:
    """What an operation read or wrote."""

    header: Header
    header_size: int
    plaintext_size: int
    payload_size: int

    @property
    def file_size(self) -> int:
        """Header plus payload."""
        return self.header_size + self.payload_size


def _read_header(source: Source) -> tuple[Header, bytes]:
    prefix = source.read_exact(PREFIX_SIZE)
    if len(prefix) < PREFIX_SIZE:
        raise FormatError("not an img-crypt file (shorter than a header)")
    rest = source.read_exact(parse_prefix(prefix) - PREFIX_SIZE)
    raw = prefix + rest
    return parse(raw), raw


def _check_binding(header: Header, image_id: uuid.UUID | None) -> None:
    if image_id is not None and header.image_id != image_id:
        bound = header.image_id or "no image"
        raise BindingError(f"the file is bound to {bound}, not to image {image_id}")


def _context(header: Header) -> bytes:
    return b"img-crypt payload v1\x00" + header.binding()


# --- streaming -----------------------------------------------------------------------------

def encrypt(source: Input, sink: Writable, keks: Sequence[Kek], *,
            image_id: uuid.UUID | None = None, read_size: int = DEFAULT_READ_SIZE,
            progress: Progress | None = None, threads: int | None = None) -> Summary:
    """Encrypt ``source`` into ``sink`` under a fresh DEK wrapped by every KEK in ``keks``.

    ``threads`` workers cipher chunks in parallel (default: the usable cores, at most 8); 1 is
    the one-thread streaming path. The bytes are the same either way (for the same salt).
    """
    workers = _payload_parallel.workers(threads)
    dek = os.urandom(DEK_SIZE)
    header = _keyslots.seal(dek, image_id, keks)
    raw = header.encode()
    write_all(sink, raw)
    plain, payload = _encrypt_payload(dek, header, source, sink, workers=workers,
                                      read_size=read_size, progress=progress)
    return Summary(header, len(raw), plain, payload)


def _encrypt_payload(dek: bytes, header: Header, source: Input, sink: Writable, *,
                     workers: int, read_size: int,
                     progress: Progress | None) -> tuple[int, int]:
    """Write the payload of ``source`` for ``header``; return (plaintext, payload) bytes."""
    suite, context = SUITES[header.suite], _context(header)
    if workers > 1:
        file = _payload_parallel.regular_file(source)  # read by offset from the workers
        with Source(b"" if file else source, read_size) as src:
            return _payload_parallel.encrypt(
                suite, dek, context, file or src, sink, workers=workers, read_size=read_size,
                progress=progress)
    with Source(source, read_size) as src:
        cipher = PayloadEncryptor(suite, dek, context)
        payload = _pump(src, cipher, encrypt_buffer_size(read_size), sink, progress)
    return src.consumed, payload


class Deferred:
    """A new file whose payload is encrypted before its KEKs exist; the header comes last.

    For a caller whose key takes time to make (the Glance import creates one in Barbican):
    :meth:`encrypt` writes the payload at :attr:`header_size` of a seekable sink while the key
    is being made, then :meth:`seal` wraps the DEK and writes the header in front. The payload
    does not depend on the key slots (FORMAT.md section 6: its context binds the version, the
    suite and the image id), so the file is the one :func:`encrypt` would write. The header's
    size depends on the slots' kinds and key ids: the caller names them up front (for a key
    that does not exist yet, a placeholder id of the length it will have).
    """

    def __init__(self, slots: Sequence[tuple[str, str]], *,
                 image_id: uuid.UUID | None = None) -> None:
        self._dek = os.urandom(DEK_SIZE)
        self._image_id = image_id
        blank = bytes(DEK_SIZE)  # sizes the header only; never written
        self._draft = _keyslots.seal(blank, image_id,
                                     [Kek(kind, key_id, blank) for kind, key_id in slots])
        self.header_size = len(self._draft.encode())
        self._sizes: tuple[int, int] | None = None

    def encrypt(self, source: Input, sink: BinaryIO, *, read_size: int = DEFAULT_READ_SIZE,
                progress: Progress | None = None, threads: int | None = None) -> None:
        """Write the payload of ``source`` into ``sink`` from offset :attr:`header_size`."""
        workers = _payload_parallel.workers(threads)
        sink.seek(self.header_size)
        self._sizes = _encrypt_payload(self._dek, self._draft, source, sink, workers=workers,
                                       read_size=read_size, progress=progress)

    def seal(self, sink: BinaryIO, keks: Sequence[Kek]) -> Summary | None:
        """Write the header for ``keks`` at offset 0; None if it is not the size foreseen.

        On None nothing was written: the caller encrypts again (:func:`encrypt`).
        """
        if self._sizes is None:
            raise UsageError("seal() comes after encrypt()")
        header = _keyslots.seal(self._dek, self._image_id, keks)
        raw = header.encode()
        if len(raw) != self.header_size:
            return None
        sink.seek(0)
        write_all(sink, raw)
        sink.seek(0, os.SEEK_END)
        return Summary(header, len(raw), *self._sizes)


class Sealed:
    """A new file whose header exists before any data: the pull side of :func:`encrypt`.

    For a sink that pulls (an HTTP request body): :attr:`header` (hence its size) is known
    first, then :meth:`chunks` yields the whole file, header then payload, in pieces of about
    ``read_size`` bytes, holding a constant amount of memory.
    """

    def __init__(self, keks: Sequence[Kek], *, image_id: uuid.UUID | None = None) -> None:
        self._dek = os.urandom(DEK_SIZE)
        self.header = _keyslots.seal(self._dek, image_id, keks)
        self.raw_header = self.header.encode()
        self.plaintext_size = 0
        """Plaintext bytes encrypted so far (all of them once :meth:`chunks` is exhausted)."""

    def chunks(self, source: Input, *, read_size: int = DEFAULT_READ_SIZE) -> Iterator[bytes]:
        """Yield the header, then ``source`` encrypted; call once."""
        yield self.raw_header
        with Source(source, read_size) as src:
            cipher = PayloadEncryptor(SUITES[self.header.suite], self._dek,
                                      _context(self.header))
            out = bytearray(encrypt_buffer_size(read_size))
            for view in src.views():
                n = cipher.update_into(view, out)
                self.plaintext_size += len(view)
                if n:
                    yield bytes(out[:n])
            yield cipher.finalize()

    def file_size(self, plaintext_size: int) -> int:
        """The size of the whole file for ``plaintext_size`` bytes of plaintext."""
        return len(self.raw_header) + _cobblestone.payload_size(plaintext_size)


def _pump(src: Source, cipher: PayloadEncryptor | PayloadDecryptor, out_size: int,
          sink: Writable, progress: Progress | None) -> int:
    """Run every input view through ``cipher`` into ``out_size`` buffers; return bytes written.

    Output buffers are reused; for a regular-file sink they are written by a second thread
    (:mod:`img_crypt._writebehind`) while the cipher fills the next one.
    """
    written = 0
    with writer(sink, out_size) as out:
        for view in src.views():
            buf = out.buffer()
            n = cipher.update_into(view, buf)
            out.submit(memoryview(buf)[:n], buf)
            written += n
            if progress:
                progress(len(view))
        tail = cipher.finalize()
        out.submit(tail)
    return written + len(tail)


def decrypt(source: Input, sink: Writable, lookup: KekLookup, *,
            image_id: uuid.UUID | None = None, read_size: int = DEFAULT_READ_SIZE,
            progress: Progress | None = None, threads: int | None = None) -> Summary:
    """Decrypt ``source`` into ``sink``; only authenticated plaintext ever reaches ``sink``.

    Plaintext is released chunk by chunk, in order; only a normal return proves the payload
    was not truncated, so a caller writing to a file publishes it only then. ``threads`` as
    for :func:`encrypt`.
    """
    workers = _payload_parallel.workers(threads)
    if workers > 1:
        return _decrypt_parallel(source, sink, lookup, image_id=image_id, read_size=read_size,
                                 progress=progress, workers=workers)
    with Source(source, read_size) as src:
        header, raw = _read_header(src)
        _check_binding(header, image_id)
        dek = _keyslots.open_dek(header, raw, lookup)
        cipher = PayloadDecryptor(SUITES[header.suite], dek, _context(header))
        plain = _pump(src, cipher, decrypt_buffer_size(read_size), sink, progress)
    return Summary(header, len(raw), plain, src.consumed - len(raw))


def _decrypt_parallel(source: Input, sink: Writable, lookup: KekLookup, *,
                      image_id: uuid.UUID | None, read_size: int, progress: Progress | None,
                      workers: int) -> Summary:
    """:func:`decrypt` on ``workers`` threads.

    A regular file's header is read without read-ahead, then its payload by offset.
    """
    file = _payload_parallel.regular_file(source)
    with Source(_Exact(file.stream) if file else source, read_size) as src:
        header, raw = _read_header(src)
        _check_binding(header, image_id)
        dek = _keyslots.open_dek(header, raw, lookup)
        payload = dataclasses.replace(file, base=file.base + len(raw)) if file else src
        plain, size = _payload_parallel.decrypt(
            SUITES[header.suite], dek, _context(header), payload, sink, workers=workers,
            read_size=read_size, progress=progress)
    return Summary(header, len(raw), plain, size)


def decrypt_range(file: BinaryIO, sink: Writable, lookup: KekLookup, start: int,
                  end: int | None = None, *, image_id: uuid.UUID | None = None) -> Summary:
    """Decrypt plaintext bytes ``[start:end]`` of a seekable file, reading only their chunks.

    ``end`` None means the end of the plaintext. The commitment, the header and the final chunk
    (hence the plaintext length) are authenticated before any byte is written.
    """
    base = file.seek(0, os.SEEK_CUR)
    header, raw = _read_header(Source(_Exact(file)))
    _check_binding(header, image_id)
    dek = _keyslots.open_dek(header, raw, lookup)
    payload_start = base + len(raw)
    payload_len = file.seek(0, os.SEEK_END) - payload_start

    def read_at(offset: int, size: int) -> bytes:
        file.seek(payload_start + offset)
        return file.read(size)

    reader = _cobblestone.ChunkReader(SUITES[header.suite], dek, _context(header),
                                      payload_len, read_at)
    stop = reader.plaintext_size if end is None else end
    if not 0 <= start <= stop <= reader.plaintext_size:
        raise UsageError(f"range {start}:{stop} is outside the plaintext 0:"
                         f"{reader.plaintext_size}")
    for piece in reader.plaintext_range(start, stop):
        write_all(sink, piece)
    return Summary(header, len(raw), stop - start, payload_len)


class _Exact:
    """Adapter that reads a file with ``read`` only, so no read-ahead past the header."""

    def __init__(self, file: BinaryIO) -> None:
        self._file = file

    def read(self, size: int = -1, /) -> bytes:
        return self._file.read(min(size, 4096))


# --- header-only operations ----------------------------------------------------------------

@dataclass(frozen=True)
class Inspection:
    """What :func:`inspect` learnt: the header, and the sizes when the input's size is known."""

    header: Header
    header_size: int
    payload_size: int | None
    """None for a stream: it is not read past the header (it may never end)."""
    plaintext_size: int | None
    """None for a stream; -1 when the payload length fits no Cobblestone payload."""

    @property
    def file_size(self) -> int | None:
        """Header plus payload, when known."""
        return None if self.payload_size is None else self.header_size + self.payload_size


def inspect(source: Input, *, size: int | None = None,
            read_size: int = DEFAULT_READ_SIZE) -> Inspection:
    """Read the header only, with no key (nothing is authenticated).

    ``size`` is the whole input's size when known (a regular file): the payload and
    plaintext sizes follow from it. Without it the input is a stream, which is not read past
    the header (an endless pipe must not hang inspect): both sizes are then unknown (None).
    """
    with Source(source, read_size) as src:
        header, raw = _read_header(src)
    if size is None:
        return Inspection(header, len(raw), None, None)
    payload = size - len(raw)
    plain = _cobblestone.plaintext_size(payload)
    return Inspection(header, len(raw), payload, -1 if plain is None else plain)


def authenticate_header(source: Input, lookup: KekLookup, *,
                        image_id: uuid.UUID) -> Header:
    """Read the header only, check it is bound to ``image_id`` and that a slot opens.

    Opening a slot unwraps the DEK with the slot's key and verifies the header MAC: a header
    that merely parses (forged, copied from another image, keys not available) fails with
    :class:`FormatError`, :class:`BindingError`, :class:`AuthenticationError` or the key
    manager's error. The payload is not read.
    """
    with Source(source, DEFAULT_READ_SIZE) as src:
        header, raw = _read_header(src)
    _check_binding(header, image_id)
    _keyslots.open_dek(header, raw, lookup)
    return header


def rewrap(source: Input, sink: Writable, lookup: KekLookup, *, add: Sequence[Kek] = (),
           remove: Sequence[tuple[str, str]] = (), verify: bool = True,
           before_write: Callable[[Header], None] | None = None,
           read_size: int = DEFAULT_READ_SIZE, progress: Progress | None = None) -> Summary:
    """Add and remove key slots; the payload is copied byte for byte.

    The DEK is unwrapped with a key still available through ``lookup`` (and the header MAC
    checked), so only a holder of one of the file's KEKs can rewrap it. ``before_write`` is
    called with that authenticated input header before the first byte reaches ``sink``. With
    ``verify`` (the default) every payload chunk is authenticated while it is copied (its
    plaintext discarded) and a normal return proves the whole payload; without it only the
    header is.
    """
    with Source(source, read_size) as src:
        header, raw = _read_header(src)
        dek = _keyslots.open_dek(header, raw, lookup)
        new = _rewrapped(header, dek, add, remove)
        if before_write is not None:
            before_write(header)
        new_raw = new.encode()
        write_all(sink, new_raw)
        check = PayloadDecryptor(SUITES[header.suite], dek, _context(header)) if verify \
            else None
        scratch = bytearray(decrypt_buffer_size(read_size) if verify else 0)
        payload = 0
        for view in src.views():
            if check is not None:
                check.update_into(view, scratch)
            write_all(sink, view)
            payload += len(view)
            if progress:
                progress(len(view))
        if check is not None:
            check.finalize()
    size = _cobblestone.plaintext_size(payload)
    return Summary(new, len(new_raw), -1 if size is None else size, payload)


def _rewrapped(header: Header, dek: bytes, add: Sequence[Kek],
               remove: Sequence[tuple[str, str]]) -> Header:
    """The new header: ``remove`` slots dropped (each must exist), ``add`` keys wrapped."""
    present = {(s.kind, s.key_id) for s in header.slots}
    missing = [f"{kind}:{key_id}" for kind, key_id in remove if (kind, key_id) not in present]
    if missing:
        raise UsageError(f"the file has no key slot for {', '.join(missing)}")
    dropped = set(remove)
    kept = [s for s in header.slots if (s.kind, s.key_id) not in dropped]
    kept_names = {(s.kind, s.key_id) for s in kept}
    fresh = [k for k in add if (k.kind, k.key_id) not in kept_names]
    return _keyslots.seal(dek, header.image_id, fresh, kept)


def _seal_for_vectors(plaintext: bytes, keks: Sequence[Kek], *, image_id: uuid.UUID | None,
                      dek: bytes, nonces: Sequence[bytes], salt: bytes) -> bytes:
    """Whole-file encryption with every random value injected: the vector generator's seam."""
    queue = list(nonces)
    header = _keyslots.seal(dek, image_id, keks, nonce=lambda: queue.pop(0))
    payload = _cobblestone.encrypt_with_salt(SUITES[header.suite], dek, _context(header),
                                             salt, plaintext)
    return header.encode() + payload
