"""Reading the shared RFC vectors (``shared/vectors``, located by ``tests.shared``)."""

from __future__ import annotations

from tests.shared import VECTORS

__all__ = ["VECTORS", "vector"]


def vector(relative: str) -> bytes:
    """The bytes of one vector file, e.g. ``vector("rfc5261/A.1-diff.xml")``; a missing
    file raises (tests fail, never skip)."""
    return (VECTORS / relative).read_bytes()
