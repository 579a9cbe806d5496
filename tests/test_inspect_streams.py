"""``inspect`` of a stream reads the header and stops (issue 11, behaviour 10).

A pipe that never ends after a valid header must not hang it: the payload of a stream is
not read, and its payload and plaintext sizes are reported as unknown (text and --json).
"""

from __future__ import annotations

import io
import json
import os
import sys
import threading
from collections.abc import Callable, Iterator
from typing import BinaryIO

import pytest

from img_crypt import envelope
from img_crypt.envelope import Kek
from tests.support.cli import Run, cli

KEK = Kek("local", "9b1f2e3d-4c5b-4a69-8877-665544332211", bytes(range(32)))
TIMEOUT = 10.0


def encrypted(size: int = 40000) -> bytes:
    sink = io.BytesIO()
    envelope.encrypt(io.BytesIO(os.urandom(size)), sink, [KEK])
    return sink.getvalue()


@pytest.fixture
def endless_pipe() -> Iterator[Callable[[bytes], BinaryIO]]:
    """``open(prefix)``: a pipe a thread fills with ``prefix`` then zeros, forever."""
    stop = threading.Event()
    threads: list[threading.Thread] = []
    readers: list[BinaryIO] = []

    def writer(fd: int, prefix: bytes) -> None:
        try:
            os.write(fd, prefix)
            block = bytes(65536)
            while not stop.is_set():
                os.write(fd, block)
        except OSError:
            pass  # the reader closed its end
        finally:
            os.close(fd)

    def start(prefix: bytes) -> BinaryIO:
        read_fd, write_fd = os.pipe()
        thread = threading.Thread(target=writer, args=(write_fd, prefix), daemon=True)
        thread.start()
        threads.append(thread)
        reader = os.fdopen(read_fd, "rb", buffering=0)
        readers.append(reader)
        return reader

    yield start
    stop.set()
    for reader in readers:
        reader.close()
    for thread in threads:
        thread.join(timeout=TIMEOUT)


class FakeStdin:
    """Stands in for ``sys.stdin``: the CLI reads ``sys.stdin.buffer``."""

    def __init__(self, buffer: BinaryIO) -> None:
        self.buffer = buffer

    def isatty(self) -> bool:
        return False


def within_timeout(fn: Callable[[], Run]) -> Run:
    """Run ``fn`` in a thread; fail (instead of hanging) if it takes over TIMEOUT seconds."""
    result: list[Run] = []
    thread = threading.Thread(target=lambda: result.append(fn()), daemon=True)
    thread.start()
    thread.join(TIMEOUT)
    assert not thread.is_alive(), f"inspect still running after {TIMEOUT} s on an endless pipe"
    return result[0]


def test_envelope_inspect_of_an_endless_stream_returns_the_header(
        endless_pipe: Callable[[bytes], BinaryIO]) -> None:
    data = encrypted()
    pipe = endless_pipe(data)
    box: list[envelope.Inspection] = []
    thread = threading.Thread(target=lambda: box.append(envelope.inspect(pipe)), daemon=True)
    thread.start()
    thread.join(TIMEOUT)
    assert not thread.is_alive(), "envelope.inspect hangs on an endless stream"
    (info,) = box
    assert info.header.slots[0].key_id == KEK.key_id
    assert (info.payload_size, info.plaintext_size, info.file_size) == (None, None, None)


def test_inspect_of_a_sized_input_still_reports_every_size() -> None:
    data = encrypted(40000)
    info = envelope.inspect(io.BytesIO(data), size=len(data))
    assert info.plaintext_size == 40000 and info.file_size == len(data)


@pytest.mark.parametrize("fmt", ["json", "text"])
def test_cli_inspect_of_an_endless_pipe_reports_unknown_sizes(
        endless_pipe: Callable[[bytes], BinaryIO], monkeypatch: pytest.MonkeyPatch,
        fmt: str) -> None:
    monkeypatch.setattr(sys, "stdin", FakeStdin(endless_pipe(encrypted())))
    argv = ["inspect", "-"] + (["--json"] if fmt == "json" else [])
    run = within_timeout(lambda: cli(*argv))
    assert run.code == 0, run.err
    if fmt == "json":
        info = json.loads(run.out)
        assert info["payload_size"] is None and info["plaintext_size"] is None
        assert info["key_slots"] == [{"kind": "local", "key_id": KEK.key_id}]
    else:
        assert "payload:    unknown (a stream: not read past the header)" in run.out
        assert "plaintext:  unknown (a stream: not read past the header)" in run.out
        assert KEK.key_id in run.out


def test_cli_inspect_of_a_stream_that_stalls_after_the_header_returns(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The writer sends a header and then nothing, without closing: inspect must not wait."""
    read_fd, write_fd = os.pipe()
    data = encrypted()
    header_size = envelope.inspect(io.BytesIO(data)).header_size
    os.write(write_fd, data[:header_size])
    with os.fdopen(read_fd, "rb", buffering=0) as reader:
        monkeypatch.setattr(sys, "stdin", FakeStdin(reader))
        try:
            run = within_timeout(lambda: cli("inspect", "-", "--json"))
        finally:
            os.close(write_fd)
    assert run.code == 0 and json.loads(run.out)["payload_size"] is None
