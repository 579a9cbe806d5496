"""The private RabbitMQ node of the listener's tests (tests/servers/rabbitmq.py).

It listens on 127.0.0.1 only, speaks AMQP, fails (never skips) when it cannot start, and its
stop leaves no process and no port behind.
"""

from __future__ import annotations

import ipaddress
import socket
from pathlib import Path

import pytest

from tests.servers import rabbitmq as rabbitmq_module
from tests.servers.rabbitmq import RealRabbitMQ, amqp_ready

LISTEN = "0A"  # the TCP state in /proc/net/tcp


def _address(hex_ip: str) -> str:
    """An address of /proc/net/tcp{,6}: 32-bit words in host (little-endian) order."""
    raw = bytes.fromhex(hex_ip)
    return str(ipaddress.ip_address(b"".join(raw[i:i + 4][::-1] for i in range(0, len(raw), 4))))


def listening(port: int) -> set[str]:
    """Addresses with a TCP listener on ``port`` (from /proc/net/tcp and tcp6)."""
    found = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            local, state = line.split()[1], line.split()[3]
            ip, hex_port = local.split(":")
            if state == LISTEN and int(hex_port, 16) == port:
                found.add(_address(ip))
    return found


def in_group(group: int) -> list[int]:
    """Pids of the live processes of process group ``group`` (field 5 of /proc/PID/stat)."""
    pids = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue  # it ended meanwhile
        if int(fields[2]) == group and fields[0] != "Z":
            pids.append(int(stat.parent.name))
    return pids


def test_a_node_that_cannot_start_fails_with_the_install_hint(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(rabbitmq_module, "SERVER", tmp_path / "no-rabbitmq-server")
    with pytest.raises(RuntimeError, match=r"scripts/setup\.sh --test"):
        RealRabbitMQ().start()


def test_a_port_without_a_broker_is_not_ready() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        port = sock.getsockname()[1]
        assert not amqp_ready(port)  # accepts, never answers the protocol header


def test_the_node_listens_on_loopback_only_and_stop_leaves_nothing_behind() -> None:
    node = RealRabbitMQ().start()
    try:
        assert node.transport_url == f"rabbit://guest:guest@127.0.0.1:{node.port}/"
        assert amqp_ready(node.port)
        for port in (node.port, node.dist_port, node.epmd_port):
            assert listening(port) <= {"127.0.0.1", "::1"} and listening(port), port
        assert node.queues() == {}
        assert node.proc is not None
        group = node.proc.pid
        tmpdir = node.tmpdir
    finally:
        node.stop()
    assert in_group(group) == []
    for port in (node.port, node.dist_port, node.epmd_port):
        assert listening(port) == set(), port
    assert tmpdir is not None and not tmpdir.exists()

