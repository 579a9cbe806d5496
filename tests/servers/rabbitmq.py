"""A private RabbitMQ node (Debian ``rabbitmq-server``) on 127.0.0.1, for the listener's tests.

``bash scripts/setup.sh --test`` installs the package with apt (its policy-rc.d or missing
systemd may keep the system node from starting; this fixture never uses it either way). Each
:class:`RealRabbitMQ` runs its own node: its own node name, base directory, Erlang cookie (in
its own ``HOME``), AMQP and distribution ports and its own epmd port, all on 127.0.0.1, so it
neither meets a system node nor another test run. It is started by the Debian script that
``rabbitmq-server`` wraps (the wrapper would switch to the rabbitmq user); a node that cannot
start raises RuntimeError (tests fail, never skip). ``stop()`` ends the processes it started
(the node's process group, then its own epmd) and removes the directory.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import uuid
from pathlib import Path
from typing import Self

from tests.servers._process import clean_env, free_port, tail, terminate, wait_ready

SERVER = Path("/usr/lib/rabbitmq/bin/rabbitmq-server")
CTL = Path("/usr/lib/rabbitmq/bin/rabbitmqctl")
EPMD = "epmd"
START_TIMEOUT = 90.0
AMQP_HEADER = b"AMQP\x00\x00\x09\x01"
INSTALL_HINT = "bash scripts/setup.sh --test installs it (apt-get install rabbitmq-server)"


def amqp_ready(port: int) -> bool:
    """True when an AMQP 0-9-1 broker on 127.0.0.1:``port`` answers the protocol header.

    The broker's first frame is ``connection.start``: a method frame (type 1) on channel 0.
    """
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=2) as sock:
            sock.sendall(AMQP_HEADER)
            return sock.recv(3) == b"\x01\x00\x00"
    except OSError:
        return False


class RealRabbitMQ:
    """One private RabbitMQ node; ``transport_url`` is what oslo.messaging needs."""

    def __init__(self, start_timeout: float = START_TIMEOUT) -> None:
        self.start_timeout = start_timeout
        self.node = f"img-crypt-{uuid.uuid4().hex[:8]}@localhost"
        self.tmpdir: Path | None = None
        self.proc: subprocess.Popen[bytes] | None = None
        self.port = self.dist_port = self.epmd_port = 0
        self.start_seconds: float | None = None

    @property
    def transport_url(self) -> str:
        """``rabbit://guest:guest@127.0.0.1:PORT/`` (guest may log in from loopback only)."""
        return f"rabbit://guest:guest@127.0.0.1:{self.port}/"

    def _dir(self) -> Path:
        if self.tmpdir is None:
            raise RuntimeError("RealRabbitMQ is not started")
        return self.tmpdir

    @property
    def log_dir(self) -> Path:
        """Where the node writes its log (``<node>.log``)."""
        return self._dir() / "log"

    def _env(self) -> dict[str, str]:
        tmp = self._dir()
        loopback = "-kernel inet_dist_use_interface {127,0,0,1}"
        return clean_env({
            "HOME": str(tmp / "home"),  # the Erlang cookie of this node only
            "RABBITMQ_CONF_ENV_FILE": str(tmp / "rabbitmq-env.conf"),  # not /etc/rabbitmq's
            "RABBITMQ_CONFIG_FILE": str(tmp / "rabbitmq"),
            "RABBITMQ_ENABLED_PLUGINS_FILE": str(tmp / "enabled_plugins"),
            "RABBITMQ_NODENAME": self.node,
            "RABBITMQ_NODE_IP_ADDRESS": "127.0.0.1",
            "RABBITMQ_NODE_PORT": str(self.port),
            "RABBITMQ_DIST_PORT": str(self.dist_port),
            "RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS": loopback,
            "RABBITMQ_BASE": str(tmp),
            "RABBITMQ_MNESIA_BASE": str(tmp / "mnesia"),
            "RABBITMQ_LOG_BASE": str(self.log_dir),
            "RABBITMQ_PID_FILE": str(tmp / "rabbitmq.pid"),
            "ERL_EPMD_ADDRESS": "127.0.0.1",
            "ERL_EPMD_PORT": str(self.epmd_port),
        })

    def _failure(self, why: str) -> RuntimeError:
        tmp = self._dir()
        return RuntimeError(f"RabbitMQ node {self.node} did not start: {why}\n"
                            f"--- {self.log_dir / self.node}.log (tail) ---\n"
                            f"{tail(self.log_dir / f'{self.node}.log')}\n"
                            f"--- stdout (tail) ---\n{tail(tmp / 'stdout')}\n"
                            f"--- stderr (tail) ---\n{tail(tmp / 'stderr')}")

    def start(self) -> Self:
        """Start the node and wait until it speaks AMQP; RuntimeError if it does not."""
        if self.proc is not None:
            raise RuntimeError("RealRabbitMQ already started")
        if not SERVER.exists():
            raise RuntimeError(f"rabbitmq-server is not installed ({SERVER}): {INSTALL_HINT}")
        self.tmpdir = Path(tempfile.mkdtemp(prefix="img-crypt-rabbitmq-"))
        try:
            self._launch()
            return self
        except BaseException:
            self.stop()
            raise

    def _launch(self) -> None:
        tmp = self._dir()
        (tmp / "home").mkdir()
        (tmp / "rabbitmq-env.conf").write_text("")
        (tmp / "enabled_plugins").write_text("[].\n")
        self.port, self.dist_port, self.epmd_port = free_port(), free_port(), free_port()
        began = time.monotonic()
        with open(tmp / "stdout", "ab") as out, open(tmp / "stderr", "ab") as err:
            self.proc = subprocess.Popen([str(SERVER)], stdin=subprocess.DEVNULL, stdout=out,
                                         stderr=err, env=self._env(), cwd=tmp,
                                         start_new_session=True)
        try:
            self.start_seconds = wait_ready(self.proc, lambda: amqp_ready(self.port), began,
                                            self.start_timeout)
        except TimeoutError:
            raise self._failure(f"no AMQP answer within {self.start_timeout:.0f} s") from None
        if self.start_seconds is None:
            raise self._failure(f"the process exited with code {self.proc.returncode}")

    def ctl(self, *args: str) -> str:
        """``rabbitmqctl`` on this node (e.g. ``ctl("list_queues", "name", "messages")``)."""
        proc = subprocess.run([str(CTL), "-n", self.node, "-q", *args], capture_output=True,
                              text=True, env=self._env(), timeout=60, check=False)
        if proc.returncode != 0:
            raise RuntimeError(f"rabbitmqctl {' '.join(args)} failed: {proc.stderr[-2000:]}")
        return proc.stdout

    def queues(self) -> dict[str, int]:
        """Queue name -> messages ready, on this node."""
        rows = (line.split("\t") for line in self.ctl("list_queues", "name", "messages_ready",
                                                       "--no-table-headers").splitlines())
        return {row[0]: int(row[1]) for row in rows if len(row) == 2}

    def stop(self) -> None:
        """Stop the node (SIGTERM: the script stops Erlang cleanly), then its group and epmd."""
        proc, self.proc = self.proc, None
        if proc is not None:
            terminate(proc)
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)  # the group we started, if anything is left
        if self.epmd_port and self.tmpdir is not None:
            with contextlib.suppress(OSError, subprocess.SubprocessError):
                subprocess.run([EPMD, "-kill"], env=self._env(), capture_output=True,
                               timeout=10, check=False)  # the epmd of our port only
        if self.tmpdir is not None:
            shutil.rmtree(self.tmpdir, ignore_errors=True)
            self.tmpdir = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


if __name__ == "__main__":  # manual use: python -m tests.servers.rabbitmq
    with RealRabbitMQ() as broker:
        print(f"{broker.transport_url} ({broker.node}) started in {broker.start_seconds:.1f} s")
        print(broker.queues())
