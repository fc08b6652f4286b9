"""Configuration data types: the XCAP root list and the backend loader."""

from __future__ import annotations

import logging
import re
import sys
import urllib.parse
from types import ModuleType
from typing import Any

__all__ = ["Backend", "XCAPRootURI"]

log = logging.getLogger("openxcap")


class XCAPRootURI(str):
    """``[Server] root``: comma-separated http(s) URIs; the first is the primary root
    (the string value), the rest are aliases (``.aliases``; all in ``.uris``)."""

    uris: tuple[str, ...]

    def __new__(cls, value: Any) -> Any:
        if value is None:
            return None
        if not isinstance(value, str):
            raise TypeError("value must be a string or None")
        if not value.strip():
            return None
        valid: list[str] = []
        for uri in re.split(r"\s*,\s*", value.strip()):
            parsed = urllib.parse.urlparse(uri)
            if not (parsed.netloc and parsed.scheme in ("http", "https")):
                log.warning("Invalid XCAP Root URI: %r", uri)
                continue
            similar = [u for u in valid if uri.startswith(u) or u.startswith(uri)]
            if similar:
                log.warning("Ignoring XCAP Root URI %r (similar to %r)", uri, similar[0])
                continue
            valid.append(uri)
        if not valid:
            return None
        instance = super().__new__(cls, valid[0])
        instance.uris = tuple(valid)
        return instance

    @property
    def aliases(self) -> tuple[str, ...]:
        return self.uris[1:]


class Backend:
    """``[Server] backend = X`` -> the module ``xcap.backend.<x lowercased>``.

    An ImportError or AssertionError while importing it is logged as one critical line
    and ends the process (exit status 1); any other exception is logged with its
    traceback and ends it too."""

    def __new__(cls, value: str) -> ModuleType:  # type: ignore[misc]
        value = value.lower()
        try:
            return __import__("xcap.backend." + value, globals(), locals(), [""])
        except (ImportError, AssertionError) as err:
            log.critical("Cannot load %r backend module: %s", value, err)
            sys.exit(1)
        except Exception:
            log.exception("Cannot load %r backend module", value)
            sys.exit(1)
