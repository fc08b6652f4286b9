"""The ``Database`` backend of OpenXCAP 3.x (``[Server] backend = Database``).

Behaviour (CONTRACT §2-§4):

- ``get/put/delete_document`` each begin with ``await self.fetch_document(uri)``,
  which normalises the pres-rules path and returns ``[(row,)]`` or ``[]`` (the row is
  a detached copy; ``put_document`` assigns ``doc``/``etag`` onto that very object
  before committing it, so a caller keeping the row sees it change: copy the values).
- GET: ``check_etag(etag)`` then 200 (etag, data); missing: 404.
- PUT: identical bytes -> 200 (current etag, data), ``old_etag`` None, no etag check;
  replace -> ``check_etag(old)``, new random etag, UPDATE by id -> 200 (etag,
  old_etag=old); create -> ``check_etag(None, False)`` -> 201 (etag).
- DELETE: ``check_etag(etag)`` -> 200 (old_etag=etag); missing: 404.
- No locking: fetch, compare, assign and commit are separate awaits, so concurrent
  element PUTs on one document lose updates.
- ``stop()`` is synchronous and calls ``shutdown_db()``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar

from xcap.backend import BackendInterface, StatusResponse
from xcap.db.manager import SQLAlchemyError, get_db_session, shutdown_db
from xcap.db.models import XCAP
from xcap.dbutil import make_random_etag

__all__ = ["DatabaseStorage", "PasswordChecker", "Storage", "installSignalHandlers"]

installSignalHandlers = True


class Error(Exception):
    pass


class MultipleResultsError(Error):
    def __init__(self, params: dict[str, Any]) -> None:
        super().__init__(f"database request has more than one result: {params!r}")


class DeleteFailed(Error):
    def __init__(self) -> None:
        super().__init__("DELETE request failed")


class PasswordChecker:
    async def query_user(self, credentials: Any) -> Any:
        return None


def _as_bytes(doc: Any) -> bytes:
    return doc.encode("utf-8") if isinstance(doc, str) else doc


class DatabaseStorage(BackendInterface):
    app_mapping: ClassVar[dict[str, int]] = {
        "pres-rules": 1 << 1,
        "resource-lists": 1 << 2,
        "rls-services": 1 << 3,
        "pidf-manipulation": 1 << 4,
        "org.openmobilealliance.pres-rules": 1 << 5,
        "org.openmobilealliance.pres-content": 1 << 6,
        "org.openxcap.dialog-rules": 1 << 7,
        "test-app": 0,
    }

    async def fetch_document(self, uri: Any) -> list[tuple[XCAP]]:
        username, domain = uri.user.username, uri.user.domain
        self._normalize_document_path(uri)
        doc_type = self.app_mapping[uri.application_id]
        document_path = uri.doc_selector.document_path
        async with get_db_session() as session:
            rows = await session.select_documents(username, domain, doc_type, document_path)
        if len(rows) > 1:
            raise MultipleResultsError(
                {"username": username, "domain": domain, "doc_type": doc_type}
            )
        return [(row,) for row in rows]

    async def get_document(self, uri: Any, check_etag: Callable[..., Any]) -> StatusResponse:
        results = await self.fetch_document(uri)
        if not results:
            return StatusResponse(404)
        row = results[0][0]
        doc, etag = _as_bytes(row.doc), row.etag
        check_etag(etag)
        return StatusResponse(200, etag, doc)

    async def put_document(
        self, uri: Any, document: bytes, check_etag: Callable[..., Any]
    ) -> StatusResponse:
        results = await self.fetch_document(uri)
        if results:
            row = results[0][0]
            old_etag = row.etag
            doc = _as_bytes(row.doc)
            if doc == document:
                return StatusResponse(200, old_etag, doc)
            check_etag(old_etag)
            etag = make_random_etag(uri)
            row.doc = document
            row.etag = etag
            async with get_db_session() as session:
                session.add(row)
                await session.commit()
                await session.refresh(row)
            return StatusResponse(200, etag, old_etag=old_etag)
        check_etag(None, False)
        etag = make_random_etag(uri)
        row = XCAP(
            username=uri.user.username,
            domain=uri.user.domain,
            doc_type=self.app_mapping[uri.application_id],
            etag=etag,
            doc=document,
            doc_uri=uri.doc_selector.document_path,
        )
        async with get_db_session() as session:
            session.add(row)
            await session.commit()
            await session.refresh(row)
        return StatusResponse(201, etag)

    async def delete_document(self, uri: Any, check_etag: Callable[..., Any]) -> StatusResponse:
        results = await self.fetch_document(uri)
        if not results:
            return StatusResponse(404)
        etag = results[0][0].etag
        check_etag(etag)
        async with get_db_session() as session:
            try:
                await session.delete(results[0][0])
                await session.commit()
            except SQLAlchemyError:
                raise DeleteFailed from None
        return StatusResponse(200, old_etag=etag)

    async def get_watchers(self, uri: Any) -> list[dict[str, str]]:
        return []

    def stop(self) -> None:
        shutdown_db()


Storage = DatabaseStorage
