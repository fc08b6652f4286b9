"""A storage of the Twisted generation (OpenXCAP 2.x's ``Database`` backend).

Same names and arguments as 3.x, but plain methods returning Deferreds (CONTRACT §2).
It keeps 2.x's own semantics where they differ from 3.x:

- GET also calls ``check_etag(etag)``; there is no identical-bytes shortcut on PUT (a
  re-PUT of the same bytes is a replace: new etag, ``old_etag`` set); there is no
  ``fetch_document``.
- Each operation is one interaction: a read, then a conditional write (``UPDATE ...
  WHERE etag = old``, ``DELETE ... WHERE etag = old``, an INSERT checking the unique
  key); when another request changed the row in between, the interaction is retried
  (at most 10 attempts), so the storage itself loses no write.

Each database round trip is ``deferLater(clock, 0)``: ``Storage.clock`` (class or
instance attribute) defaults to the global reactor, imported only when first needed;
set it to a ``twisted.internet.task.Clock`` to drive the storage by hand.
``Storage`` is a singleton, as in 2.x.  Data lives in the same in-memory databases
as the 3.x backend (``xcap.db.manager.databases``, keyed by ``storage_db_uri``).
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable, Coroutine
from typing import Any

from twisted.internet import defer, task

from xcap.backend import StatusResponse
from xcap.backend.database import DatabaseStorage
from xcap.configuration import DatabaseConfig
from xcap.db.manager import IntegrityError, open_database
from xcap.db.models import XCAP
from xcap.dbutil import make_random_etag

__all__ = [
    "HashPasswordChecker",
    "PasswordChecker",
    "PlainPasswordChecker",
    "Storage",
    "installSignalHandlers",
]

log = logging.getLogger("openxcap")

installSignalHandlers = True
RETRIES = 10

if not DatabaseConfig.authentication_db_uri or not DatabaseConfig.storage_db_uri:
    log.critical("Authentication DB URI and Storage DB URI must be provided")
    sys.exit(1)


class UpdateFailed(Exception):
    pass


class DeleteFailed(Exception):
    pass


class PasswordChecker:
    def requestAvatarId(self, credentials: Any) -> defer.Deferred[Any]:
        return defer.succeed(None)


class PlainPasswordChecker(PasswordChecker):
    pass


class HashPasswordChecker(PasswordChecker):
    pass


class Storage:
    app_mapping = DatabaseStorage.app_mapping
    clock: Any = None
    _instance: Storage | None = None

    def __new__(cls) -> Storage:
        if cls._instance is None:
            cls._instance = super().__new__(cls)
            cls._instance.database = open_database(DatabaseConfig.storage_db_uri)
        return cls._instance

    database: Any

    # --------------------------------------------------------------- contract
    def get_document(self, uri: Any, check_etag: Callable[..., Any]) -> defer.Deferred[Any]:
        return self._interaction(1, (), self._get_document, uri, check_etag)

    def put_document(
        self, uri: Any, document: bytes, check_etag: Callable[..., Any]
    ) -> defer.Deferred[Any]:
        errors = (UpdateFailed, IntegrityError)
        return self._interaction(RETRIES, errors, self._put_document, uri, document, check_etag)

    def delete_document(self, uri: Any, check_etag: Callable[..., Any]) -> defer.Deferred[Any]:
        return self._interaction(RETRIES, (DeleteFailed,), self._delete_document, uri, check_etag)

    def get_watchers(self, uri: Any) -> defer.Deferred[Any]:
        return defer.succeed([])

    def stop(self) -> None:
        return None

    # -------------------------------------------------------------- internals
    def _normalize_document_path(self, uri: Any) -> None:
        if uri.application_id in ("pres-rules", "org.openmobilealliance.pres-rules"):
            uri.doc_selector.document_path = "index.xml"

    def _round_trip(self) -> defer.Deferred[None]:
        clock = self.clock
        if clock is None:
            from twisted.internet import reactor as clock
        return task.deferLater(clock, 0, lambda: None)

    def _interaction(
        self,
        attempts: int,
        errors: tuple[type[BaseException], ...],
        func: Callable[..., Coroutine[Any, Any, Any]],
        *args: Any,
    ) -> defer.Deferred[Any]:
        async def run() -> Any:
            for attempt in range(1, attempts + 1):
                try:
                    return await func(*args)
                except errors:
                    if attempt == attempts:
                        raise
            raise AssertionError("unreachable")

        return defer.Deferred.fromCoroutine(run())

    def _key(self, uri: Any) -> tuple[Any, ...]:
        self._normalize_document_path(uri)
        return (
            uri.user.username,
            uri.user.domain,
            self.app_mapping[uri.application_id],
            uri.doc_selector.document_path,
        )

    async def _read(self, key: tuple[Any, ...]) -> XCAP | None:
        await self._round_trip()
        rows = self.database._select(key)
        return rows[0] if rows else None

    def _stored(self, key: tuple[Any, ...]) -> XCAP | None:
        return next((row for row in self.database.rows.values() if row.key == key), None)

    async def _get_document(self, uri: Any, check_etag: Callable[..., Any]) -> StatusResponse:
        row = await self._read(self._key(uri))
        if row is None:
            return StatusResponse(404)
        check_etag(row.etag)
        return StatusResponse(200, row.etag, row.doc)

    async def _put_document(
        self, uri: Any, document: bytes, check_etag: Callable[..., Any]
    ) -> StatusResponse:
        key = self._key(uri)
        row = await self._read(key)
        etag = make_random_etag(uri)
        if row is None:
            check_etag(None, False)
            await self._round_trip()
            new = XCAP(username=key[0], domain=key[1], doc_type=key[2], doc_uri=key[3])
            new.doc, new.etag = document, etag
            self.database._write(new)  # IntegrityError when created meanwhile: retried
            return StatusResponse(201, etag)
        old_etag = row.etag
        check_etag(old_etag)
        await self._round_trip()
        stored = self._stored(key)
        if stored is None or stored.etag != old_etag:  # UPDATE ... WHERE etag = old: 0 rows
            raise UpdateFailed
        stored.doc, stored.etag = document, etag
        return StatusResponse(200, etag, old_etag=old_etag)

    async def _delete_document(self, uri: Any, check_etag: Callable[..., Any]) -> StatusResponse:
        key = self._key(uri)
        row = await self._read(key)
        if row is None:
            return StatusResponse(404)
        check_etag(row.etag)
        await self._round_trip()
        stored = self._stored(key)
        if stored is None or stored.etag != row.etag:  # DELETE ... WHERE etag = old: 0 rows
            raise DeleteFailed
        del self.database.rows[stored.id]
        return StatusResponse(200, old_etag=row.etag)
