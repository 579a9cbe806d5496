"""Shared pytest fixtures. Several authors append here: add sections, do not rewrite others."""

from __future__ import annotations

import os
import threading
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO

import pytest

from barbican_mock import MockBarbican
from img_crypt.envelope import Kek, KekLookup
from img_crypt.keys.local import LocalKeyStore
from tests.support.sinks import RecordingSink, ShortWriteSink

if TYPE_CHECKING:
    from img_crypt.keys.barbican import BarbicanKeyManager

# --- stream fixtures (test_roundtrip, test_range, test_wycheproof) ----------------------------
# kek, lookup, recording_sink, short_write_sink, pipe_feeder


@pytest.fixture(scope="session")
def kek() -> Kek:
    """One fixed local KEK for the whole run."""
    return Kek(kind="local", key_id=str(uuid.uuid4()), key=os.urandom(32))


@pytest.fixture(scope="session")
def lookup(kek: Kek) -> KekLookup:
    """Resolves exactly ``kek`` and nothing else."""
    return lambda kind, kid: kek.key if (kind, kid) == (kek.kind, kek.key_id) else None


@pytest.fixture
def recording_sink() -> RecordingSink:
    return RecordingSink()


@pytest.fixture
def short_write_sink() -> ShortWriteSink:
    return ShortWriteSink(1000)


PipeFeeder = Callable[[bytes, int], BinaryIO]


@pytest.fixture
def pipe_feeder() -> Iterator[PipeFeeder]:
    """``feed(data, piece)``: the read end of an OS pipe that a thread fills ``piece`` bytes
    per ``os.write``; unbuffered (``buffering=0``), so reads see the writer's pieces."""
    readers: list[BinaryIO] = []
    threads: list[threading.Thread] = []

    def writer(fd: int, data: bytes, piece: int) -> None:
        try:
            view = memoryview(data)
            for start in range(0, len(view), piece):
                part = view[start:start + piece]
                while part:
                    part = part[os.write(fd, part):]
        except BrokenPipeError:
            pass  # the reader stopped early (a test that expects an error)
        finally:
            os.close(fd)

    def feed(data: bytes, piece: int) -> BinaryIO:
        read_fd, write_fd = os.pipe()
        thread = threading.Thread(target=writer, args=(write_fd, data, piece), daemon=True)
        thread.start()
        reader = os.fdopen(read_fd, "rb", buffering=0)
        readers.append(reader)
        threads.append(thread)
        return reader

    yield feed
    for reader in readers:
        reader.close()  # unblocks a writer still waiting: it gets EPIPE
    for thread in threads:
        thread.join(timeout=10)
        assert not thread.is_alive(), "pipe writer thread did not finish"


# --- real Barbican 23.0.0 (tests/test_contract_barbican.py) -----------------------------------
# real_barbican: one server per session (per xdist worker); the venv in .servers/ is installed
# once under a file lock. A server that cannot start fails the tests (RuntimeError), never skips.


@pytest.fixture(scope="session")
def real_barbican() -> Iterator[object]:
    """A started ``tests.servers.barbican.RealBarbican`` on 127.0.0.1 (``.url``)."""
    from tests.servers.barbican import RealBarbican

    with RealBarbican() as server:
        yield server


# --- real Glance 33.0.0 (tests/test_glance_fixture.py and the Glance plugin e2e tests) ---------
# glance_venv: the venv in .servers/ with Glance, gunicorn and this repository (editable, so our
# entry points load), installed once under a file lock. Tests start their own
# ``tests.servers.glance.RealGlance`` with the plugin configuration they need.


@pytest.fixture(scope="session")
def glance_venv() -> Path:
    """``tests.servers.glance.ensure_venv()``: the path of the Glance virtualenv."""
    from tests.servers.glance import ensure_venv

    return ensure_venv()


# --- options --------------------------------------------------------------------------------

WYCHEPROOF_ENV = "IMG_CRYPT_WYCHEPROOF_DIR"
WYCHEPROOF_DEFAULT = Path(__file__).resolve().parents[2] / "shared" / "vectors" / "wycheproof"


def pytest_addoption(parser: pytest.Parser) -> None:
    """``--wycheproof-dir``: where tests/test_wycheproof.py reads its vectors."""
    parser.addoption("--wycheproof-dir", metavar="DIR",
                     default=os.environ.get(WYCHEPROOF_ENV) or str(WYCHEPROOF_DEFAULT),
                     help=f"the Wycheproof vectors directory (default: ${WYCHEPROOF_ENV}, else "
                          f"../shared/vectors/wycheproof beside the repository); absent "
                          f"vectors fail tests/test_wycheproof.py")


# --- key managers (tests/support/backends.py has the parametrized local/mock ones) -----------

@pytest.fixture
def store(tmp_path: Path) -> LocalKeyStore:
    """An empty local key store in ``tmp_path / "keys"`` (created on first write)."""
    return LocalKeyStore(tmp_path / "keys")


@pytest.fixture
def down_url() -> str:
    """The URL of a Barbican that has stopped: nothing listens there."""
    with MockBarbican() as gone:
        return gone.url


# --- process state ----------------------------------------------------------------------------

@pytest.fixture
def open_umask() -> Iterator[None]:
    """Run with umask 0, so only the code under test decides a new file's mode."""
    old = os.umask(0)
    try:
        yield
    finally:
        os.umask(old)


@pytest.fixture(scope="module")
def barbican_km(real_barbican: Any) -> BarbicanKeyManager:
    """Our Barbican key manager on the real Barbican, as the e2e tests' project (no auth)."""
    from img_crypt.keys.connect import connect
    from tests.support.e2e_glance import PROJECT

    return connect(url=real_barbican.url, project_id=PROJECT)


# --- a private RabbitMQ node (tests/test_e2e_listener_rabbitmq.py) -----------------------------
# One node per session (per xdist worker) on 127.0.0.1 with its own name, ports and epmd; a
# node that cannot start fails the tests (RuntimeError), never skips.


@pytest.fixture(scope="session")
def rabbitmq() -> Iterator[object]:
    """A started ``tests.servers.rabbitmq.RealRabbitMQ`` (``.transport_url``, ``.queues()``)."""
    from tests.servers.rabbitmq import RealRabbitMQ

    with RealRabbitMQ() as broker:
        yield broker


# --- the delete hook's background worker (img_crypt/glance/retry_worker.py) ---------------------


@pytest.fixture
def own_retry_worker(monkeypatch: pytest.MonkeyPatch) -> Iterator[object]:
    """A fresh ``RetryWorker`` as this process's shared one for one test; stopped after it, so
    no retry of one test runs on during the next."""
    from img_crypt.glance import retry_worker

    worker = retry_worker.RetryWorker()
    monkeypatch.setattr(retry_worker, "shared", lambda: worker)
    yield worker
    worker.stop(timeout=10)


# --- a real cloud: Keystone 30, Barbican 23 (shipped default policies), Glance 33 ------------
# real_cloud: one stack per session (per xdist worker), Glance configured with README.md's Glance
# block (tests/servers/cloud.py). A server that cannot start fails the tests, never skips.


@pytest.fixture(scope="session")
def real_cloud() -> Iterator[Any]:
    """A started ``tests.servers.cloud.Cloud`` (Keystone, Barbican and Glance on 127.0.0.1)."""
    from tests.servers.cloud import start_cloud

    with start_cloud() as cloud:
        yield cloud


# --- Barbican endpoints shared per process (img_crypt.keys._barbican_http.shared_endpoint) -----

@pytest.fixture(autouse=True)
def _fresh_shared_barbican_endpoints() -> Iterator[None]:
    """Each test discovers its Barbican anew: a mock of another era may reuse a port."""
    from img_crypt.keys import _barbican_http

    _barbican_http._shared.clear()
    yield
    _barbican_http._shared.clear()


@pytest.fixture(autouse=True)
def _no_recent_registrations() -> Iterator[None]:
    """Each test starts with no consumer records noted by an import (img_crypt.glance.recent)."""
    from img_crypt.glance import recent

    recent.clear()
    yield
    recent.clear()


# --- a client of the module's real Glance (modules that define a ``glance`` fixture) --------


@pytest.fixture
def client(glance: Any) -> Iterator[Any]:
    """A ``GlanceClient`` of the requesting module's ``glance`` server, as the test project."""
    from tests.servers.glance import GlanceClient
    from tests.support.e2e_glance import PROJECT

    with GlanceClient(glance.url, PROJECT) as c:
        yield c
