"""Sinks that record what the engine wrote, for checking what was released and when."""

from __future__ import annotations


class RecordingSink:
    """A sink that keeps a copy of every write (the engine may reuse its buffers)."""

    def __init__(self) -> None:
        self.writes: list[bytes] = []

    def write(self, data: bytes | bytearray | memoryview) -> int:
        copy = bytes(data)
        self.writes.append(copy)
        return len(copy)

    @property
    def data(self) -> bytes:
        return b"".join(self.writes)


class ShortWriteSink(RecordingSink):
    """A sink whose ``write`` takes at most ``limit`` bytes per call, like a raw pipe."""

    def __init__(self, limit: int = 1000) -> None:
        super().__init__()
        self.limit = limit
        self.calls = 0

    def write(self, data: bytes | bytearray | memoryview) -> int:
        self.calls += 1
        return super().write(memoryview(data)[: self.limit])
