"""Database connections: ``connection_manager``, ``get_db_session``, ``shutdown_db``.

The stand-in's "engine" is an in-memory database shared by URI (``databases``), so two
``configure_db_connection`` calls for the same URI see the same data, as two engines
on one SQLite file would.  A session works like an async SQLAlchemy session with
``expire_on_commit=False``: every ``await`` is a round trip that yields to the event
loop, rows read are detached copies, and ``commit()`` writes the added rows (UPDATE by
id, unconditionally; INSERT checking the unique key) and deletions.

At import, as in OpenXCAP, the engines are configured only when the RAW
``[Server] backend`` is exactly ``Database`` or ``OpenSIPS`` (both URIs are then
required: critical log line and exit status 1 otherwise).

Inspection for tests: ``connection_manager.configure_calls``, ``.shutdown_calls``,
``.database`` (the storage ``MemoryDatabase`` in use), ``databases[uri]``, and
``MemoryDatabase.documents()``.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import sys
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

from xcap.configuration import DatabaseConfig, ServerConfig
from xcap.db.models import XCAP
from xcap.errors import NoDatabase

__all__ = [
    "IntegrityError",
    "MemoryDatabase",
    "SQLAlchemyError",
    "StaleDataError",
    "connection_manager",
    "databases",
    "get_auth_db_session",
    "get_db_session",
    "open_database",
    "shutdown_db",
]

log = logging.getLogger("openxcap")


class SQLAlchemyError(Exception):
    pass


class IntegrityError(SQLAlchemyError):
    """INSERT of a row whose unique key exists (e.g. two concurrent creations)."""


class StaleDataError(SQLAlchemyError):
    """UPDATE/DELETE of a row id that is no longer there."""


class MemoryDatabase:
    def __init__(self, uri: str) -> None:
        self.uri = uri
        self.rows: dict[int, XCAP] = {}
        self._ids = itertools.count(1)

    def documents(self) -> dict[tuple[Any, ...], tuple[str, bytes]]:
        """``{(username, domain, doc_type, doc_uri): (etag, doc)}`` now."""
        return {row.key: (row.etag, row.doc) for row in self.rows.values()}

    def document(
        self, username: str | None, domain: str | None, doc_uri: str, doc_type: int | None = None
    ) -> tuple[str, bytes] | None:
        """(etag, doc) of one document, or None; ``doc_type`` None matches any."""
        for row in self.rows.values():
            if (row.username, row.domain, row.doc_uri) == (username, domain, doc_uri) and (
                doc_type is None or row.doc_type == doc_type
            ):
                return row.etag, row.doc
        return None

    def _select(self, key: tuple[Any, ...]) -> list[XCAP]:
        return [row.copy() for row in self.rows.values() if row.key == key]

    def _write(self, row: XCAP) -> None:
        if row.id is None:
            if any(stored.key == row.key for stored in self.rows.values()):
                raise IntegrityError(f"duplicate entry for account_doc_type_idx {row.key!r}")
            row.id = next(self._ids)
            self.rows[row.id] = row.copy()
        elif row.id in self.rows:
            self.rows[row.id] = row.copy()
        else:
            raise StaleDataError(f"UPDATE expected to update 1 row (id {row.id}); 0 matched")

    def _delete(self, row: XCAP) -> None:
        if self.rows.pop(row.id, None) is None:  # type: ignore[arg-type]
            raise StaleDataError(f"DELETE expected to delete 1 row (id {row.id}); 0 matched")


databases: dict[str, MemoryDatabase] = {}


def open_database(uri: str) -> MemoryDatabase:
    if uri not in databases:
        databases[uri] = MemoryDatabase(uri)
    return databases[uri]


class _Engine:
    def __init__(self, uri: str) -> None:
        self.url = uri
        self.database = open_database(uri)
        self.disposed = False

    def dispose(self) -> None:
        self.disposed = True


class Session:
    """One async session on an engine (``async with``)."""

    def __init__(self, engine: _Engine) -> None:
        self.engine = engine
        self._added: list[XCAP] = []
        self._deleted: list[XCAP] = []

    async def __aenter__(self) -> Session:
        return self

    async def __aexit__(self, *exc: object) -> None:
        self._added.clear()
        self._deleted.clear()

    async def select_documents(
        self, username: str | None, domain: str | None, doc_type: int, doc_uri: str
    ) -> list[XCAP]:
        await asyncio.sleep(0)
        rows = self.engine.database._select((username, domain, doc_type, doc_uri))
        await asyncio.sleep(0)
        return rows

    def add(self, row: XCAP) -> None:
        self._added.append(row)

    async def delete(self, row: XCAP) -> None:
        self._deleted.append(row)

    async def commit(self) -> None:
        await asyncio.sleep(0)
        database = self.engine.database
        added, deleted = self._added, self._deleted
        self._added, self._deleted = [], []
        for row in added:
            database._write(row)
        for row in deleted:
            database._delete(row)
        await asyncio.sleep(0)

    async def refresh(self, row: XCAP) -> None:
        await asyncio.sleep(0)
        stored = self.engine.database.rows.get(row.id)  # type: ignore[arg-type]
        if stored is None:
            raise StaleDataError(f"row id {row.id} is gone")
        for column in ("doc", "etag"):
            setattr(row, column, getattr(stored, column))


class DatabaseConnectionManager:
    def __init__(self) -> None:
        self.AsyncSessionLocal: Callable[[], Session] | None = None
        self.AsyncAuthSessionLocal: Callable[[], Session] | None = None
        self.dburi: str | None = None
        self._engine: _Engine | None = None
        self._auth_engine: _Engine | None = None
        self.configure_calls = 0
        self.shutdown_calls = 0

    @property
    def database(self) -> MemoryDatabase | None:
        return self._engine.database if self._engine is not None else None

    def create_engine(self, uri: Any) -> _Engine:
        if not isinstance(uri, str) or not uri.startswith(("sqlite", "mysql")):
            raise ValueError("Unsupported database URI scheme")
        return _Engine(uri)

    def close_engine(self, engine: _Engine | None) -> None:
        if engine is not None:
            engine.dispose()

    def configure_db_connection(self, uri: str | None = None) -> None:
        """(Re)create the engines: from ``[Database]``, or both on ``uri`` when given
        (OpenXCAP 3.2.0 accepts ``uri`` only for SIPThor; the stand-in for any backend)."""
        self.configure_calls += 1
        if uri and self.dburi == uri:
            return
        self.close_engine(self._engine)
        self.close_engine(self._auth_engine)
        if uri:
            storage_uri = auth_uri = uri
        else:
            storage_uri = DatabaseConfig.storage_db_uri
            auth_uri = DatabaseConfig.authentication_db_uri
        engine = self.create_engine(storage_uri)
        auth_engine = self.create_engine(auth_uri)
        self._engine, self._auth_engine, self.dburi = engine, auth_engine, uri
        self.AsyncSessionLocal = lambda: Session(engine)
        self.AsyncAuthSessionLocal = lambda: Session(auth_engine)


@asynccontextmanager
async def get_db_session() -> AsyncIterator[Session]:
    if not connection_manager.AsyncSessionLocal:
        raise NoDatabase
    async with connection_manager.AsyncSessionLocal() as session:
        yield session


@asynccontextmanager
async def get_auth_db_session() -> AsyncIterator[Session]:
    if not connection_manager.AsyncAuthSessionLocal:
        raise NoDatabase
    async with connection_manager.AsyncAuthSessionLocal() as session:
        yield session


connection_manager = DatabaseConnectionManager()

if ServerConfig.backend in ("OpenSIPS", "Database"):
    if not DatabaseConfig.authentication_db_uri or not DatabaseConfig.storage_db_uri:
        log.critical("Authentication DB URI and Storage DB URI must be provided")
        sys.exit(1)
    connection_manager.configure_db_connection()


def shutdown_db() -> None:
    """Close the engines (sync, as in OpenXCAP).  Sessions opened later still work."""
    connection_manager.shutdown_calls += 1
    connection_manager.close_engine(connection_manager._engine)
    connection_manager.close_engine(connection_manager._auth_engine)
