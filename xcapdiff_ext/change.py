"""One committed change of an XCAP document, as the storage hook reports it (pure).

The publisher coalesces these per owner (``changes.py``) and journals them in the
spool, so a change converts to and from a JSON-able record.  Etags are the HTTP
entity-tags without their double quotes (RFC 5874 examples; spec/NOTES.md §1).
"""

from __future__ import annotations

import base64
import binascii
import enum
from dataclasses import dataclass, replace
from typing import Any

__all__ = ["Change", "ChangeKind", "InvalidRecord"]


class ChangeKind(enum.Enum):
    """What the XCAP request addressed (RFC 4825 §8): the node selector says which."""

    DOCUMENT = "document"
    ELEMENT = "element"
    ATTRIBUTE = "attribute"


class InvalidRecord(ValueError):
    """A journal record that does not describe a change (corrupt or foreign)."""


@dataclass(frozen=True, slots=True)
class Change:
    """A committed write: ``old`` → ``new`` of one document of one owner.

    ``old``/``old_etag`` are None when the document was created, ``new``/``new_etag``
    when it was deleted.  ``old`` may also be None for an existing document whose
    previous bytes are unknown (then only the etag-only form can be published).
    ``time`` is the reactor's clock when the change was accepted (seconds)."""

    xcap_root: str
    sel: str
    owner: str
    old: bytes | None
    old_etag: str | None
    new: bytes | None
    new_etag: str | None
    kind: ChangeKind = ChangeKind.DOCUMENT
    node_selector: str | None = None
    time: float = 0.0

    def __post_init__(self) -> None:
        if not self.xcap_root.endswith("/") or "://" not in self.xcap_root:
            raise ValueError(f"xcap_root must be an absolute URI ending in '/': {self.xcap_root!r}")
        if not self.sel or self.sel.startswith("/") or "://" in self.sel:
            raise ValueError(f"sel must be relative to the xcap-root: {self.sel!r}")
        if not self.owner:
            raise ValueError("a change needs an owner")
        if self.old_etag is None and self.new_etag is None:
            raise ValueError(f"{self.sel}: a change needs an etag before or after it")
        if self.new is not None and self.new_etag is None:
            raise ValueError(f"{self.sel}: new bytes without a new etag")
        if self.old is not None and self.old_etag is None:
            raise ValueError(f"{self.sel}: old bytes without an old etag")
        if (self.kind is ChangeKind.DOCUMENT) != (self.node_selector is None):
            raise ValueError(f"{self.sel}: element/attribute changes carry a node selector")

    @property
    def created(self) -> bool:
        return self.old_etag is None

    @property
    def deleted(self) -> bool:
        return self.new_etag is None

    @property
    def unchanged(self) -> bool:
        """An identical re-PUT: same bytes before and after (the etag may differ)."""
        return self.old is not None and self.old == self.new

    @property
    def retained_bytes(self) -> int:
        """Document bytes this change keeps in memory (for the pending-bytes bound)."""
        return len(self.old or b"") + len(self.new or b"")

    def without_bytes(self) -> Change:
        """The same change with its document versions dropped (etag-only from now on)."""
        return replace(self, old=None, new=None)

    def to_record(self) -> dict[str, Any]:
        """A JSON-able form (bytes as base64) for the spool journal."""
        return {
            "root": self.xcap_root,
            "sel": self.sel,
            "owner": self.owner,
            "old": _b64(self.old),
            "old_etag": self.old_etag,
            "new": _b64(self.new),
            "new_etag": self.new_etag,
            "kind": self.kind.value,
            "node": self.node_selector,
            "time": self.time,
        }

    @classmethod
    def from_record(cls, record: object) -> Change:
        """Inverse of ``to_record``; anything else raises ``InvalidRecord``."""
        if not isinstance(record, dict):
            raise InvalidRecord("a change record is a JSON object")
        try:
            return cls(
                xcap_root=_str(record["root"]),
                sel=_str(record["sel"]),
                owner=_str(record["owner"]),
                old=_unb64(record["old"]),
                old_etag=_opt_str(record["old_etag"]),
                new=_unb64(record["new"]),
                new_etag=_opt_str(record["new_etag"]),
                kind=ChangeKind(record["kind"]),
                node_selector=_opt_str(record["node"]),
                time=float(record["time"]),
            )
        except (KeyError, TypeError, ValueError, binascii.Error) as err:
            raise InvalidRecord(f"not a change record: {err}") from None


def _b64(data: bytes | None) -> str | None:
    return None if data is None else base64.b64encode(data).decode("ascii")


def _unb64(value: object) -> bytes | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise TypeError("document bytes must be base64 text")
    return base64.b64decode(value.encode("ascii"), validate=True)


def _str(value: object) -> str:
    if not isinstance(value, str):
        raise TypeError(f"expected text, got {type(value).__name__}")
    return value


def _opt_str(value: object) -> str | None:
    return None if value is None else _str(value)
