"""xcapdiff_ext: RFC 5874 xcap-diff documents for XCAP servers such as OpenXCAP.

Computes the RFC 5261 operations that turn one version of an XCAP document into the
next, checks them with its own applier, and wraps them in an xcap-diff document.
Only the names in ``__all__`` are stable API; everything else may move.
"""

from __future__ import annotations

from .diff.apply import apply_patch
from .diff.engine import diff_documents
from .diff.ops import Add, Patch, Remove, Replace
from .errors import (
    DocumentTooLarge,
    InvalidAttributeValue,
    InvalidCharacterSet,
    InvalidDiffFormat,
    InvalidEntityDeclaration,
    InvalidNamespacePrefix,
    InvalidNamespaceUri,
    InvalidNodeTypes,
    InvalidPatchDirective,
    InvalidRootElementOperation,
    InvalidWhitespaceDirective,
    InvalidXmlPrologOperation,
    MalformedXml,
    PatchError,
    UnlocatedNode,
    UnpatchableChange,
    UnsafeXml,
    UnsupportedIdFunction,
    UnsupportedXmlId,
    XcapDiffError,
    XmlInputError,
)
from .xcapdiff import (
    AttributeEntry,
    DocumentEntry,
    ElementEntry,
    XcapDiff,
    build_xcap_diff,
    document_entry,
    parse_xcap_diff,
)
from .xmlsafe import Limits, parse_document

__all__ = [
    "Add",
    "AttributeEntry",
    "DocumentEntry",
    "DocumentTooLarge",
    "ElementEntry",
    "InvalidAttributeValue",
    "InvalidCharacterSet",
    "InvalidDiffFormat",
    "InvalidEntityDeclaration",
    "InvalidNamespacePrefix",
    "InvalidNamespaceUri",
    "InvalidNodeTypes",
    "InvalidPatchDirective",
    "InvalidRootElementOperation",
    "InvalidWhitespaceDirective",
    "InvalidXmlPrologOperation",
    "Limits",
    "MalformedXml",
    "Patch",
    "PatchError",
    "Remove",
    "Replace",
    "UnlocatedNode",
    "UnpatchableChange",
    "UnsafeXml",
    "UnsupportedIdFunction",
    "UnsupportedXmlId",
    "XcapDiff",
    "XcapDiffError",
    "XmlInputError",
    "apply_patch",
    "build_xcap_diff",
    "diff_documents",
    "document_entry",
    "parse_document",
    "parse_xcap_diff",
]
