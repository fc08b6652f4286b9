"""``XCAPApp``: OpenXCAP 3.x's application object, without FastAPI/uvicorn.

Importing this module installs Twisted's default reactor (as OpenXCAP's does).
``XCAPApp()`` imports ``xcap.appusage``, which creates the one storage: create it
inside a running event loop, as uvicorn does.  Then:

- ``await app.startup()``: ``init_db()``; then, only when the RAW ``[Server] backend``
  is ``SIPThor`` or ``OpenSIPS``, a daemon thread named ``TwistedReactor`` runs
  ``reactor.run(installSignalHandlers=<backend module>.installSignalHandlers)``
  (``app.reactor_thread``).
- ``await app.shutdown()``: ``shutdown_reactor()`` (``reactor.callFromThread(reactor.stop)``
  if the reactor runs; it does not wait for the thread), THEN ``shutdown_backend()``
  (``storage.stop()``, awaited when it returns a coroutine, exceptions ignored).
- ``await app.request(method, path, body, if_match=..., if_none_match=...)`` ->
  ``(status, etag, body)`` for one XCAP request; ``path`` is the resource selector
  (``/auid/users/<xui>/<doc>[~~<node selector>]``, percent-encoded or not).  The result's
  ``background`` task runs before it returns (after "the response", as in OpenXCAP).
"""

from __future__ import annotations

import asyncio
import logging
import sys
import threading
from collections.abc import Callable
from typing import Any

from twisted.internet import reactor

from xcap import __fullname__, __version__
from xcap.configuration import ServerConfig
from xcap.db.initialize import init_db
from xcap.errors import HTTPError, ResourceNotFound, XCAPError
from xcap.xpath import AttributeSelector, DocumentSelectorError, NamespaceSelector, NodeParsingError

__all__ = ["XCAPApp"]

log = logging.getLogger("openxcap")

ELEMENT_TYPE = "application/xcap-el+xml"
ATTRIBUTE_TYPE = "application/xcap-att+xml"


def _etags(header: str) -> list[tuple[str, bool]]:
    """(tag, weak) of each entity tag in an If-Match/If-None-Match value; ``*`` as is."""
    tags = []
    for raw in header.split(","):
        token = raw.strip()
        weak = token.startswith("W/")
        tags.append(((token[2:] if weak else token).strip('"'), weak))
    return tags


def make_check_etag(
    method: str, if_match: str | None, if_none_match: str | None
) -> Callable[..., None]:
    """``check_etag(etag, exists=True)`` for one request (RFC 7232 §3.1-3.2): 412 when
    If-Match fails or If-None-Match matches (304 for a GET)."""

    def matches(
        tags: list[tuple[str, bool]], etag: str | None, exists: bool, weak_ok: bool
    ) -> bool:
        if exists and ("*", False) in tags:
            return True
        if etag is None:
            return False
        return any(tag == etag and (weak_ok or not weak) for tag, weak in tags)

    def check_etag(etag: str | None, exists: bool = True) -> None:
        if if_match and not matches(_etags(if_match), etag, exists, weak_ok=False):
            raise HTTPError(412, "Requested resource does not have a matching ETag.")
        if if_none_match:
            if method in ("GET", "HEAD"):
                if matches(_etags(if_none_match), etag, exists, weak_ok=True):
                    raise HTTPError(304)
            elif matches(_etags(if_none_match), etag, exists, weak_ok=False):
                raise HTTPError(412, "Requested resource has a matching ETag.")

    return check_etag


class XCAPApp:
    title = __fullname__
    version = __version__

    def __init__(self) -> None:
        # OpenXCAP's routes import the application usages (and so build the storage)
        # when the app object is created.
        from xcap import appusage

        self.appusage = appusage
        self.backend: str | None = ""
        self.reactor_thread: threading.Thread | None = None

    @property
    def storage(self) -> Any:
        return self.appusage.storage

    # -------------------------------------------------------------- lifecycle
    async def startup(self) -> None:
        init_db()
        if ServerConfig.backend in ("SIPThor", "OpenSIPS"):
            thread = threading.Thread(target=self._start_reactor, daemon=True)
            thread.name = "TwistedReactor"
            self.reactor_thread = thread
            thread.start()
        self.backend = ServerConfig.backend
        log.info("OpenXCAP app is running...")

    def _start_reactor(self) -> None:
        from xcap.appusage import ServerConfig as BackendConfig

        reactor.run(installSignalHandlers=BackendConfig.backend.installSignalHandlers)

    async def shutdown_reactor(self) -> None:
        if reactor.running:
            if self.backend == "SIPThor":
                from xcap.appusage import ServerConfig as BackendConfig

                BackendConfig.backend.XCAPProvisioning().stop()
            else:
                reactor.callFromThread(reactor.stop)

    async def shutdown_backend(self) -> None:
        storage = getattr(sys.modules.get("xcap.appusage"), "storage", None)
        if storage:
            try:
                result = storage.stop()
                if asyncio.iscoroutine(result):
                    await result
            except Exception:
                pass

    async def shutdown(self) -> None:
        """Both shutdown handlers, in OpenXCAP's order."""
        await self.shutdown_reactor()
        await self.shutdown_backend()

    # --------------------------------------------------------------- requests
    async def request(
        self,
        method: str,
        path: str,
        body: bytes = b"",
        if_match: str | None = None,
        if_none_match: str | None = None,
        *,
        content_type: str | None = None,
        xcap_root: str | None = None,
    ) -> tuple[int, str | None, bytes]:
        """One XCAP request; ``xcap_root`` defaults to the primary ``[Server] root``
        (pass an alias to see it in ``uri.xcap_root``).  ``content_type`` defaults to
        the right one for element/attribute PUTs (a wrong one gives 415)."""
        from xcap.uri import XCAPUri

        root = xcap_root or ServerConfig.root
        if not root:
            raise ValueError("no XCAP root: set [Server] root in config.ini")
        try:
            uri = XCAPUri(root, path, self.appusage.namespaces)
        except (DocumentSelectorError, NodeParsingError) as err:
            return 404, None, str(err).encode()
        application = self.appusage.getApplicationForURI(uri)
        if application is None:
            return 404, None, b"unknown application usage"
        check = make_check_etag(method.upper(), if_match, if_none_match)
        try:
            result = await self._dispatch(
                application, uri, method.upper(), body, check, content_type
            )
        except HTTPError as err:
            return err.code, None, b""
        except XCAPError as err:
            return err.status_code, None, err.build_xml_output().encode("utf-8")
        except ResourceNotFound as err:
            return err.status_code, None, str(err).encode("utf-8")
        except Exception:
            log.exception("internal error for %s %s", method, path)
            return 500, None, b""
        if isinstance(result, tuple):
            return result
        if result.background is not None:
            await result.background()
        data = result.data
        if isinstance(data, str):
            data = data.encode("utf-8")
        return result.code, result.etag, data or b""

    async def _dispatch(
        self,
        app: Any,
        uri: Any,
        method: str,
        body: bytes,
        check: Callable[..., None],
        content_type: str | None,
    ) -> Any:
        terminal = uri.node_selector.terminal_selector if uri.node_selector else None

        def one_arg(etag: str | None) -> None:  # the element/attribute routes' lambda e: ...
            check(etag)

        if uri.node_selector is None:
            if method == "GET":
                return await app.get_document(uri, one_arg)
            if method == "PUT":
                return await app.put_document(uri, body, check)
            if method == "DELETE":
                return await app.delete_document(uri, one_arg)
        elif isinstance(terminal, AttributeSelector):
            if method == "GET":
                return await app.get_attribute(uri, one_arg)
            if method == "PUT":
                if (content_type or ATTRIBUTE_TYPE) != ATTRIBUTE_TYPE:
                    return 415, None, b""
                return await app.put_attribute(uri, body, one_arg)
            if method == "DELETE":
                return await app.delete_attribute(uri, one_arg)
        elif isinstance(terminal, NamespaceSelector):
            if method == "GET":
                return await app.get_ns_bindings(uri, one_arg)
        else:
            if method == "GET":
                return await app.get_element(uri, one_arg)
            if method == "PUT":
                if (content_type or ELEMENT_TYPE) != ELEMENT_TYPE:
                    return 415, None, b""
                return await app.put_element(uri, body, one_arg)
            if method == "DELETE":
                return await app.delete_element(uri, one_arg)
        return 405, None, b""
