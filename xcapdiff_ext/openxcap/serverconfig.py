"""What OpenXCAP's own ``config.ini`` says that matters to the extension.

Read with configparser, the way ``configfile.read_settings`` reads our section, so
the backend at start-up and ``xcapdiff check`` judge the same file the same way:
which backend OpenXCAP loads, the wrapped storage, and the two ways an operator
can end up publishing twice or silently changing storage (CONTRACT §6, issue 6.7).
"""

from __future__ import annotations

import configparser
from dataclasses import dataclass
from pathlib import Path

from ..config import Settings
from ..configfile import DEFAULT_CONFIG

__all__ = [
    "BACKEND_NAME",
    "OpenXcapConfig",
    "StartupProblem",
    "openxcap_config_path",
    "read_openxcap_config",
    "review",
]

# The value of ``[Server] backend`` that loads us (OpenXCAP lowercases it).
BACKEND_NAME = "XCAPDiff"

# Backends whose raw name makes OpenXCAP configure its SQL engines and run its
# migrations (xcap/db/manager.py, xcap/db/initialize.py) and, for the second set,
# start the Twisted reactor thread (CONTRACT §1).
SQL_BACKENDS = {"database": "Database", "opensips": "OpenSIPS"}
REACTOR_BACKENDS = ("SIPThor", "OpenSIPS")

_TRUE = {"1", "yes", "true", "on"}


class StartupProblem(Exception):
    """A configuration the extension refuses to start with (one line, with the fix)."""


@dataclass(frozen=True, slots=True)
class OpenXcapConfig:
    """The parts of OpenXCAP's ``config.ini`` we look at (``path`` None: no file)."""

    path: str | None = None
    backend: str | None = None
    roots: tuple[str, ...] = ()
    publish_xcapdiff: bool = False
    opensips_section: bool = False
    authentication_db_uri: str = ""
    storage_db_uri: str = ""

    @property
    def backend_is_us(self) -> bool:
        return (self.backend or "").lower() == BACKEND_NAME.lower()


def openxcap_config_path() -> Path:
    """The ``config.ini`` OpenXCAP itself reads: python3-application's lookup
    (``--config-dir``, then the system directory), else ``/etc/openxcap/config.ini``."""
    try:
        from application.process import process
    except ImportError:
        return Path(DEFAULT_CONFIG)
    try:
        found = process.configuration.file("config.ini")
    except Exception:  # an older python3-application: fall back to the default
        found = None
    return Path(found) if found else Path(DEFAULT_CONFIG)


def read_openxcap_config(path: str | Path | None) -> OpenXcapConfig:
    """Parse OpenXCAP's file leniently (it is OpenXCAP's to reject, not ours)."""
    if path is None or not Path(path).is_file():
        return OpenXcapConfig()
    parser = configparser.ConfigParser(interpolation=None, strict=False)
    try:
        parser.read(path, encoding="utf-8")
    except (configparser.Error, UnicodeDecodeError, OSError):
        return OpenXcapConfig(path=str(path))

    def get(section: str, key: str) -> str:
        return parser.get(section, key, fallback="").strip().strip("\"'")

    opensips = parser.has_section("OpenSIPS") and any(
        v.strip() for v in parser["OpenSIPS"].values()
    )
    return OpenXcapConfig(
        path=str(path),
        backend=get("Server", "backend") or None,
        roots=tuple(r.strip() for r in get("Server", "root").split(",") if r.strip()),
        publish_xcapdiff=get("OpenSIPS", "publish_xcapdiff").lower() in _TRUE,
        opensips_section=opensips,
        authentication_db_uri=get("Database", "authentication_db_uri"),
        storage_db_uri=get("Database", "storage_db_uri"),
    )


def review(settings: Settings, server: OpenXcapConfig) -> list[str]:
    """Refuse what cannot work (``StartupProblem``); return the warnings to log."""
    storage = settings.storage.lower()
    if storage == BACKEND_NAME.lower():
        raise StartupProblem(
            f"[XCAPDiff] storage = {settings.storage} would wrap itself: name the storage "
            "OpenXCAP should use, e.g. storage = Database"
        )
    if storage == "opensips" and server.publish_xcapdiff:
        raise StartupProblem(
            "[XCAPDiff] storage = OpenSIPS with [OpenSIPS] publish_xcapdiff = yes would "
            "publish every change twice (OpenXCAP's etag-only PUBLISH and ours): "
            "set publish_xcapdiff = no in OpenXCAP's config.ini"
        )
    databases = server.authentication_db_uri and server.storage_db_uri
    if storage in SQL_BACKENDS and not databases and server.path is not None:
        raise StartupProblem(
            f"[XCAPDiff] storage = {settings.storage} needs [Database] "
            "authentication_db_uri and storage_db_uri in OpenXCAP's config.ini"
        )
    warnings = []
    if server.opensips_section and storage != "opensips":
        warnings.append(
            f"OpenXCAP's config.ini has an [OpenSIPS] section but [XCAPDiff] storage = "
            f"{settings.storage}: documents are kept by the {settings.storage} backend, "
            "not the OpenSIPS one; set storage = OpenSIPS in [XCAPDiff] to keep what "
            "backend = OpenSIPS did"
        )
    return warnings
