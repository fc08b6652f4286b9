"""Where the shared spec data lives, and the XSD validator built from it.

The shared tree sits next to the repository (``<repo>/../shared``) unless
``XCAPDIFF_SHARED`` names it.  A missing tree is an error, never a skip: the
tests that need it must fail loudly.
"""

from __future__ import annotations

import os
from functools import cache
from pathlib import Path

from lxml import etree

SHARED = Path(
    os.environ.get("XCAPDIFF_SHARED", Path(__file__).resolve().parents[1].parent / "shared")
)
VECTORS = SHARED / "vectors"
SCHEMAS = SHARED / "spec" / "schemas"


def shared_path(*parts: str) -> Path:
    """A file of the shared tree; raises ``FileNotFoundError`` when it is missing."""
    path = SHARED.joinpath(*parts)
    if not path.exists():
        raise FileNotFoundError(f"shared data missing: {path} (set XCAPDIFF_SHARED)")
    return path


@cache
def xcap_diff_schema() -> etree.XMLSchema:
    """RFC 5874 schema with patch-ops included by relative path (schemas/README, option C)."""
    path = shared_path("spec", "schemas", "xcap-diff.local.xsd")
    return etree.XMLSchema(etree.parse(str(path), etree.XMLParser(no_network=True)))


def assert_valid_xcap_diff(data: bytes) -> None:
    """Fail with the schema's own messages unless ``data`` is a valid xcap-diff."""
    schema = xcap_diff_schema()
    doc = etree.fromstring(data, etree.XMLParser(no_network=True, resolve_entities=False))
    if not schema.validate(doc):
        raise AssertionError(
            f"not schema-valid: {schema.error_log}\n{data.decode('utf-8', 'replace')}"
        )
