"""Atheris (libFuzzer) target: decrypt arbitrary bytes as an img-crypt file.

Run it for longer than CI does (needs the ``fuzz`` extra, ``pip install -e '.[fuzz]'``)::

    python tests/fuzz/fuzz_decrypt.py -max_total_time=600 [CORPUS_DIR ...]

Without a CORPUS_DIR the seeds of :func:`seeds` (valid files written by code, no binary files
in the repository) go to a new temporary directory, which libFuzzer then grows. atheris is
imported only under ``__main__``: ``tests/test_fuzz_decrypt.py`` imports this module and runs
:func:`TestOneInput` over the seeds and deterministic mutations without it, so it cannot rot.

Every seed has its own DEK and salt and the plaintext ``PATTERN[:n]`` (byte i is i mod 251),
so a correct reader can only ever release a prefix of ``PATTERN``. For every input:

- ``envelope.decrypt`` (no image id expected for inputs of even length, the seeds' image id
  for odd ones) raises nothing but FormatError, AuthenticationError, BindingError, or
  KeyNotFoundError when the header parses and none of its slots names a key the reader holds;
- on failure the sink holds whole chunks of ``PATTERN``, ``PATTERN[:16384 * k]``;
- it succeeds only for an input that is one of the seeds, writing that seed's plaintext;
- ``envelope.inspect`` raises FormatError exactly when ``decrypt`` raised FormatError.

Anything else (another exception class, a failed assertion) is a crash for libFuzzer.
"""

from __future__ import annotations

import hashlib
import io
import sys
import tempfile
import uuid
from collections.abc import Callable
from pathlib import Path

from img_crypt import envelope
from img_crypt.envelope import Kek
from img_crypt.errors import AuthenticationError, BindingError, FormatError, KeyNotFoundError
from img_crypt.format import parse

CHUNK = 16384
PATTERN = bytes(i % 251 for i in range(3 * CHUNK))
READ_SIZES = (1000, 4096, 16400, 1 << 16)
IMAGE = uuid.UUID("6d1e2f3a-4b5c-4d6e-8f70-8192a3b4c5d6")


def _bytes(label: str, size: int) -> bytes:
    out = b""
    counter = 0
    while len(out) < size:
        out += hashlib.sha256(f"fuzz_decrypt/{label}/{counter}".encode()).digest()
        counter += 1
    return out[:size]


KEK_A = Kek("local", "1a2b3c4d-5e6f-4a7b-8c9d-0e1f2a3b4c5d", _bytes("kek-a", 32))
KEK_B = Kek("barbican", "d4c3b2a1-f6e5-4b7a-9c8d-5e4f3a2b1c0d", _bytes("kek-b", 32))
KEK_C = Kek("local", "clé-" + "🔑" * 62 + "é", _bytes("kek-c", 32))  # 255 UTF-8 bytes
_TABLE = {(k.kind, k.key_id): k.key for k in (KEK_A, KEK_B, KEK_C)}


def lookup(kind: str, key_id: str) -> bytes | None:
    """The fuzzing reader holds all three KEKs."""
    return _TABLE.get((kind, key_id))


def _seal(label: str, size: int, keks: tuple[Kek, ...], image: uuid.UUID | None) -> bytes:
    return envelope._seal_for_vectors(
        PATTERN[:size], keks, image_id=image, dek=_bytes(f"{label}/dek", 32),
        nonces=[_bytes(f"{label}/nonce/{n}", 12) for n in range(len(keks))],
        salt=_bytes(f"{label}/salt", 24))


def seeds() -> dict[str, bytes]:
    """The seed corpus: small valid files, each under its own DEK and salt."""
    return {
        "empty-bound-a": _seal("empty-bound-a", 0, (KEK_A,), IMAGE),
        "small-unbound-ab": _seal("small-unbound-ab", 100, (KEK_A, KEK_B), None),
        "one-chunk-bound-b": _seal("one-chunk-bound-b", CHUNK, (KEK_B,), IMAGE),
        "three-chunks-bound-ab": _seal("three-chunks-bound-ab", 2 * CHUNK + 300,
                                       (KEK_A, KEK_B), IMAGE),
        "long-key-id-unbound-c": _seal("long-key-id-unbound-c", 10, (KEK_C,), None),
    }


SEEDS = {data: name for name, data in seeds().items()}


class _Sink:
    def __init__(self) -> None:
        self.data = bytearray()

    def write(self, data: bytes | bytearray | memoryview) -> int:
        self.data += data
        return len(data)


def _known_slots(data: bytes) -> bool:
    """True if ``data`` starts with a well-formed header naming a key the reader holds."""
    header = parse(data[:int.from_bytes(data[10:12], "big")])
    return any(lookup(s.kind, s.key_id) is not None for s in header.slots)


def check_input(data: bytes) -> str:
    """Check every invariant for ``data``; return the outcome (an error class name or "ok")."""
    expect = IMAGE if len(data) % 2 else None
    sink = _Sink()
    try:
        envelope.decrypt(io.BytesIO(data), sink, lookup, image_id=expect,
                         read_size=READ_SIZES[len(data) % len(READ_SIZES)])
        outcome = "ok"
    except (FormatError, AuthenticationError, BindingError) as e:
        outcome = type(e).__name__
    except KeyNotFoundError:
        assert not _known_slots(data), "KeyNotFoundError with a usable slot"
        outcome = "KeyNotFoundError"
    out = bytes(sink.data)
    if outcome == "ok":
        assert data in SEEDS, "an input that is no seed decrypted"
        assert out == PATTERN[:len(out)] and len(out) == envelope.inspect(
            io.BytesIO(data), size=len(data)).plaintext_size
    else:
        assert len(out) % CHUNK == 0, f"{len(out)} bytes released: not whole chunks"
        assert out == PATTERN[:len(out)], "released bytes are not the plaintext"
    try:
        summary = envelope.inspect(io.BytesIO(data), size=len(data))
    except FormatError:
        assert outcome == "FormatError", f"inspect refused the header, decrypt said {outcome}"
    else:
        assert outcome != "FormatError", "decrypt refused a header that inspect accepts"
        assert summary.payload_size is not None  # a sized input: its payload is counted
        assert summary.header_size + summary.payload_size == len(data)
    return outcome


def TestOneInput(data: bytes) -> None:
    """The libFuzzer entry point (the name atheris expects)."""
    check_input(data)


def argv_with_corpus(argv: list[str],
                     make_dir: Callable[[], str] = lambda: tempfile.mkdtemp(
                         prefix="img-crypt-fuzz-")) -> list[str]:
    """``argv``, plus a directory holding the seeds if it names no corpus directory."""
    if any(not arg.startswith("-") for arg in argv[1:]):
        return argv
    corpus = make_dir()
    for name, data in seeds().items():
        (Path(corpus) / name).write_bytes(data)
    return [*argv, corpus]


if __name__ == "__main__":
    import atheris  # type: ignore[import-untyped,import-not-found,unused-ignore]

    atheris.instrument_all()
    atheris.Setup(argv_with_corpus(sys.argv), TestOneInput)
    atheris.Fuzz()
