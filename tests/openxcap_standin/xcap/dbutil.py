"""``make_random_etag``: a fresh random etag (32 hex digits, no quotes)."""

from __future__ import annotations

import hashlib
import os
from typing import Any

__all__ = ["make_random_etag"]


def make_random_etag(uri: Any) -> str:
    return hashlib.md5(str(uri).encode("utf-8") + os.urandom(16)).hexdigest()
