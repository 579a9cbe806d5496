"""The chunk-parallel path (img_crypt._parallel, img_crypt._payload_parallel, --threads).

Its bytes are cryptography's streaming Cobblestone bytes for every size and worker count; it
releases plaintext only in order and only authenticated; it holds a bounded number of chunks;
pipes, regular files and in-memory inputs all work; ``--threads`` and ``IMG_CRYPT_THREADS``
choose the workers (default: the usable cores), and a bad value is one usage-error line.
"""

from __future__ import annotations

import io
import os
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, BinaryIO

import pytest
from cryptography.cobblestone import Cobblestone256Decryptor, Cobblestone256Encryptor
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from img_crypt import _parallel, _payload_parallel, envelope
from img_crypt._cobblestone import CHUNK, COBBLESTONE_256, CT_CHUNK, PREFIX, SALT
from img_crypt._io import Source
from img_crypt.envelope import Kek, KekLookup
from img_crypt.errors import AuthenticationError, InvalidValueError
from tests.support.cli import Run, cli
from tests.support.data import plaintext
from tests.support.sinks import RecordingSink

PipeFeeder = Callable[[bytes, int], BinaryIO]  # the conftest fixture ``pipe_feeder``
KEY = bytes(range(32))
CONTEXT = b"img-crypt payload v1\x00\x01\x01\x00"
SIZES = [0, 1, CHUNK - 1, CHUNK, CHUNK + 1, 2 * CHUNK, 7 * CHUNK + 3, 20 * CHUNK]
READ_SIZES = [1, CHUNK, 2 * CHUNK + 5, 1 << 20]


def library_payload(plain: bytes) -> bytes:
    """pyca/cryptography's streaming Cobblestone-256 ciphertext (its own random salt)."""
    encryptor = Cobblestone256Encryptor(KEY, CONTEXT)
    return encryptor.update(plain) + encryptor.finalize()


def parallel_payload(plain: bytes, salt: bytes, workers: int, read_size: int) -> bytes:
    sink = RecordingSink()
    read, size = _payload_parallel.encrypt(COBBLESTONE_256, KEY, CONTEXT, Source(plain),
                                           sink, workers=workers, read_size=read_size, salt=salt)
    assert (read, size) == (len(plain), len(sink.data))
    return sink.data


def parallel_plaintext(payload: bytes, workers: int, read_size: int) -> bytes:
    sink = RecordingSink()
    plain, size = _payload_parallel.decrypt(COBBLESTONE_256, KEY, CONTEXT, Source(payload),
                                            sink, workers=workers, read_size=read_size)
    assert (plain, size) == (len(sink.data), len(payload))
    return sink.data


# --- the bytes are the library's -------------------------------------------------------------

@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(size=st.sampled_from(SIZES) | st.integers(0, 9 * CHUNK), workers=st.integers(1, 4),
       read_size=st.sampled_from(READ_SIZES) | st.integers(1, 5 * CT_CHUNK))
def test_parallel_encryption_is_byte_identical_to_the_library(size: int, workers: int,
                                                              read_size: int) -> None:
    plain = plaintext(size)
    reference = library_payload(plain)

    ours = parallel_payload(plain, reference[:SALT], workers, read_size)

    assert ours == reference
    assert parallel_plaintext(reference, workers, read_size) == plain


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("threads", [1, 2, 3, 4])
def test_envelope_output_decrypts_with_the_library_for_every_thread_count(
        size: int, threads: int, kek: Kek, lookup: KekLookup) -> None:
    plain = plaintext(size)
    sink = RecordingSink()
    summary = envelope.encrypt(io.BytesIO(plain), sink, [kek], threads=threads, read_size=40000)
    payload = sink.data[summary.header_size:]
    context = b"img-crypt payload v1\x00" + summary.header.binding()

    library = Cobblestone256Decryptor(_dek(sink.data, lookup), context)

    assert library.update(payload) + library.finalize() == plain
    assert (summary.plaintext_size, summary.payload_size) == (size, len(payload))


def _dek(file: bytes, lookup: KekLookup) -> bytes:
    from img_crypt import _keyslots
    from img_crypt.format import parse, parse_prefix
    raw = file[:parse_prefix(file[:12])]
    return _keyslots.open_dek(parse(raw), raw, lookup)


@pytest.mark.parametrize("threads", [2, 3])
@pytest.mark.parametrize("size", [0, CHUNK, 5 * CHUNK + 9])
def test_regular_files_are_read_by_offset_and_round_trip(size: int, threads: int, kek: Kek,
                                                         lookup: KekLookup,
                                                         tmp_path: Path) -> None:
    plain = plaintext(size)
    (tmp_path / "plain").write_bytes(b"skip" + plain)
    with (tmp_path / "plain").open("rb") as src, (tmp_path / "enc").open("wb") as dst:
        src.read(4)  # a buffered reader, not at 0: the offset is its logical position
        envelope.encrypt(src, dst, [kek], threads=threads, read_size=2 * CHUNK)
        assert src.tell() == 4 + size
    with (tmp_path / "enc").open("rb", buffering=0) as src:
        sink = RecordingSink()
        envelope.decrypt(src, sink, lookup, threads=threads, read_size=2 * CT_CHUNK)
        assert src.tell() == (tmp_path / "enc").stat().st_size
    assert sink.data == plain


def test_a_pipe_decrypts_in_parallel_in_order(pipe_feeder: PipeFeeder, kek: Kek,
                                              lookup: KekLookup) -> None:
    plain = plaintext(40 * CHUNK + 11)
    enc = io.BytesIO()
    envelope.encrypt(pipe_feeder(plain, 7000), enc, [kek], threads=3, read_size=CHUNK)
    sink = RecordingSink()

    envelope.decrypt(pipe_feeder(enc.getvalue(), 5000), sink, lookup, threads=3,
                     read_size=CT_CHUNK)

    assert sink.data == plain


def test_a_wrong_key_or_context_fails_before_any_chunk_is_read() -> None:
    payload = library_payload(plaintext(3 * CHUNK))
    for key, context in ((bytes(32), CONTEXT), (KEY, CONTEXT + b"x")):
        pulled: list[int] = []

        def views(pulled: list[int] = pulled) -> Iterator[bytes]:
            yield payload[:PREFIX]
            pulled.append(1)
            yield payload[PREFIX:]

        with pytest.raises(AuthenticationError):
            _payload_parallel.decrypt(COBBLESTONE_256, key, context, Source(views()),
                                      RecordingSink(), workers=2, read_size=CT_CHUNK)
        assert pulled == []


@pytest.mark.parametrize("cut", [0, 10, PREFIX, PREFIX + 15, PREFIX + CT_CHUNK,
                                 PREFIX + 2 * CT_CHUNK, PREFIX + 2 * CT_CHUNK + 15])
@pytest.mark.parametrize("read_size", [1, 3 * CT_CHUNK])
def test_a_truncated_payload_fails_after_its_authenticated_chunks(cut: int,
                                                                  read_size: int) -> None:
    plain = plaintext(3 * CHUNK + 100)
    payload = library_payload(plain)
    sink = RecordingSink()

    with pytest.raises(AuthenticationError):
        _payload_parallel.decrypt(COBBLESTONE_256, KEY, CONTEXT, Source(payload[:cut]), sink,
                                  workers=3, read_size=read_size)

    whole = max(cut - PREFIX, 0) // CT_CHUNK
    assert sink.data == plain[:CHUNK * whole]


# --- order and memory --------------------------------------------------------------------------

def test_jobs_finishing_out_of_order_are_written_in_order(
        monkeypatch: pytest.MonkeyPatch) -> None:
    original = _parallel.Chunks.cipher

    def slow_early_jobs(self: _parallel.Chunks, job: Any) -> None:
        time.sleep(0.02 if job.first % 3 == 0 else 0)  # later jobs overtake earlier ones
        original(self, job)

    monkeypatch.setattr(_parallel.Chunks, "cipher", slow_early_jobs)
    plain = plaintext(12 * CHUNK + 5)
    reference = library_payload(plain)
    sink = RecordingSink()

    _payload_parallel.decrypt(COBBLESTONE_256, KEY, CONTEXT, Source(reference), sink,
                              workers=4, read_size=CT_CHUNK)

    assert sink.data == plain
    assert parallel_payload(plain, reference[:SALT], 4, CHUNK) == reference


def test_a_failing_chunk_stops_the_release_at_it(monkeypatch: pytest.MonkeyPatch) -> None:
    plain = plaintext(10 * CHUNK + 5)
    payload = bytearray(library_payload(plain))
    payload[PREFIX + 6 * CT_CHUNK + 3] ^= 1  # chunk 6
    sink = RecordingSink()

    with pytest.raises(AuthenticationError):
        _payload_parallel.decrypt(COBBLESTONE_256, KEY, CONTEXT, Source(bytes(payload)), sink,
                                  workers=4, read_size=4 * CT_CHUNK)  # jobs 0-3, 4-7, 8-10

    assert sink.data == plain[:6 * CHUNK]


def test_memory_is_bounded_by_the_jobs_in_flight(monkeypatch: pytest.MonkeyPatch) -> None:
    made: list[int] = []
    original = _parallel.Chunks.new_job

    def counting(self: _parallel.Chunks) -> Any:
        made.append(1)
        return original(self)

    monkeypatch.setattr(_parallel.Chunks, "new_job", counting)
    plain = plaintext(200 * CHUNK)
    pulled = 0

    def pieces() -> Iterator[bytes]:
        nonlocal pulled
        for start in range(0, len(plain), CHUNK):
            pulled += CHUNK
            yield plain[start:start + CHUNK]

    class Watching(RecordingSink):
        def write(self, data: bytes | bytearray | memoryview) -> int:
            # never more than the jobs in flight (and the one being filled) read ahead
            assert pulled - (len(self.data) - PREFIX) // CT_CHUNK * CHUNK <= 5 * CHUNK
            return super().write(data)

    _payload_parallel.encrypt(COBBLESTONE_256, KEY, CONTEXT, Source(pieces()), Watching(),
                              workers=3, read_size=CHUNK)

    assert len(made) == 3 + 2


def test_a_read_error_in_a_worker_is_raised_and_the_workers_are_joined(tmp_path: Path) -> None:
    before = threading.active_count()

    class Failing(_parallel.FileReader):
        def fill(self, buf: memoryview, offset: int) -> int:
            if offset >= 3 * CHUNK:
                raise OSError(5, "Input/output error")
            return super().fill(buf, offset)

    (tmp_path / "plain").write_bytes(plaintext(10 * CHUNK))
    with (tmp_path / "plain").open("rb") as file:
        chunks = _parallel.Chunks(_derived(), encrypt=True, per_job=1)
        with pytest.raises(OSError, match="Input/output"):
            _parallel.run(chunks, Failing(file.fileno(), 0), RecordingSink(), workers=3,
                          inflight=5)

    assert threading.active_count() == before


def _derived() -> Any:
    from img_crypt._cobblestone import derive
    return derive(COBBLESTONE_256, KEY, bytes(SALT), CONTEXT)


# --- how many threads --------------------------------------------------------------------------

def test_the_default_is_one_thread_and_auto_the_usable_cores_at_most_eight(
        monkeypatch: pytest.MonkeyPatch) -> None:
    if hasattr(os, "sched_getaffinity"):
        assert _payload_parallel.usable_cores() == len(os.sched_getaffinity(0))
    for cores, expected in ((1, 1), (2, 2), (8, 8), (64, 8)):
        monkeypatch.setattr(_payload_parallel, "usable_cores", lambda cores=cores: cores)
        assert _payload_parallel.workers(None) == 1
        assert _payload_parallel.default_threads() == expected


def _count_parallel_runs(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    runs: list[int] = []
    original = _parallel.run

    def counting(*args: Any, **kwargs: Any) -> tuple[int, int]:
        runs.append(kwargs["workers"])
        return original(*args, **kwargs)

    monkeypatch.setattr(_parallel, "run", counting)
    return runs


def test_one_thread_is_the_streaming_path_and_more_use_the_pool(
        monkeypatch: pytest.MonkeyPatch, kek: Kek, lookup: KekLookup) -> None:
    runs = _count_parallel_runs(monkeypatch)
    plain = plaintext(3 * CHUNK)
    for threads in (1, 2, 5):
        enc = io.BytesIO()
        envelope.encrypt(io.BytesIO(plain), enc, [kek], threads=threads)
        sink = RecordingSink()
        envelope.decrypt(io.BytesIO(enc.getvalue()), sink, lookup, threads=threads)
        assert sink.data == plain
    assert runs == [2, 2, 5, 5]
    monkeypatch.setattr(_payload_parallel, "usable_cores", lambda: 1)
    envelope.encrypt(io.BytesIO(plain), io.BytesIO(), [kek])
    assert runs == [2, 2, 5, 5]


@pytest.mark.parametrize("threads", [0, -1, 257, True, 2.0, "2"])
def test_the_library_refuses_a_bad_thread_count(threads: Any, kek: Kek,
                                                lookup: KekLookup) -> None:
    with pytest.raises(InvalidValueError, match="threads must be a whole number from 1 to 256"):
        envelope.encrypt(io.BytesIO(b"x"), io.BytesIO(), [kek], threads=threads)
    with pytest.raises(InvalidValueError):
        envelope.decrypt(io.BytesIO(b"x"), io.BytesIO(), lookup, threads=threads)


@pytest.fixture
def store(tmp_path: Path) -> Path:
    """A local key store with one key, and a plaintext file beside it."""
    (tmp_path / "plain").write_bytes(plaintext(6 * CHUNK + 1))
    (tmp_path / "keys").mkdir(mode=0o700)
    return tmp_path / "keys"


def _encrypt(store: Path, *extra: str) -> Run:
    work = store.parent
    return cli("encrypt", str(work / "plain"), str(work / "enc"), "--key-store", str(store),
               *extra)


@pytest.mark.parametrize("env", [None, "1", "3", "auto"])
@pytest.mark.parametrize("flag", [None, "1", "2", "auto"])
def test_the_cli_takes_threads_from_the_flag_then_the_environment(
        store: Path, monkeypatch: pytest.MonkeyPatch, flag: str | None,
        env: str | None) -> None:
    runs = _count_parallel_runs(monkeypatch)
    if env is None:
        monkeypatch.delenv("IMG_CRYPT_THREADS", raising=False)
    else:
        monkeypatch.setenv("IMG_CRYPT_THREADS", env)
    monkeypatch.setattr(_payload_parallel, "usable_cores", lambda: 4)
    extra = ["--threads", flag] if flag else []

    assert _encrypt(store, *extra).code == 0
    result = cli("decrypt", str(store.parent / "enc"), str(store.parent / "back"),
                 "--key-store", str(store), *extra)

    assert result.code == 0, result.err
    assert (store.parent / "back").read_bytes() == (store.parent / "plain").read_bytes()
    asked = flag or env or "1"
    expected = 4 if asked == "auto" else int(asked)
    assert runs == ([] if expected == 1 else [expected, expected])


@pytest.mark.parametrize("bad", ["0", "-1", "257", "abc", "1.5", "", " 2", "+2", "2_0", "0x2"])
@pytest.mark.parametrize("where", ["flag", "env"])
@pytest.mark.parametrize("command", ["encrypt", "decrypt"])
def test_a_bad_thread_count_is_one_usage_error_line(store: Path,
                                                    monkeypatch: pytest.MonkeyPatch,
                                                    bad: str, where: str,
                                                    command: str) -> None:
    if where == "env" and bad == "":
        bad = "x"  # an empty variable means unset
    monkeypatch.setenv("IMG_CRYPT_THREADS", bad if where == "env" else "2")
    extra = [f"--threads={bad}"] if where == "flag" else []
    work = store.parent

    result = cli(command, str(work / "plain"), str(work / "out"), "--key-store", str(store),
                 *extra)

    assert result.code == 2
    assert result.err.count("\n") == 1 and result.err.startswith("img-crypt: error: "), \
        result.err
    assert ("--threads" if where == "flag" else "IMG_CRYPT_THREADS") in result.err
    assert result.out == ""
    assert not (work / "out").exists()
    assert list(store.iterdir()) == []  # no key created


def test_a_tampered_file_fails_through_the_cli_on_several_threads(store: Path) -> None:
    assert _encrypt(store, "--threads", "1").code == 0
    data = bytearray((store.parent / "enc").read_bytes())
    data[-CT_CHUNK] ^= 1
    (store.parent / "enc").write_bytes(bytes(data))

    result = cli("decrypt", str(store.parent / "enc"), str(store.parent / "back"),
                 "--key-store", str(store), "--threads", "3")

    assert result.code == 1
    assert result.err.startswith("img-crypt: error: authentication failed")
    assert not (store.parent / "back").exists()


def test_a_temporary_file_sink_gets_the_whole_output(kek: Kek, lookup: KekLookup) -> None:
    plain = plaintext(9 * CHUNK + 2)
    with tempfile.TemporaryFile() as enc, tempfile.TemporaryFile() as back:
        envelope.encrypt(io.BytesIO(plain), enc, [kek], threads=2)
        enc.seek(0)
        envelope.decrypt(enc, back, lookup, threads=2)
        back.seek(0)
        assert back.read() == plain
