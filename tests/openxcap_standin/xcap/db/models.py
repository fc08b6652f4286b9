"""``XCAP``: one stored document (OpenXCAP's ``xcap`` table row)."""

from __future__ import annotations

from typing import Any

__all__ = ["COLUMNS", "XCAP"]

COLUMNS = ("id", "username", "domain", "doc", "doc_type", "etag", "source", "doc_uri", "port")


class XCAP:
    """A row.  Unique key: (username, domain, doc_type, doc_uri)."""

    def __init__(self, **values: Any) -> None:
        self.id: int | None = None
        self.username: str | None = None
        self.domain: str | None = None
        self.doc: bytes = b""
        self.doc_type: int = 0
        self.etag: str = ""
        self.source = 0
        self.doc_uri: str = ""
        self.port = 0
        for key, value in values.items():
            if key not in COLUMNS:
                raise TypeError(f"XCAP has no column {key!r}")
            setattr(self, key, value)

    @property
    def key(self) -> tuple[Any, ...]:
        return (self.username, self.domain, self.doc_type, self.doc_uri)

    def copy(self) -> XCAP:
        return XCAP(**{column: getattr(self, column) for column in COLUMNS})

    def __repr__(self) -> str:
        return f"XCAP(id={self.id!r}, key={self.key!r}, etag={self.etag!r})"
