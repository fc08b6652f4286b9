"""The storage wrapper: OpenXCAP's storage contract in, ``Change`` values out.

``PublishingStorage`` wraps the storage OpenXCAP would have used (its ``Database``
backend, or any object with the same contract, see shared/openxcap/CONTRACT.md §2)
and, for every successful write, hands one ``Change`` to a sink — in production
``reactor.callFromThread(publisher.accept, …)``.  It returns the wrapped storage's
own result unchanged; nothing it does for publishing can fail, change or delay a
request: every exception of ours is logged and swallowed.

It also closes OpenXCAP 3.x's lost-update window (CONTRACT §4).  Element and
attribute operations read the document (``get_document``), edit it, and write the
whole document back (``put_document``) with nothing in between that stops a second
request doing the same.  Reads stay lock-free; each write runs under a short
per-document lock, and if the stored etag is no longer the one the application read,
the application's edit (our diff of what it read against what it produced) is
*rebased* onto the current version with our RFC 5261 applier and validated again,
or the request is answered 409 when the edit no longer applies.

Both generations of the contract are served: methods that are coroutine functions
(OpenXCAP 3.x, asyncio) and methods returning Deferreds (a Twisted server).  The
wrapper returns the same kind the wrapped storage does.
"""

from __future__ import annotations

import inspect
import logging
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

from ..change import Change, ChangeKind
from ..diff.apply import apply_patch
from ..diff.engine import diff_documents
from ..diff.ops import Remove
from ..errors import PatchError, XcapDiffError
from ..xmlsafe import Limits

__all__ = ["PublishingStorage", "RebaseConflict"]

log = logging.getLogger("xcapdiff.hook")

# Percent-encode what may not stand in a URI path segment; keep what XUIs contain.
_SEL_SAFE = "/:@!$&'()*+,;=-._~"


class RebaseConflict(XcapDiffError):
    """An element/attribute operation that no longer applies to the current document
    (another request changed it in between).  ``delete`` tells a DELETE apart."""

    def __init__(self, sel: str, detail: str, *, delete: bool) -> None:
        super().__init__(
            f"{sel}: the document changed while the request ran and the edit "
            f"no longer applies ({detail})"
        )
        self.sel, self.detail, self.delete = sel, detail, delete


@dataclass(frozen=True, slots=True)
class _Version:
    """One stored version: its etag and bytes (copied out of the storage's row)."""

    etag: str
    data: bytes | None


def _no_check(*args: Any, **kwargs: Any) -> None:
    """``check_etag`` for our own reads: they never enforce the client's preconditions."""


def _as_bytes(data: object) -> bytes | None:
    if isinstance(data, bytes):
        return data
    if isinstance(data, str):
        return data.encode("utf-8")
    return None


def _succeeded(result: Any) -> bool:
    code = getattr(result, "code", None)
    return isinstance(code, int) and 200 <= code <= 299


class _Reads:
    """What the application last read for a request, keyed by its ``uri`` object.

    The application calls ``get_document(uri)`` and then ``put_document(uri)`` with
    the *same* uri object (CONTRACT §3), so the entry lives exactly as long as the
    request's uri: nothing to release on error paths, nothing to expire."""

    def __init__(self) -> None:
        self._by_id: dict[int, tuple[weakref.ref[Any], _Version]] = {}

    def remember(self, uri: Any, version: _Version) -> None:
        key = id(uri)
        try:
            ref = weakref.ref(uri, lambda _ref, key=key: self._forget(key, _ref))
        except TypeError:  # not weak-referenceable: no rebase for this server
            return
        self._by_id[key] = (ref, version)

    def _forget(self, key: int, ref: weakref.ref[Any]) -> None:
        entry = self._by_id.get(key)
        if entry is not None and entry[0] is ref:
            del self._by_id[key]

    def take(self, uri: Any) -> _Version | None:
        entry = self._by_id.get(id(uri))
        if entry is None or entry[0]() is not uri:
            return None
        del self._by_id[id(uri)]
        return entry[1]

    def __len__(self) -> int:
        return len(self._by_id)


class _Locks:
    """One lock per document, dropped when nobody holds or waits for it."""

    def __init__(self, factory: Callable[[], Any]) -> None:
        self._factory = factory
        self._locks: dict[tuple[Any, ...], list[Any]] = {}  # key -> [lock, users]

    def acquire(self, key: tuple[Any, ...]) -> _Held:
        entry = self._locks.get(key)
        if entry is None:
            entry = self._locks[key] = [self._factory(), 0]
        entry[1] += 1
        return _Held(self, key, entry)

    def _release(self, key: tuple[Any, ...], entry: list[Any]) -> None:
        entry[1] -= 1
        if entry[1] == 0 and self._locks.get(key) is entry:
            del self._locks[key]

    def __len__(self) -> int:
        return len(self._locks)


class _Held:
    def __init__(self, locks: _Locks, key: tuple[Any, ...], entry: list[Any]) -> None:
        self._locks, self._key, self._entry = locks, key, entry

    async def __aenter__(self) -> None:
        try:
            await self._entry[0].__aenter__()
        except BaseException:
            self._locks._release(self._key, self._entry)
            raise

    async def __aexit__(self, *exc: object) -> None:
        try:
            await self._entry[0].__aexit__(*exc)
        finally:
            self._locks._release(self._key, self._entry)


class PublishingStorage:
    """Wraps ``inner`` (an OpenXCAP storage); see the module docstring.

    ``sink`` receives each ``Change`` (it must not block; exceptions are logged).
    ``xcap_root`` is the primary root with its trailing ``/``.  ``validate(uri, data)``
    re-validates a rebased document as the application would (raising the server's
    409 errors); ``conflict(err)`` turns a ``RebaseConflict`` into the exception the
    server answers with (default: raise it as is).  ``limits`` bounds the documents
    kept for diffing: a larger one is published etag-only.
    """

    def __init__(
        self,
        inner: Any,
        sink: Callable[[Change], None],
        *,
        xcap_root: str,
        validate: Callable[[Any, bytes], None] | None = None,
        conflict: Callable[[RebaseConflict], BaseException] | None = None,
        limits: Limits | None = None,
    ) -> None:
        self.inner = inner
        self._sink = sink
        self._root = xcap_root if xcap_root.endswith("/") else xcap_root + "/"
        self._validate = validate
        self._conflict = conflict
        self._limits = limits or Limits()
        self._deferred = not inspect.iscoroutinefunction(getattr(inner, "put_document", None))
        if self._deferred:
            from twisted.internet.defer import DeferredLock

            self._locks = _Locks(DeferredLock)
        else:
            import asyncio

            self._locks = _Locks(asyncio.Lock)
        self._reads = _Reads()
        # A pre-read done under the document lock, served to the wrapped storage's
        # own fetch at the start of its put/delete: one query, not two (CONTRACT §3).
        self._prefetched: dict[int, tuple[Any, Any]] = {}
        self._fetch = getattr(inner, "fetch_document", None)
        if callable(self._fetch):
            inner.fetch_document = self._serve_fetch
        self.rebased = 0
        self.conflicts = 0

    # ----------------------------------------------------------- the contract
    def get_document(self, uri: Any, check_etag: Callable[..., Any]) -> Any:
        return self._run(self._get(uri, check_etag))

    def put_document(self, uri: Any, document: bytes, check_etag: Callable[..., Any]) -> Any:
        return self._run(self._put(uri, document, check_etag))

    def delete_document(self, uri: Any, check_etag: Callable[..., Any]) -> Any:
        return self._run(self._delete(uri, check_etag))

    def stop(self) -> Any:
        if self._fetch is not None and self.inner.__dict__.get("fetch_document") is not None:
            del self.inner.fetch_document
        return self.inner.stop()

    def __getattr__(self, name: str) -> Any:
        if name == "inner":
            raise AttributeError(name)
        # Everything else of the storage's surface (get_watchers, …) is the inner's.
        return getattr(self.inner, name)

    # ------------------------------------------------------------- internals
    def _run(self, coro: Any) -> Any:
        if self._deferred:
            from twisted.internet.defer import Deferred

            return Deferred.fromCoroutine(coro)
        return coro

    async def _call(self, result: Any) -> Any:
        return await result if inspect.isawaitable(result) else result

    async def _get(self, uri: Any, check_etag: Callable[..., Any]) -> Any:
        result = await self._call(self.inner.get_document(uri, check_etag))
        try:
            data = _as_bytes(getattr(result, "data", None))
            if _succeeded(result) and result.etag is not None and data is not None:
                self._reads.remember(uri, _Version(result.etag, data))
        except Exception:
            log.exception("xcap-diff hook: cannot note the document read for %s", uri)
        return result

    async def _put(self, uri: Any, document: bytes, check_etag: Callable[..., Any]) -> Any:
        self._normalise(uri)
        read = self._reads.take(uri)
        async with self._locks.acquire(self._key(uri)):
            try:
                current = await self._current(uri)
                if read is not None and uri.node_selector is not None:
                    document = self._rebase(uri, read, current, document)
                result = await self._call(self.inner.put_document(uri, document, check_etag))
            finally:  # also after a 409, a 412 or a storage error
                self._drop_prefetch(uri)
            self._report(uri, result, current, document)
        return result

    async def _delete(self, uri: Any, check_etag: Callable[..., Any]) -> Any:
        self._normalise(uri)
        self._reads.take(uri)
        async with self._locks.acquire(self._key(uri)):
            try:
                current = await self._current(uri)
                result = await self._call(self.inner.delete_document(uri, check_etag))
            finally:
                self._drop_prefetch(uri)
            self._report(uri, result, current, None)
        return result

    def _normalise(self, uri: Any) -> None:
        # The Database backend stores pres-rules under one name and says so by
        # mutating the uri; key the lock and the published sel the same way.
        normalise = getattr(self.inner, "_normalize_document_path", None)
        if callable(normalise):
            normalise(uri)

    @staticmethod
    def _key(uri: Any) -> tuple[Any, ...]:
        ds = uri.doc_selector
        return (uri.application_id, ds.context, ds.user_id, ds.document_path)

    async def _current(self, uri: Any) -> _Version | None:
        """The stored version now (under the lock): the wrapped storage's own
        ``fetch_document`` row when it has one (then served again to its put),
        else one ``get_document`` read."""
        try:
            if self._fetch is not None:
                rows = await self._call(self._fetch(uri))
                self._prefetched[id(uri)] = (uri, rows)
                if not rows:
                    return None
                row = rows[0][0]
                return _Version(str(row.etag), _as_bytes(row.doc))
            result = await self._call(self.inner.get_document(uri, _no_check))
            if _succeeded(result) and result.etag is not None:
                return _Version(result.etag, _as_bytes(getattr(result, "data", None)))
            return None
        except Exception:
            # Our read failed: the write still goes ahead exactly as without us.
            log.exception("xcap-diff hook: cannot read the current version of %s", uri)
            self._drop_prefetch(uri)
            return None

    def _serve_fetch(self, uri: Any) -> Any:
        entry = self._prefetched.pop(id(uri), None)
        if entry is None or entry[0] is not uri:
            return self._fetch(uri)  # type: ignore[misc]
        rows = entry[1]
        if self._deferred:
            from twisted.internet.defer import succeed

            return succeed(rows)

        async def served() -> Any:
            return rows

        return served()

    def _drop_prefetch(self, uri: Any) -> None:
        self._prefetched.pop(id(uri), None)

    def _rebase(self, uri: Any, read: _Version, current: _Version | None, document: bytes) -> bytes:
        """The document to store for an element/attribute operation that read
        ``read``: ``document`` itself while nobody wrote in between, else the
        application's edit replayed onto ``current``."""
        if current is not None and current.etag == read.etag:
            return document
        sel = self._sel(uri)
        try:
            patch = diff_documents(read.data or b"", document, limits=self._limits, stable=True)
        except Exception:
            log.exception("xcap-diff hook: cannot rebase %s; storing it as the server does", sel)
            return document
        delete = bool(patch.ops) and all(isinstance(op, Remove) for op in patch.ops)
        if current is None or current.data is None:
            raise self._conflicted(RebaseConflict(sel, "the document was deleted", delete=delete))
        try:
            rebased = apply_patch(current.data, patch, limits=self._limits)
        except PatchError as err:
            raise self._conflicted(RebaseConflict(sel, str(err), delete=delete)) from None
        except Exception:
            log.exception("xcap-diff hook: cannot rebase %s; storing it as the server does", sel)
            return document
        if self._validate is not None:
            self._validate(uri, rebased)  # the server's own 409 errors propagate
        self.rebased += 1
        log.info(
            "xcap-diff: rebased %s onto %s: another request changed it since this one read %s",
            sel,
            current.etag,
            read.etag,
        )
        return rebased

    def _conflicted(self, err: RebaseConflict) -> BaseException:
        self.conflicts += 1
        log.info("xcap-diff: 409 for %s: %s", err.sel, err.detail)
        return self._conflict(err) if self._conflict is not None else err

    # ------------------------------------------------------------ publishing
    def _sel(self, uri: Any) -> str:
        ds = uri.doc_selector
        if ds.context == "users":
            path = f"{uri.application_id}/users/{ds.user_id}/{ds.document_path}"
        else:
            path = f"{uri.application_id}/{ds.context}/{ds.document_path}"
        return quote(path, safe=_SEL_SAFE)

    def _report(
        self, uri: Any, result: Any, current: _Version | None, document: bytes | None
    ) -> None:
        try:
            change = self._change(uri, result, current, document)
            if change is not None:
                self._sink(change)
        except Exception:
            log.exception("xcap-diff hook: the change to %s was not published", uri)

    def _change(
        self, uri: Any, result: Any, current: _Version | None, document: bytes | None
    ) -> Change | None:
        if not _succeeded(result):
            return None
        sel = self._sel(uri)
        user = getattr(uri, "user", None)
        owner = getattr(user, "uri", None) if getattr(user, "username", None) else None
        if uri.doc_selector.context != "users" or not owner:
            log.debug(
                "xcap-diff: global document %s changed: global documents have no owner to notify",
                sel,
            )
            return None
        old_etag = result.old_etag
        if document is None:  # DELETE of the document
            new, new_etag = None, None
            if old_etag is None:
                return None
        else:
            new, new_etag = document, result.etag
            if old_etag is None and result.code != 201:
                # 200 with no previous etag: an identical re-PUT, nothing changed
                # (CONTRACT §2); a creation is 201.
                log.debug("xcap-diff: %s re-PUT with identical content: nothing to publish", sel)
                return None
        old = current.data if current is not None and current.etag == old_etag else None
        if old_etag is None:
            old = None
        kind, node = self._kind(uri)
        change = Change(
            xcap_root=self._root,
            sel=sel,
            owner=owner,
            old=old,
            old_etag=old_etag,
            new=new,
            new_etag=new_etag,
            kind=kind,
            node_selector=node,
        )
        if change.retained_bytes > 2 * self._limits.max_bytes:
            change = change.without_bytes()
        return change

    @staticmethod
    def _kind(uri: Any) -> tuple[ChangeKind, str | None]:
        node = uri.node_selector
        if node is None:
            return ChangeKind.DOCUMENT, None
        terminal = getattr(node, "terminal_selector", None)
        if terminal is not None and type(terminal).__name__ == "AttributeSelector":
            return ChangeKind.ATTRIBUTE, str(node)
        return ChangeKind.ELEMENT, str(node)
