"""OpenXCAP backend ``XCAPDiff``: ``[Server] backend = XCAPDiff`` in ``config.ini``.

OpenXCAP imports this module as ``xcap.backend.xcapdiff`` (the Debian package installs
a re-export there; pip installs an import hook, ``_xcapdiff_ext_hook``).  It provides
what OpenXCAP 3.x asks of a backend module (CONTRACT §1):

- ``Storage``: the storage named by ``[XCAPDiff] storage`` (default ``Database``),
  wrapped by ``PublishingStorage``; every committed change is published as xcap-diff.
- ``PasswordChecker``: the wrapped backend's own.
- ``installSignalHandlers``: False (the reactor runs in a thread, never the main one).

Settings are read and validated when the module is imported, from OpenXCAP's
``config.ini`` and the ``xcapdiff.ini`` beside it.  A bad value makes the import fail
with one line naming the key, which OpenXCAP logs before it exits.  The import itself
touches nothing of OpenXCAP: the wrapped backend is loaded when ``Storage()`` or
``PasswordChecker()`` is first created.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import logging
import sys
from typing import Any

from ..config import Settings
from ..configfile import read_settings
from ..errors import ConfigError, XcapDiffError
from ..xmlsafe import Limits
from .runtime import Runtime, describe_target
from .serverconfig import (
    OpenXcapConfig,
    StartupProblem,
    openxcap_config_path,
    read_openxcap_config,
    review,
)
from .storage import PublishingStorage, RebaseConflict

__all__ = ["PasswordChecker", "Storage", "installSignalHandlers"]

log = logging.getLogger("xcapdiff.openxcap")

installSignalHandlers = False


def _load() -> tuple[Settings, OpenXcapConfig]:
    path = openxcap_config_path()
    try:
        settings = read_settings(path if path.is_file() else None)
        server = read_openxcap_config(path)
        for warning in review(settings, server):
            log.warning("xcap-diff: %s", warning)
    except (ConfigError, StartupProblem) as err:
        # OpenXCAP logs an ImportError of its backend module as one critical line
        # ("Cannot load 'xcapdiff' backend module: …") and exits.
        raise ImportError(f"xcap-diff: {err}") from None
    return settings, server


SETTINGS, SERVER = _load()


@functools.cache
def _runtime() -> Runtime:
    from twisted.internet import reactor

    return Runtime(SETTINGS, reactor=reactor)


def _raw_backend() -> str | None:
    configuration = sys.modules.get("xcap.configuration")
    server = getattr(configuration, "ServerConfig", None)
    value = getattr(server, "backend", None)
    return value if isinstance(value, str) else SERVER.backend


def _fatal(err: BaseException) -> SystemExit:
    log.critical("xcap-diff cannot start: %s", err)
    return SystemExit(1)


def _validate(uri: Any, data: bytes) -> None:
    """Validate a rebased document as the application validates a PUT."""
    appusage = sys.modules.get("xcap.appusage")
    application = appusage.getApplicationForURI(uri) if appusage is not None else None
    if application is not None:
        application.validate_document(data)


def _conflict(err: RebaseConflict) -> BaseException:
    """A rebase that does not apply, as OpenXCAP's own 409 answer."""
    try:
        errors = sys.modules.get("xcap.errors") or __import__("xcap.errors", fromlist=["_"])
        kind = errors.CannotDeleteError if err.delete else errors.CannotInsertError
        return kind(comment=str(err))
    except Exception:
        return err


class PasswordChecker:
    """The wrapped backend's password checker (OpenXCAP creates one per request)."""

    def __new__(cls) -> Any:  # type: ignore[misc]
        try:
            module = _runtime().backend_module()
        except (StartupProblem, XcapDiffError) as err:
            raise _fatal(err) from None
        return module.PasswordChecker()


class Storage(PublishingStorage):
    """The wrapped storage, publishing every change (OpenXCAP creates one)."""

    def __init__(self) -> None:
        runtime = _runtime()
        try:
            inner = runtime.open_storage()
            super().__init__(
                inner,
                runtime.sink,
                xcap_root=SETTINGS.xcap_root,
                validate=_validate,
                conflict=_conflict,
                limits=Limits(max_bytes=SETTINGS.max_document_bytes),
            )
            runtime.start(_raw_backend())
        except (StartupProblem, XcapDiffError, OSError) as err:
            raise _fatal(err) from None
        self.runtime = runtime
        log.info(
            "xcap-diff publishing on: storage %s, transport %s (%s), xcap-root %s, spool %s",
            SETTINGS.storage,
            SETTINGS.transport,
            describe_target(SETTINGS),
            SETTINGS.xcap_root,
            SETTINGS.spool_dir,
        )

    async def stop(self) -> None:  # type: ignore[override]
        """OpenXCAP calls this after it stopped the reactor: wait (bounded) for our
        shutdown trigger to have put every pending change on disk, then stop the
        wrapped storage."""
        loop = asyncio.get_running_loop()
        if not await loop.run_in_executor(None, self.runtime.wait_stopped):
            log.warning("xcap-diff: shutdown did not confirm the spool was closed")
        result = super().stop()
        if inspect.isawaitable(result):
            await result
