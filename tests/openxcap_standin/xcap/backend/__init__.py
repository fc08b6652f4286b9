"""The storage contract (CONTRACT §2): ``StatusResponse`` and ``BackendInterface``.

``BackgroundTask`` stands in for starlette's: ``await task()`` runs the function
(awaited when it is a coroutine function).  The XCAP routes run a result's
``background`` after the response; the stand-in's ``XCAPApp.request`` does the same.
"""

from __future__ import annotations

import inspect
from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import Any

__all__ = ["BackendInterface", "BackgroundTask", "StatusResponse"]


class BackgroundTask:
    def __init__(self, func: Callable[..., Any], *args: Any, **kwargs: Any) -> None:
        self.func, self.args, self.kwargs = func, args, kwargs

    async def __call__(self) -> None:
        result = self.func(*self.args, **self.kwargs)
        if inspect.isawaitable(result):
            await result

    def __repr__(self) -> str:
        return f"BackgroundTask({getattr(self.func, '__name__', self.func)!r})"


class StatusResponse:
    """Positional order ``code, etag, data, old_etag, background``; fields assignable."""

    _FIELDS = ("code", "etag", "data", "old_etag", "background")

    def __init__(
        self,
        code: int,
        etag: str | None = None,
        data: bytes | None = None,
        old_etag: str | None = None,
        background: Any = None,
    ) -> None:
        self.code = code
        self.etag = etag
        self.data = data
        self.old_etag = old_etag
        self.background = background

    @property
    def succeed(self) -> bool:
        return 200 <= self.code <= 299

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, StatusResponse):
            return NotImplemented
        return all(getattr(self, f) == getattr(other, f) for f in self._FIELDS)

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        fields = ", ".join(f"{f}={getattr(self, f)!r}" for f in self._FIELDS)
        return f"StatusResponse({fields})"


class BackendInterface(ABC):
    def _normalize_document_path(self, uri: Any) -> None:
        # Clients save presence rules under varying names; OpenXCAP stores one.
        if uri.application_id in ("pres-rules", "org.openmobilealliance.pres-rules"):
            uri.doc_selector.document_path = "index.xml"

    @abstractmethod
    async def get_document(self, uri: Any, check_etag: Callable[..., Any]) -> StatusResponse:
        """The stored document."""

    @abstractmethod
    async def put_document(
        self, uri: Any, document: bytes, check_etag: Callable[..., Any]
    ) -> StatusResponse:
        """Create or replace the whole document."""

    @abstractmethod
    async def delete_document(self, uri: Any, check_etag: Callable[..., Any]) -> StatusResponse:
        """Delete the document."""

    @abstractmethod
    def stop(self) -> Any:
        """Called at server shutdown, after the reactor was told to stop."""
