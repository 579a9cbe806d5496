"""Test-only: make a Glance on SQLite survive concurrent imports (put this dir on PYTHONPATH).

oslo.db begins every SQLite transaction with a deferred ``BEGIN``; two transactions that read
then write deadlock on the SHARED -> RESERVED upgrade, and SQLite answers one of them
"database is locked" at once (no busy wait). Concurrent Glance import tasks hit that, and the
failed task leaves the image locked in ``uploading``. Production Glance runs on MySQL or
PostgreSQL. Here every ``BEGIN`` becomes ``BEGIN IMMEDIATE`` (the write lock is taken first,
so transactions queue instead of deadlocking) with a 60 s busy timeout. Nothing else changes.
"""

from __future__ import annotations

import sqlite3
import sqlite3.dbapi2
from typing import Any

_connect = sqlite3.connect


def _immediate(sql: Any) -> Any:
    return "BEGIN IMMEDIATE" if isinstance(sql, str) and sql.strip().upper() == "BEGIN" else sql


class _Cursor(sqlite3.Cursor):
    def execute(self, sql: Any, *args: Any) -> Any:
        return super().execute(_immediate(sql), *args)


class _Connection(sqlite3.Connection):
    def cursor(self, factory: Any = _Cursor) -> Any:
        return super().cursor(factory)

    def execute(self, sql: Any, *args: Any) -> Any:
        return super().execute(_immediate(sql), *args)


def connect(*args: Any, **kwargs: Any) -> sqlite3.Connection:
    kwargs.setdefault("factory", _Connection)
    kwargs["timeout"] = max(float(kwargs.get("timeout", 5.0)), 60.0)
    connection: sqlite3.Connection = _connect(*args, **kwargs)
    return connection


sqlite3.connect = sqlite3.dbapi2.connect = connect  # type: ignore[assignment]
