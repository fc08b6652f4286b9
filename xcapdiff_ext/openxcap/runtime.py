"""Assembly inside OpenXCAP: the wrapped storage, the publisher, the reactor thread.

OpenXCAP decides three things from the raw ``[Server] backend`` string (CONTRACT §1):
whether it configures its SQL engines, whether it runs its migrations and whether
it starts the Twisted reactor.  For ``backend = XCAPDiff`` it does none of them, so
``Runtime`` does what is missing for the storage it wraps — once, and only when
nobody did it already.  Everything process-wide it touches (OpenXCAP's modules, the
reactor, threads) is injected, so tests drive it with stand-ins.
"""

from __future__ import annotations

import contextlib
import importlib
import logging
import threading
from collections.abc import Callable
from dataclasses import replace
from types import ModuleType
from typing import Any

from ..change import Change
from ..config import Settings
from .serverconfig import BACKEND_NAME, REACTOR_BACKENDS, SQL_BACKENDS, StartupProblem

__all__ = ["Runtime"]

log = logging.getLogger("xcapdiff.openxcap")

# Deliveries still in flight at shutdown get this long before they are cancelled
# (their changes stay in the spool); the server's exit waits at most a little more.
SHUTDOWN_GRACE = 3.0
REACTOR_THREAD = "xcapdiff-reactor"


class Runtime:
    """Everything the ``XCAPDiff`` backend runs besides the storage wrapper."""

    def __init__(
        self,
        settings: Settings,
        *,
        reactor: Any,
        import_module: Callable[[str], ModuleType] = importlib.import_module,
        thread_factory: Callable[..., threading.Thread] = threading.Thread,
        build_publisher: Callable[[Any, Settings], tuple[Any, Any]] | None = None,
        grace: float = SHUTDOWN_GRACE,
    ) -> None:
        self.settings = settings
        self._reactor = reactor
        self._import = import_module
        self._thread_factory = thread_factory
        self._build_publisher = build_publisher or _production_publisher
        self._grace = grace
        self._module: ModuleType | None = None
        self.publisher: Any = None
        self.status_file: Any = None
        self.transport: Any = None
        self.thread: threading.Thread | None = None
        self._persisted = threading.Event()

    # ------------------------------------------------------------ start-up
    def backend_module(self) -> ModuleType:
        """OpenXCAP's module for the wrapped storage (``xcap.backend.<lowercased>``)."""
        if self._module is not None:
            return self._module
        name = self.settings.storage.lower()
        if name == BACKEND_NAME.lower():
            raise StartupProblem(f"[XCAPDiff] storage = {self.settings.storage} would wrap itself")
        self._take_over_database()
        try:
            self._module = self._import(f"xcap.backend.{name}")
            return self._module
        except ImportError as err:
            raise StartupProblem(
                f"[XCAPDiff] storage = {self.settings.storage}: OpenXCAP has no backend "
                f"module xcap.backend.{name} ({err})"
            ) from err

    def open_storage(self) -> Any:
        """A new instance of the wrapped storage, with its database ready."""
        return self.backend_module().Storage()

    def _take_over_database(self) -> None:
        canonical = SQL_BACKENDS.get(self.settings.storage.lower())
        if canonical is None:
            return
        configuration = self._import("xcap.configuration")
        manager = self._import("xcap.db.manager").connection_manager
        if getattr(manager, "AsyncSessionLocal", None) is None:
            db = configuration.DatabaseConfig
            if not db.authentication_db_uri or not db.storage_db_uri:
                raise StartupProblem(
                    f"[XCAPDiff] storage = {self.settings.storage} needs [Database] "
                    "authentication_db_uri and storage_db_uri in OpenXCAP's config.ini"
                )
            manager.configure_db_connection()
            log.debug("xcap-diff: configured OpenXCAP's database connections for %s", canonical)
        server = configuration.ServerConfig
        raw = server.backend
        if raw in SQL_BACKENDS.values():
            return  # OpenXCAP runs the migrations itself at start-up
        initialize = self._import("xcap.db.initialize")
        # init_db decides by the raw backend name; let it see the wrapped one, once.
        server.backend = canonical
        try:
            initialize.init_db()
        finally:
            server.backend = raw

    def start(self, server_backend: str | None) -> None:
        """Build and start the publisher, then make sure the reactor runs.

        Built before the reactor thread starts, so a spool or transport problem
        stops the server at start-up with one line; if some other part of the
        server already runs the reactor, built in its thread instead."""
        if self._reactor.running:
            from twisted.internet.threads import blockingCallFromThread

            blockingCallFromThread(self._reactor, self._start_publisher)
        else:
            self._start_publisher()
        self._reactor.addSystemEventTrigger("before", "shutdown", self._persist)
        if self._reactor.running or server_backend in REACTOR_BACKENDS:
            return  # running, or OpenXCAP starts it itself after start-up
        if any(t.name == "TwistedReactor" and t.is_alive() for t in threading.enumerate()):
            return
        self.thread = self._thread_factory(
            target=self._reactor.run,
            kwargs={"installSignalHandlers": False},
            name=REACTOR_THREAD,
            daemon=True,
        )
        self.thread.start()

    def _start_publisher(self) -> None:
        from ..statusfile import StatusFile

        self.transport, self.publisher = self._build_publisher(self._reactor, self.settings)
        self.publisher.start()
        self.status_file = StatusFile(self.settings.spool_dir, self._reactor, self._status)
        self.status_file.start()

    def _status(self) -> dict[str, Any]:
        return {
            **self.publisher.status(),
            "storage": self.settings.storage,
            "transport": self.settings.transport,
            "target": describe_target(self.settings),
        }

    # ------------------------------------------------------------- running
    def sink(self, change: Change) -> None:
        """Hand a change to the publisher in the reactor thread (never blocks)."""
        self._reactor.callFromThread(self._accept, change)

    def _accept(self, change: Change) -> None:
        try:
            self.publisher.accept(replace(change, time=self._reactor.seconds()))
        except Exception:
            log.exception(
                "xcap-diff: the change to %s of %s was not accepted", change.sel, change.owner
            )

    # ------------------------------------------------------------ shutdown
    def _persist(self) -> Any:
        """Reactor ``before shutdown``: let deliveries finish (bounded), close the
        spool with every unpublished change in it, stop the transport."""
        from twisted.internet.defer import Deferred

        d: Deferred[Any] = self.publisher.stop(timeout=self._grace)

        def transport_down(_: object) -> Any:
            self.status_file.stop()
            return self.transport.stop()

        def done(result: object) -> None:
            self._persisted.set()
            if isinstance(result, BaseException) or type(result).__name__ == "Failure":
                log.error("xcap-diff: stopping the publisher: %s", result)

        d.addCallback(transport_down)
        d.addBoth(done)
        return d

    def _stop_reactor(self) -> None:
        from twisted.internet.error import ReactorNotRunning

        with contextlib.suppress(ReactorNotRunning):  # OpenXCAP stopped it first (§5)
            self._reactor.stop()

    def wait_stopped(self) -> bool:
        """Block (at most the grace period and a margin) until the reactor thread we
        started has persisted and ended; stop it first if nobody did.  True when
        everything pending is on disk."""
        if self.thread is not None and self.thread.is_alive() and self._reactor.running:
            self._reactor.callFromThread(self._stop_reactor)
        deadline = self._grace + 2.0
        if self.thread is not None:
            self.thread.join(deadline)
        elif self._reactor.running:  # the server's reactor thread is shutting down
            self._persisted.wait(deadline)
        return self._persisted.is_set()


def describe_target(settings: Settings) -> str:
    """Where publications go, for logs and the status file (no secrets)."""
    shown = settings.to_mapping()
    return {
        "mi": shown["mi_url"],
        "sip": shown["sip_proxy"] or "next hop by RFC 3263 DNS",
    }.get(settings.transport, "nowhere")


def _production_publisher(reactor: Any, settings: Settings) -> tuple[Any, Any]:
    from ..publisher import Publisher
    from ..transports import build_transport

    transport = build_transport(settings, reactor)
    return transport, Publisher.from_settings(reactor, transport, settings)
