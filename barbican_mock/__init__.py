"""An HTTP mock of OpenStack Barbican's key-manager API v1 (stdlib only).

``with MockBarbican(era="zed") as m:`` serves on ``m.url`` (127.0.0.1, free port).
Eras: see :mod:`barbican_mock.eras`; faults: :class:`Faults`.
"""

from .eras import ERAS
from .faults import Faults, Trigger
from .server import MockBarbican

__all__ = ["ERAS", "Faults", "MockBarbican", "Trigger"]
