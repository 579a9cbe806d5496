"""The 70 Wycheproof Cobblestone vectors (35 per AES key size) against our payload layer.

Each vector runs through (a) the streaming decryptor img-crypt uses
(:class:`img_crypt._payload.PayloadDecryptor`), (b) our spec-level derivation
(:func:`img_crypt._cobblestone.derive`), (c) the seeking reader
(:class:`img_crypt._cobblestone.ChunkReader`) and (d) the chunk-parallel path
(:mod:`img_crypt._payload_parallel`), decrypting, and re-encrypting every valid vector under its
salt to its exact ciphertext. The vectors are read, never copied into the
repository, from the directory ``--wycheproof-dir DIR`` names (default:
``$IMG_CRYPT_WYCHEPROOF_DIR``, else ``../shared/vectors/wycheproof`` beside the repository; see
tests/conftest.py). Without them every test here fails, naming that option: never a skip.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import subprocess
import sys
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from img_crypt import _payload_parallel
from img_crypt._cobblestone import (
    CHUNK,
    COBBLESTONE_128,
    COBBLESTONE_256,
    CT_CHUNK,
    SALT,
    ChunkReader,
    Suite,
    derive,
)
from img_crypt._io import Source
from img_crypt._payload import PayloadDecryptor, decrypt_buffer_size
from img_crypt.errors import AuthenticationError
from tests.support.sinks import RecordingSink

REPO = Path(__file__).resolve().parents[1]
FILES = {
    "aes256": ("c2sp_chunked_encryption_aes_256_gcm_test.json", COBBLESTONE_256),
    "aes128": ("c2sp_chunked_encryption_aes_128_gcm_test.json", COBBLESTONE_128),
}
EXPECTED_VECTORS = 70


@dataclass(frozen=True)
class Vector:
    id: str
    suite: Suite
    comment: str
    key: bytes
    ctx: bytes
    ct_zhex: str = field(repr=False)
    valid: bool
    flags: frozenset[str]
    msg_length: int | None
    msg_sha512: str | None
    aead_key: bytes | None
    base_nonce: bytes | None

    @property
    def ct(self) -> bytes:
        """The ciphertext: ``ct`` is zlib-compressed (given as hex)."""
        return zlib.decompress(bytes.fromhex(self.ct_zhex))

    def is_plaintext(self, data: bytes) -> bool:
        """Whether ``data`` is the (possibly partial) plaintext the vector declares."""
        return (len(data) == self.msg_length
                and hashlib.sha512(data).hexdigest() == self.msg_sha512)


def vector_dir(config: pytest.Config) -> Path:
    """The directory ``--wycheproof-dir`` (or its default) names."""
    return Path(config.getoption("wycheproof_dir"))


@functools.cache
def load_vectors(directory: Path) -> list[Vector] | str:
    """The vectors of ``directory``, or why there are none (a one-line message)."""
    vectors = []
    for prefix, (name, suite) in FILES.items():
        try:
            doc = json.loads((directory / name).read_text())
        except FileNotFoundError:
            return (f"Wycheproof vector {name} not found in {directory}: pass "
                    f"--wycheproof-dir DIR (or set IMG_CRYPT_WYCHEPROOF_DIR) to the "
                    f"shared/vectors/wycheproof directory")
        tests = [t for group in doc["testGroups"] for t in group["tests"]]
        assert len(tests) == doc["numberOfTests"]
        for group in doc["testGroups"]:
            assert (group["type"], group["aead"], group["sha"]) == (
                "ChunkedEncryption", suite.aead_name, "SHA-512")
        for t in tests:
            assert t["result"] in ("valid", "invalid")
            vectors.append(Vector(
                id=f"{prefix}-tc{t['tcId']}", suite=suite, comment=t["comment"],
                key=bytes.fromhex(t["key"]), ctx=bytes.fromhex(t["ctx"]), ct_zhex=t["ct"],
                valid=t["result"] == "valid", flags=frozenset(t["flags"]),
                msg_length=t.get("msgLength"), msg_sha512=t.get("msgSha512"),
                aead_key=bytes.fromhex(t["aeadKey"]) if "aeadKey" in t else None,
                base_nonce=bytes.fromhex(t["baseNonce"]) if "baseNonce" in t else None))
    return vectors


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """``v``: each vector; ``derived``: each vector that gives its derivation. Without the
    vectors, one ``vectors-missing`` case that fails."""
    loaded = load_vectors(vector_dir(metafunc.config))
    for name, derived_only in (("v", False), ("derived", True)):
        if name in metafunc.fixturenames:
            params = [pytest.param(v, id=v.id) for v in loaded
                      if not derived_only or v.aead_key is not None] \
                if isinstance(loaded, list) else [pytest.param(loaded, id="vectors-missing")]
            metafunc.parametrize(name, params, indirect=True)


def _present(param: Vector | str) -> Vector:
    if isinstance(param, str):
        pytest.fail(param, pytrace=False)
    return param


@pytest.fixture
def v(request: pytest.FixtureRequest) -> Vector:
    """One vector (parametrized by ``pytest_generate_tests``)."""
    return _present(request.param)


@pytest.fixture
def derived(request: pytest.FixtureRequest) -> Vector:
    """One vector that gives its AEAD key and base nonce."""
    return _present(request.param)


@pytest.fixture
def vectors(pytestconfig: pytest.Config) -> list[Vector]:
    """All the vectors; fails, naming ``--wycheproof-dir``, when they are absent."""
    loaded = load_vectors(vector_dir(pytestconfig))
    if isinstance(loaded, str):
        pytest.fail(loaded, pytrace=False)
    return loaded


def test_all_70_vectors_are_run(vectors: list[Vector]) -> None:
    assert len(vectors) == EXPECTED_VECTORS
    assert len({v.id for v in vectors}) == EXPECTED_VECTORS
    assert sum(v.suite is COBBLESTONE_256 for v in vectors) == 35
    assert sum(v.valid for v in vectors) == 20
    # every vector that gives a derivation is checked by test_spec_derivation
    assert sum(v.aead_key is not None for v in vectors) > 0


def test_without_the_vectors_every_test_fails_naming_the_option(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "IMG_CRYPT_WYCHEPROOF_DIR"}
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "no:xdist",
         "--wycheproof-dir", str(tmp_path / "none"), "-k", "not without_the_vectors",
         str(Path(__file__))], cwd=REPO, env=env, capture_output=True, text=True, timeout=300,
        check=False)

    assert done.returncode == 1, done.stdout
    summary = done.stdout.strip().splitlines()[-1]
    assert summary.startswith("1 deselected, 6 errors in "), summary  # no skip, no pass
    assert done.stdout.count(f"not found in {tmp_path / 'none'}: pass --wycheproof-dir DIR") \
        >= 6, done.stdout


# --- (a) the streaming decryptor -------------------------------------------------------------

# Pieces smaller than, equal to and just over one ciphertext chunk, then the whole message.
PIECES = [1000, CT_CHUNK, CT_CHUNK + 1, None]


def stream(v: Vector, piece: int | None,
           ct: bytes) -> tuple[PayloadDecryptor, bytes, AuthenticationError | None]:
    """Feed ``ct`` in pieces; return (decryptor, released plaintext, the error or None).

    "Released" is only what ``update_into`` counted (and what ``finalize`` returned).
    """
    piece = piece or max(len(ct), 1)
    decryptor = PayloadDecryptor(v.suite, v.key, v.ctx)
    out = bytearray(decrypt_buffer_size(piece))
    released = bytearray()
    try:
        for start in range(0, len(ct), piece):
            n = decryptor.update_into(memoryview(ct)[start:start + piece], out)
            released += out[:n]
        released += decryptor.finalize()
    except AuthenticationError as e:
        return decryptor, bytes(released), e
    return decryptor, bytes(released), None


def assert_keeps_failing(decryptor: PayloadDecryptor, ct: bytes) -> None:
    out = bytearray(decrypt_buffer_size(len(ct) + 1))
    for data in (b"", b"\x00", ct[:CT_CHUNK], ct):
        with pytest.raises(AuthenticationError):
            decryptor.update_into(memoryview(data), out)
    for _ in range(2):
        with pytest.raises(AuthenticationError):
            decryptor.finalize()


def test_streaming_decryptor(v: Vector) -> None:
    ct = v.ct
    if len(v.key) != v.suite.key_size:
        assert not v.valid and "InvalidKeySize" in v.flags
        with pytest.raises(AuthenticationError):
            PayloadDecryptor(v.suite, v.key, v.ctx)
        return

    for piece in PIECES:
        decryptor, released, error = stream(v, piece, ct)
        if v.valid:
            assert error is None, f"piece {piece}: a valid vector failed"
            assert v.is_plaintext(released), f"piece {piece}: wrong plaintext"
            continue

        assert error is not None, f"piece {piece}: an invalid vector decrypted"
        assert_keeps_failing(decryptor, ct)
        if "PartialPlaintext" not in v.flags:
            assert released == b"", f"piece {piece}: released bytes of an invalid message"
        elif piece is not None and piece <= CT_CHUNK + 1:
            # fed at most one chunk at a time, every valid leading chunk is released
            assert v.is_plaintext(released), (
                f"piece {piece}: released {len(released)} bytes, the vector's valid prefix "
                f"is {v.msg_length}")
        else:
            # fed all at once, a failing call releases nothing of that call
            assert v.msg_length is not None
            assert len(released) in (0, v.msg_length)
            assert not released or v.is_plaintext(released)


# --- (b) the spec derivation -----------------------------------------------------------------

def test_spec_derivation(derived: Vector) -> None:
    ct = derived.ct
    ours = derive(derived.suite, derived.key, ct[:SALT], derived.ctx)
    assert ours.aead_key == derived.aead_key
    assert ours.base_nonce == derived.base_nonce
    assert ours.commitment == ct[SALT:SALT + 32]


def test_derivation_rejects_a_wrong_key_size(vectors: list[Vector]) -> None:
    for v in vectors:
        if "InvalidKeySize" in v.flags:
            with pytest.raises(AuthenticationError):
                derive(v.suite, v.key, bytes(SALT), v.ctx)


# --- (c) the seeking reader ------------------------------------------------------------------

def open_reader(v: Vector, ct: bytes) -> ChunkReader:
    return ChunkReader(v.suite, v.key, v.ctx, len(ct),
                       lambda offset, size: ct[offset:offset + size])


def test_seeking_reader(v: Vector) -> None:
    ct = v.ct
    if v.valid:
        reader = open_reader(v, ct)
        assert reader.plaintext_size == v.msg_length
        assert reader.last_index == v.msg_length // CHUNK
        chunks = b"".join(reader.chunk(i) for i in range(reader.last_index + 1))
        assert v.is_plaintext(chunks)
        assert v.is_plaintext(b"".join(reader.plaintext_range(0, reader.plaintext_size)))
        return

    if "ValidFinalChunk" not in v.flags:
        # the reader authenticates the final chunk up front: every other invalid vector
        # fails right there, before any chunk can be read
        with pytest.raises(AuthenticationError):
            open_reader(v, ct)
        return

    # the final chunk is valid at its index: opening may succeed, reading everything may not
    try:
        reader = open_reader(v, ct)
    except AuthenticationError:
        return
    with pytest.raises(AuthenticationError):
        for index in range(reader.last_index + 1):
            reader.chunk(index)


# --- (d) the chunk-parallel path -------------------------------------------------------------

# (workers, read size): one chunk per job on 3 workers, two chunks per job on 2, a whole
# message per job on 4
PARALLEL = [(3, CT_CHUNK), (2, 2 * CT_CHUNK), (4, 1 << 20)]


def test_parallel_path(v: Vector) -> None:
    ct = v.ct
    for workers, read_size in PARALLEL:
        sink = RecordingSink()
        try:
            _payload_parallel.decrypt(v.suite, v.key, v.ctx, Source(ct), sink,
                                      workers=workers, read_size=read_size)
        except AuthenticationError:
            assert not v.valid, f"{workers} workers: a valid vector failed"
            if "PartialPlaintext" in v.flags:  # every valid leading chunk is released
                assert v.is_plaintext(sink.data), f"{workers} workers: wrong partial plaintext"
            else:
                assert sink.data == b"", f"{workers} workers: released bytes of an invalid message"
            continue
        assert v.valid, f"{workers} workers: an invalid vector decrypted"
        assert v.is_plaintext(sink.data), f"{workers} workers: wrong plaintext"
        again = RecordingSink()
        _payload_parallel.encrypt(v.suite, v.key, v.ctx, Source(sink.data), again,
                                  workers=workers, read_size=read_size, salt=ct[:SALT])
        assert again.data == ct, f"{workers} workers: re-encryption differs"
