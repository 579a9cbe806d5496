"""barbican_mock answers malformed requests with an HTTP error or a timeout, never a traceback.

Raw sockets send what no HTTP client library would: JSON nested 100000 deep, bad, negative,
repeated and huge Content-Length values, and a client that stalls mid-body or mid-headers.
``wait_idle()`` must not wait for a client that is still (or forever) sending its body.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator

import pytest
import requests

from barbican_mock import MockBarbican
from barbican_mock import server as server_module

TIMEOUT = 0.5  # the per-connection socket timeout, shortened for the tests


@pytest.fixture
def mock(monkeypatch: pytest.MonkeyPatch) -> Iterator[MockBarbican]:
    monkeypatch.setattr(server_module._Handler, "timeout", TIMEOUT)
    with MockBarbican() as server:
        yield server


@pytest.fixture(autouse=True)
def no_traceback(capfd: pytest.CaptureFixture[str]) -> Iterator[None]:
    """Nothing the mock's threads print may be a traceback."""
    yield
    time.sleep(0.05)  # let a failing handler thread finish printing
    err = capfd.readouterr().err
    assert "Traceback" not in err and "Exception" not in err, err


def connect(mock: MockBarbican) -> socket.socket:
    sock = socket.create_connection((mock.host, mock.port), timeout=10)
    return sock


def read_all(sock: socket.socket) -> bytes:
    chunks = []
    while chunk := sock.recv(65536):
        chunks.append(chunk)
    return b"".join(chunks)


def exchange(mock: MockBarbican, request: bytes) -> bytes:
    with connect(mock) as sock:
        sock.sendall(request)
        return read_all(sock)


def post(body: bytes, length: str | None = None, extra: str = "") -> bytes:
    declared = str(len(body)) if length is None else length
    return (f"POST /v1/secrets HTTP/1.1\r\nHost: x\r\nX-Project-Id: p\r\n"
            f"Content-Type: application/json\r\nContent-Length: {declared}\r\n{extra}\r\n"
            ).encode() + body


def status(reply: bytes) -> int:
    return int(reply.split(b" ", 2)[1])


def still_serves(mock: MockBarbican) -> None:
    assert requests.get(mock.url + "/", timeout=5).status_code == 300


@pytest.mark.parametrize("depth", [1000, 25000, 100000])
def test_deeply_nested_json_is_a_400(mock: MockBarbican, depth: int) -> None:
    reply = exchange(mock, post(b"[" * depth))
    assert status(reply) == 400 and b"Malformed JSON" in reply
    still_serves(mock)


@pytest.mark.parametrize("length", ["abc", "-5", "1e3", "0x10", " ", "+7"])
def test_a_content_length_that_is_not_a_count_is_a_400(mock: MockBarbican,
                                                      length: str) -> None:
    reply = exchange(mock, post(b"{}", length))
    assert status(reply) == 400
    assert ("POST", "/v1/secrets", 400) in mock.requests_log()


def test_two_different_content_lengths_are_a_400(mock: MockBarbican) -> None:
    reply = exchange(mock, post(b"{}", "2", "Content-Length: 3\r\n"))
    assert status(reply) == 400


@pytest.mark.parametrize("length", [str(10 ** 15), str(2 ** 64), "9" * 400])
def test_a_huge_content_length_is_refused_unread(mock: MockBarbican, length: str) -> None:
    started = time.monotonic()
    reply = exchange(mock, post(b"{}", length))
    assert status(reply) == 413
    assert time.monotonic() - started < TIMEOUT  # answered at once, not after waiting
    still_serves(mock)


def test_a_client_that_stalls_mid_body_times_out_with_a_408(mock: MockBarbican) -> None:
    with connect(mock) as sock:
        sock.sendall(post(b'{"name": "x"', "100"))
        started = time.monotonic()
        reply = read_all(sock)
    assert status(reply) == 408
    assert TIMEOUT * 0.8 <= time.monotonic() - started < TIMEOUT + 5
    assert mock.counts()["secrets"] == 0
    still_serves(mock)


def test_a_client_that_closes_mid_body_is_dropped_quietly(mock: MockBarbican) -> None:
    with connect(mock) as sock:
        sock.sendall(post(b'{"name"', "100"))
    still_serves(mock)
    assert mock.counts()["secrets"] == 0


def test_a_client_that_stalls_mid_headers_is_dropped(mock: MockBarbican) -> None:
    with connect(mock) as sock:
        sock.sendall(b"GET /v1/secrets HTTP/1.1\r\nX-Proj")
        assert read_all(sock) == b""  # closed after the timeout, no answer
    still_serves(mock)


def test_wait_idle_returns_while_a_client_stalls_mid_body(mock: MockBarbican,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(server_module._Handler, "timeout", 30.0)
    with connect(mock) as sock:
        sock.sendall(post(b'{"name": "x"', "100"))
        time.sleep(0.2)  # the server is now blocked reading the body
        started = time.monotonic()
        mock.wait_idle(timeout=2.0)
        assert time.monotonic() - started < 1.0
