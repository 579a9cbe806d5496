"""pytest glue: ``pytest_plugins = ["barbican_mock.fixture"]`` gives a ``barbican_mock`` fixture.

Other eras or faults: ``with mock_barbican_factory()(era="yoga") as m: ...`` or simply
``with MockBarbican(era="yoga") as m: ...``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager

import pytest

from .faults import Faults
from .server import MockBarbican


@contextmanager
def _running(era: str = "2026.2", faults: Faults | None = None) -> Iterator[MockBarbican]:
    with MockBarbican(era=era, faults=faults) as mock:
        yield mock


def mock_barbican_factory() -> Callable[..., AbstractContextManager[MockBarbican]]:
    """Return a context-manager factory: ``factory(era=..., faults=...)`` -> running mock."""
    return _running


@pytest.fixture
def barbican_mock() -> Iterator[MockBarbican]:
    """A running era-2026.2 mock for one test."""
    with MockBarbican() as mock:
        yield mock
