"""Tampering with an encrypted file, seen through ``img-crypt decrypt``.

One small file is encrypted once per module: 2 * 16384 + 500 plaintext bytes, so its payload
is salt (24) | commitment (32) | two full chunks of 16400 bytes | a final chunk of 516 bytes,
behind a 165-byte header (one ``local`` slot, bound to an image id). Every altered copy must be
refused by ``main(["decrypt", ...])`` with exit code 1, exactly one line
``img-crypt: error: ...`` on stderr, and nothing left in the output directory (no OUTPUT and
no temporary ``.part`` file).

Coverage:

- every single-bit flip in the header and in the first 56 payload bytes (salt, commitment);
- in the chunks, a sample: one flipped bit in every 16th byte (offsets 0, 16, 32, ... from the
  first chunk), the flipped bit rotating through 0..7. Chunks start on 16-byte multiples
  (16400 = 16 * 1025), so every AES block of every chunk, each chunk's tag included, gets a flip;
- truncation at 0, inside the header, at every chunk boundary and one byte either side;
- trailing data, a duplicated chunk, swapped and dropped chunks, a header from another file,
  and a wrong image id.

Decrypts run with no ``--image-id`` unless stated, so a changed image id must be caught by the
cryptography (slot wrapping and header MAC), not by the binding comparison.
"""

from __future__ import annotations

import contextlib
import io
import os
import uuid
from dataclasses import dataclass
from pathlib import Path

import pytest

from img_crypt.cli import main
from img_crypt.keys.local import LocalKeyStore

CHUNK, CT_CHUNK, PREFIX = 16384, 16400, 56
PLAIN_SIZE = 2 * CHUNK + 500
IMAGE = "9d2f4a61-3b7c-4e8d-a1f0-6c5b4a392817"
HEADER = 165
# header fields of this file (FORMAT.md section 2 and 3): name -> byte range
HEADER_FIELDS = {
    "magic": (0, 8),
    "version and suite": (8, 10),
    "header_length": (10, 12),
    "image id length and image id": (12, 29),
    "slot count": (29, 30),
    "slot kind": (30, 36),
    "slot key id": (36, 73),
    "slot nonce": (73, 85),
    "slot wrapped data key": (85, 133),
    "header MAC": (133, 165),
}


@dataclass
class Sample:
    """The encrypted file and a decrypt harness sharing one key store."""

    root: Path
    store: Path
    plaintext: bytes
    data: bytes

    @property
    def inputs(self) -> Path:
        return self.root / "in"

    @property
    def outputs(self) -> Path:
        return self.root / "out"

    def chunk(self, i: int) -> bytes:
        start = HEADER + PREFIX + i * CT_CHUNK
        return self.data[start:start + CT_CHUNK]

    def decrypt(self, data: bytes, *options: str) -> tuple[int, str, list[str]]:
        """Decrypt ``data`` into an empty directory; return the code, stderr and what is left
        in that directory."""
        source = self.inputs / "tampered.icr"
        source.write_bytes(data)
        stderr, stdout = io.StringIO(), io.StringIO()
        with contextlib.redirect_stderr(stderr), contextlib.redirect_stdout(stdout):
            code = main(["decrypt", str(source), str(self.outputs / "plain.raw"),
                         "--key-store", str(self.store), *options])
        left = sorted(os.listdir(self.outputs))
        for name in left:  # start the next attempt clean; the test reports what was there
            (self.outputs / name).unlink()
        return code, stderr.getvalue(), left

    def problem(self, what: str, data: bytes, *options: str) -> str | None:
        """None if ``data`` is refused as promised, else a description of what went wrong."""
        try:
            code, err, left = self.decrypt(data, *options)
        except Exception as e:  # an escaping exception is itself a finding
            return f"{what}: main raised {type(e).__name__}: {e}"
        lines = err.splitlines()
        if code != 1:
            return f"{what}: exit code {code}"
        if len(lines) != 1 or not lines[0].startswith("img-crypt: error: ") \
                or "Traceback" in err:
            return f"{what}: stderr {err!r}"
        if left:
            return f"{what}: left {left} in the output directory"
        return None


@pytest.fixture(scope="module")
def sample(tmp_path_factory: pytest.TempPathFactory) -> Sample:
    root = tmp_path_factory.mktemp("tamper")
    store = root / "keys"
    key_id = LocalKeyStore(store).create_key()
    plaintext = os.urandom(PLAIN_SIZE)
    (root / "in").mkdir()
    (root / "out").mkdir()
    (root / "plain").write_bytes(plaintext)
    with contextlib.redirect_stdout(io.StringIO()):
        code = main(["encrypt", str(root / "plain"), str(root / "in" / "good.icr"),
                     "--kek", key_id, "--image-id", IMAGE, "--key-store", str(store)])
    assert code == 0
    data = (root / "in" / "good.icr").read_bytes()
    assert len(data) == HEADER + PREFIX + 2 * CT_CHUNK + 500 + 16
    return Sample(root, store, plaintext, data)


def flip(data: bytes, offset: int, bit: int) -> bytes:
    return data[:offset] + bytes([data[offset] ^ (1 << bit)]) + data[offset + 1:]


def assert_all_refused(sample: Sample, cases: dict[str, bytes]) -> None:
    problems = [p for what, data in cases.items() if (p := sample.problem(what, data))]
    assert problems == [], f"{len(problems)} of {len(cases)} not refused: {problems[:20]}"


# --- controls: the harness accepts the untampered file --------------------------------------

def test_the_untampered_file_decrypts(sample: Sample) -> None:
    code, err, left = sample.decrypt(sample.data)
    assert (code, err, left) == (0, "", ["plain.raw"])


def test_the_untampered_file_decrypts_with_its_image_id(sample: Sample) -> None:
    code, err, left = sample.decrypt(sample.data, "--image-id", IMAGE)
    assert (code, err, left) == (0, "", ["plain.raw"])


def test_the_harness_reports_an_accepted_file(sample: Sample) -> None:
    assert sample.problem("untampered", sample.data) == "untampered: exit code 0"


def test_the_decrypted_bytes_are_the_plaintext(sample: Sample) -> None:
    source = sample.inputs / "good-copy.icr"
    source.write_bytes(sample.data)
    target = sample.root / "plain.out"
    with contextlib.redirect_stdout(io.StringIO()):
        assert main(["decrypt", str(source), str(target), "--key-store", str(sample.store)]) == 0
    assert target.read_bytes() == sample.plaintext


# --- bit flips ------------------------------------------------------------------------------

@pytest.mark.parametrize("field", list(HEADER_FIELDS))
def test_every_bit_flip_in_the_header_is_refused(sample: Sample, field: str) -> None:
    start, end = HEADER_FIELDS[field]
    cases = {f"{field}: byte {i} bit {b}": flip(sample.data, i, b)
             for i in range(start, end) for b in range(8)}
    assert_all_refused(sample, cases)


def test_the_header_fields_cover_the_whole_header() -> None:
    covered = sorted(i for start, end in HEADER_FIELDS.values() for i in range(start, end))
    assert covered == list(range(HEADER))


@pytest.mark.parametrize(("field", "start", "end"), [("salt", 0, 24), ("commitment", 24, 56)])
def test_every_bit_flip_in_salt_and_commitment_is_refused(sample: Sample, field: str,
                                                          start: int, end: int) -> None:
    cases = {f"{field}: payload byte {i} bit {b}": flip(sample.data, HEADER + i, b)
             for i in range(start, end) for b in range(8)}
    assert_all_refused(sample, cases)


@pytest.mark.parametrize("index", [0, 1, 2])
def test_sampled_bit_flips_in_each_chunk_are_refused(sample: Sample, index: int) -> None:
    first = HEADER + PREFIX + index * CT_CHUNK
    last = min(first + CT_CHUNK, len(sample.data))
    def bit(i: int) -> int:
        return ((i - first) // 16) % 8

    cases = {f"chunk {index}: byte {i - first} bit {bit(i)}": flip(sample.data, i, bit(i))
             for i in range(first, last, 16)}
    tag = last - 16
    assert any(i >= tag for i in range(first, last, 16))  # the sample reaches the tag
    assert_all_refused(sample, cases)


# --- truncation and extension ---------------------------------------------------------------

def test_truncation_is_refused(sample: Sample) -> None:
    size = len(sample.data)
    payload = HEADER + PREFIX
    boundaries = [payload + i * CT_CHUNK for i in range(3)] + [size]
    cuts = {0, 1, 7, 8, 11, 12, 13, 29, 30, 100, HEADER - 33, HEADER - 32, HEADER - 1, HEADER,
            HEADER + 1, HEADER + 23, HEADER + 24, HEADER + 55,
            payload + 2 * CT_CHUNK + 16}  # a final chunk holding only a tag
    cuts |= {b + d for b in boundaries for d in (-1, 0, 1)}
    cases = {f"cut at {n} of {size}": sample.data[:n] for n in sorted(cuts) if n < size}
    assert len(cases) >= 25
    assert_all_refused(sample, cases)


def test_appended_data_is_refused(sample: Sample) -> None:
    data = sample.data
    cases = {
        "one zero byte appended": data + b"\0",
        "one random byte appended": data + os.urandom(1),
        "16 bytes appended": data + bytes(16),
        "a copy of chunk 0 appended": data + sample.chunk(0),
        "a copy of chunk 1 appended": data + sample.chunk(1),
        "a copy of the final chunk appended": data + data[-516:],
        "the whole file appended": data + data,
    }
    assert_all_refused(sample, cases)


def test_reordered_dropped_and_replayed_chunks_are_refused(sample: Sample) -> None:
    head, c0, c1 = sample.data[:HEADER + PREFIX], sample.chunk(0), sample.chunk(1)
    final = sample.data[HEADER + PREFIX + 2 * CT_CHUNK:]
    assert head + c0 + c1 + final == sample.data
    cases = {
        "chunks 0 and 1 swapped": head + c1 + c0 + final,
        "chunk 0 dropped": head + c1 + final,
        "chunk 1 dropped": head + c0 + final,
        "chunk 0 twice": head + c0 + c0 + final,
        "chunk 0 replayed as chunk 1 with chunk 1 after it": head + c0 + c0 + c1 + final,
        "final chunk dropped": head + c0 + c1,
        "final chunk moved first": head + final + c0 + c1,
    }
    assert_all_refused(sample, cases)


def test_a_header_from_another_file_is_refused(sample: Sample) -> None:
    """Same key, same image id: the other header is valid, but its data key is not this one."""
    other_plain = sample.root / "other-plain"
    other_plain.write_bytes(os.urandom(100))
    key_id = LocalKeyStore(sample.store).list_keys()[0].key_id
    with contextlib.redirect_stdout(io.StringIO()):
        assert main(["encrypt", str(other_plain), str(sample.root / "other.icr"), "--kek", key_id,
                     "--image-id", IMAGE, "--key-store", str(sample.store)]) == 0
    other = (sample.root / "other.icr").read_bytes()
    cases = {
        "other header, this payload": other[:HEADER] + sample.data[HEADER:],
        "this header, other payload": sample.data[:HEADER] + other[HEADER:],
        "other header and salt, this rest": other[:HEADER + 24] + sample.data[HEADER + 24:],
    }
    assert_all_refused(sample, cases)


# --- image binding --------------------------------------------------------------------------

def test_a_wrong_image_id_is_refused(sample: Sample) -> None:
    problems = [p for image in (str(uuid.uuid4()), str(uuid.UUID(int=0)),
                                IMAGE.replace("9d2f", "9d2e"))
                if (p := sample.problem(f"image id {image}", sample.data, "--image-id", image))]
    assert problems == []



# --- exhaustive: every bit of a one-chunk file ----------------------------------------------

def test_every_single_bit_flip_anywhere_in_a_small_file_is_refused(
        tmp_path: Path, sample: Sample) -> None:
    """No sampling here: a 300-byte image gives a 537-byte file, and all 4296 flips fail."""
    small = Sample(tmp_path, sample.store, os.urandom(300), b"")
    small.inputs.mkdir()
    small.outputs.mkdir()
    (tmp_path / "plain").write_bytes(small.plaintext)
    key_id = LocalKeyStore(sample.store).list_keys()[0].key_id
    with contextlib.redirect_stdout(io.StringIO()):
        assert main(["encrypt", str(tmp_path / "plain"), str(tmp_path / "small.icr"),
                     "--kek", key_id, "--image-id", IMAGE, "--key-store",
                     str(sample.store)]) == 0
    data = (tmp_path / "small.icr").read_bytes()
    assert len(data) == HEADER + PREFIX + 300 + 16
    assert small.problem("untampered", data) == "untampered: exit code 0"
    cases = {f"bit {bit} of byte {offset}": flip(data, offset, bit)
             for offset in range(len(data)) for bit in range(8)}
    assert len(cases) == 4296
    assert_all_refused(small, cases)
