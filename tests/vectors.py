"""Where the shared test vectors live (spec/vectors, outside this repository).

Locally the shared folder is ``/work/shared``; in CI it is ``../shared`` next to the
clone.  Both are the parent of the repository root plus ``shared``; the environment
variable ``XCAPDIFF_SHARED`` overrides it.  A missing folder makes tests fail (the
reads raise), never skip.
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["VECTORS", "vector"]

VECTORS = (
    Path(
        os.environ.get(
            "XCAPDIFF_SHARED", Path(__file__).resolve().parents[2] / "shared"
        )
    )
    / "vectors"
)


def vector(relative: str) -> bytes:
    """The bytes of one vector file, e.g. ``vector("rfc5261/A.1-diff.xml")``."""
    return (VECTORS / relative).read_bytes()
