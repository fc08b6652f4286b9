"""The ``OpenSIPS`` backend: the Database storage, plus OpenXCAP's own xcap-diff
publishing when ``[OpenSIPS] publish_xcapdiff`` is true (CONTRACT §6).

``NotifyingStorage`` attaches to every successful put/delete a ``background`` task;
when it runs (``XCAPApp.request`` runs it after the response, as the XCAP routes do;
callers of the storage run ``await result.background()``) it appends
``(str(uri), old_etag, new_etag)`` to ``published`` instead of sending a SIP PUBLISH.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from xcap.backend import BackgroundTask, StatusResponse
from xcap.backend.database import DatabaseStorage, PasswordChecker
from xcap.configuration import OpensipsConfig as XCAPOpensipsConfig

__all__ = ["NotifyingStorage", "PasswordChecker", "Storage", "installSignalHandlers", "published"]

log = logging.getLogger("openxcap")

published: list[tuple[str, str | None, str | None]] = []


class OpensipsConfig(XCAPOpensipsConfig):
    pass


def _on_change(uri: Any, old_etag: str | None, new_etag: str | None) -> None:
    published.append((str(uri), old_etag, new_etag))
    log.info("xcap-diff PUBLISH for %s (%s -> %s)", uri, old_etag, new_etag)


class NotifyingStorage(DatabaseStorage):
    async def put_document(
        self, uri: Any, document: bytes, check_etag: Callable[..., Any]
    ) -> StatusResponse:
        result = await super().put_document(uri, document, check_etag)
        if result and result.succeed:
            result.background = BackgroundTask(_on_change, uri, result.old_etag, result.etag)
        return result

    async def delete_document(self, uri: Any, check_etag: Callable[..., Any]) -> StatusResponse:
        result = await super().delete_document(uri, check_etag)
        if result and result.succeed:
            result.background = BackgroundTask(_on_change, uri, result.old_etag, None)
        return result


Storage: type[DatabaseStorage] = DatabaseStorage
if OpensipsConfig.publish_xcapdiff:
    Storage = NotifyingStorage

installSignalHandlers = False
