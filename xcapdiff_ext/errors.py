"""The exception tree (STYLE §6). Every error names where it happened."""

from __future__ import annotations

from typing import ClassVar


class XcapDiffError(Exception):
    """Base of every error this package raises on purpose."""


class XmlInputError(XcapDiffError, ValueError):
    """An XML input was refused; ``where`` names the input, ``line`` the position if known."""

    def __init__(self, where: str, detail: str, line: int | None = None) -> None:
        at = f"{where}:{line}" if line is not None else where
        super().__init__(f"{at}: {detail}")
        self.where, self.line, self.detail = where, line, detail


class MalformedXml(XmlInputError):
    """Not well-formed XML (or not UTF-8/declared encoding, or too deep for libxml2)."""


class UnsafeXml(XmlInputError):
    """Well-formed but refused: entity declarations, external references, excessive depth."""


class DocumentTooLarge(XmlInputError):
    """The input is larger than the configured byte limit."""


class UnpatchableChange(XcapDiffError):
    """The change cannot be expressed with RFC 5261 operations (XML prolog, DOCTYPE).

    The caller publishes the etag-only form instead (RFC 5875 §4.7)."""


class ConfigError(XcapDiffError, ValueError):
    """A setting is invalid; the message names the section, the key and what is expected."""

    def __init__(self, key: str, value: object, expected: str, section: str = "XCAPDiff") -> None:
        super().__init__(f"[{section}] {key} = {value!r}: {expected}")
        self.key, self.value, self.expected, self.section = key, value, expected, section


class TransportError(XcapDiffError):
    """A publication was not delivered.  ``retryable`` says whether trying again later
    can help (timeouts, 5xx, OpenSIPS down) or not (unknown event, bad URI)."""

    retryable: bool = True

    def __init__(self, detail: str, *, retryable: bool | None = None) -> None:
        super().__init__(detail)
        self.detail = detail
        if retryable is not None:
            self.retryable = retryable


class LocalProtocolError(XcapDiffError, ValueError):
    """Our bug: a protocol module was called wrongly (bad argument, a call the current
    state forbids).  Never caused by the peer (h11's split by whose fault)."""


class RemoteProtocolError(TransportError):
    """The peer's bytes break the protocol (SIP, JSON-RPC): garbage, wrong shape, wrong
    id.  The shell drops them, logs and counts; retrying may help (another reply)."""


class PublishRejected(TransportError):
    """The peer answered with a final failure (SIP status or MI error code)."""

    retryable = False

    def __init__(self, status: int, reason: str, *, retryable: bool | None = None) -> None:
        super().__init__(f"{status} {reason}", retryable=retryable)
        self.status, self.reason = status, reason


class SpoolError(XcapDiffError):
    """The spool directory cannot be used (missing, not writable, locked)."""


class PatchError(XcapDiffError):
    """An RFC 5261 operation failed; ``rfc5261_tag`` names the <patch-ops-error> child."""

    rfc5261_tag: ClassVar[str] = "invalid-diff-format"

    def __init__(self, op_index: int, sel: str | None, detail: str) -> None:
        super().__init__(f"{self.rfc5261_tag}: patch op #{op_index} sel={sel!r}: {detail}")
        self.op_index, self.sel, self.detail = op_index, sel, detail


class InvalidAttributeValue(PatchError):
    rfc5261_tag = "invalid-attribute-value"


class InvalidCharacterSet(PatchError):
    rfc5261_tag = "invalid-character-set"


class InvalidDiffFormat(PatchError):
    rfc5261_tag = "invalid-diff-format"


class InvalidEntityDeclaration(PatchError):
    rfc5261_tag = "invalid-entity-declaration"


class InvalidNamespacePrefix(PatchError):
    rfc5261_tag = "invalid-namespace-prefix"


class InvalidNamespaceUri(PatchError):
    rfc5261_tag = "invalid-namespace-uri"


class InvalidNodeTypes(PatchError):
    rfc5261_tag = "invalid-node-types"


class InvalidPatchDirective(PatchError):
    rfc5261_tag = "invalid-patch-directive"


class InvalidRootElementOperation(PatchError):
    rfc5261_tag = "invalid-root-element-operation"


class InvalidXmlPrologOperation(PatchError):
    rfc5261_tag = "invalid-xml-prolog-operation"


class InvalidWhitespaceDirective(PatchError):
    rfc5261_tag = "invalid-whitespace-directive"


class UnlocatedNode(PatchError):
    rfc5261_tag = "unlocated-node"


class UnsupportedIdFunction(PatchError):
    rfc5261_tag = "unsupported-id-function"


class UnsupportedXmlId(PatchError):
    rfc5261_tag = "unsupported-xml-id"


PATCH_ERRORS: tuple[type[PatchError], ...] = (
    InvalidAttributeValue,
    InvalidCharacterSet,
    InvalidDiffFormat,
    InvalidEntityDeclaration,
    InvalidNamespacePrefix,
    InvalidNamespaceUri,
    InvalidNodeTypes,
    InvalidPatchDirective,
    InvalidRootElementOperation,
    InvalidXmlPrologOperation,
    InvalidWhitespaceDirective,
    UnlocatedNode,
    UnsupportedIdFunction,
    UnsupportedXmlId,
)
