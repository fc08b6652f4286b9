"""``init_db()``: OpenXCAP's start-up migrations (alembic), recorded instead of run.

They run only when the RAW ``xcap.configuration.ServerConfig.backend`` is exactly
``Database`` or ``OpenSIPS`` and both URIs are set.  The URIs come from this module's
own ``DatabaseConfig`` subclass, which read ``config.ini`` again at import (as
OpenXCAP's does).  Each run appends the storage URI to ``runs``.
"""

from __future__ import annotations

import logging

from xcap.configuration import DatabaseConfig as XCAPDatabaseConfig
from xcap.configuration import ServerConfig

__all__ = ["DatabaseConfig", "init_db", "runs"]

log = logging.getLogger("openxcap")

runs: list[str] = []


class DatabaseConfig(XCAPDatabaseConfig):
    authentication_db_uri = ""
    storage_db_uri = ""


def init_db() -> None:
    if (
        ServerConfig.backend not in ("Database", "OpenSIPS")
        or not DatabaseConfig.storage_db_uri
        or not DatabaseConfig.authentication_db_uri
    ):
        return
    runs.append(DatabaseConfig.storage_db_uri)
    log.info("Database initialized and migrations applied.")
