"""The ``xcapdiff`` command (shell; STYLE §2).

A stable interface that scripts depend on:

* ``xcapdiff diff OLD NEW [--xcap-root URI] [--sel DOCSEL] [--previous-etag E] [--new-etag E]``
  prints a complete RFC 5874 xcap-diff document; ``OLD`` or ``NEW`` may be the word ``none``
  (document created / deleted).
* ``xcapdiff apply DOC XCAPDIFF [--sel DOCSEL]`` prints the patched document.
* ``xcapdiff publish XCAPDIFF --owner SIPURI [--config PATH] [--etag E]`` publishes it
  once through the configured transport (``cli_publish.py``).

Exit codes: 0 success; 1 a patch failed (stderr names the RFC 5261 error element);
2 bad usage or unreadable/invalid input (one line on stderr, no traceback).

The library is imported inside the command functions, so ``--help`` and usage errors
stay fast.
"""

from __future__ import annotations

import argparse
import hashlib
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import IO, TYPE_CHECKING, NoReturn

if TYPE_CHECKING:
    from lxml import etree

    from .xcapdiff import DocumentElement

__all__ = ["DEFAULT_USER", "DEFAULT_XCAP_ROOT", "guess_auid", "main"]

PROG = "xcapdiff"
DEFAULT_XCAP_ROOT = "http://localhost/xcap-root/"
DEFAULT_USER = "sip:user@localhost"
NONE_WORD = "none"


# Root element (namespace, local name or None for any) -> application usage (auid).
# RFC 4826 (resource-lists, rls-services), RFC 5025 (pres-rules: its root is the
# common-policy <ruleset> of RFC 4745), RFC 4827 (pidf-manipulation), RFC 4825 (xcap-caps).
_AUIDS: tuple[tuple[str, str | None, str], ...] = (
    ("urn:ietf:params:xml:ns:resource-lists", None, "resource-lists"),
    ("urn:ietf:params:xml:ns:rls-services", None, "rls-services"),
    ("urn:ietf:params:xml:ns:pres-rules", None, "pres-rules"),
    ("urn:ietf:params:xml:ns:common-policy", "ruleset", "pres-rules"),
    ("urn:ietf:params:xml:ns:pidf", None, "pidf-manipulation"),
    ("urn:ietf:params:xml:ns:xcap-caps", None, "xcap-caps"),
)
# Application usages whose documents live in the global tree only (RFC 4825 §12.2).
_GLOBAL_AUIDS = frozenset({"xcap-caps"})


class UsageError(Exception):
    """Bad usage or unreadable/invalid input: exit status 2, one line on stderr."""


class PatchFailed(Exception):
    """A patch could not be applied: exit status 1, one line on stderr."""


class _Parser(argparse.ArgumentParser):
    """An ArgumentParser whose errors become one line (no usage dump, no SystemExit)."""

    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{message} (see '{self.prog} --help')")


def guess_auid(namespace: str | None, local_name: str) -> str | None:
    """The XCAP application usage of a document whose root element is given, or None."""
    for ns, name, auid in _AUIDS:
        if namespace == ns and (name is None or name == local_name):
            return auid
    return None


def default_selector(auid: str) -> str:
    """A valid XCAP document selector (relative to the xcap-root) for ``auid``."""
    if auid in _GLOBAL_AUIDS:
        return f"{auid}/global/index"
    return f"{auid}/users/{DEFAULT_USER}/index"


def content_etag(data: bytes) -> str:
    """A stable etag derived from the content, so that output is reproducible."""
    return hashlib.sha1(data).hexdigest()[:16]


def _read(path: str) -> bytes:
    if path == "-":
        return sys.stdin.buffer.read()
    try:
        return Path(path).read_bytes()
    except OSError as err:
        raise UsageError(f"cannot read {path}: {err.strerror or err}") from None


def _parse(data: bytes, where: str) -> etree._ElementTree:
    """Parse with the hardened parser; invalid input is a usage error (exit 2)."""
    from .errors import XmlInputError
    from .xmlsafe import parse_document

    try:
        return parse_document(data, where=where)
    except XmlInputError as err:
        raise UsageError(f"invalid XML in {err}") from None


def _root_name(tree: etree._ElementTree) -> tuple[str | None, str]:
    from lxml import etree

    qname = etree.QName(tree.getroot())
    return qname.namespace, qname.localname


def _cmd_diff(args: argparse.Namespace, out: IO[bytes], err: IO[str]) -> int:
    old_path: str = args.old
    new_path: str = args.new
    if old_path == NONE_WORD and new_path == NONE_WORD:
        raise UsageError("OLD and NEW cannot both be 'none'")
    if old_path == "-" and new_path == "-":
        raise UsageError("OLD and NEW cannot both be read from stdin")
    old = None if old_path == NONE_WORD else _read(old_path)
    new = None if new_path == NONE_WORD else _read(new_path)
    old_tree = None if old is None else _parse(old, old_path)
    new_tree = None if new is None else _parse(new, new_path)

    sel: str | None = args.sel
    if sel is None:
        tree = new_tree if new_tree is not None else old_tree
        assert tree is not None  # not both 'none': checked above
        namespace, local_name = _root_name(tree)
        auid = guess_auid(namespace, local_name)
        if auid is None:
            root = f"{{{namespace}}}{local_name}" if namespace else local_name
            raise UsageError(f"unknown application usage for root element {root}: give --sel")
        sel = default_selector(auid)
    sel = sel.lstrip("/")
    if not sel:
        raise UsageError("--sel must not be empty")

    previous_etag = args.previous_etag
    if previous_etag is None and old is not None:
        previous_etag = content_etag(old)
    new_etag = args.new_etag
    if new_etag is None and new is not None:
        new_etag = content_etag(new)

    from .errors import XcapDiffError
    from .xcapdiff import XcapDiff, build_xcap_diff, document_entry

    try:
        entry, reason = document_entry(sel, old, new, previous_etag, new_etag)
        if reason:
            err.write(f"{PROG}: warning: {reason}\n")
        entries = () if entry is None else (entry,)
        body = build_xcap_diff(XcapDiff(args.xcap_root, entries))
    except (XcapDiffError, ValueError) as error:
        raise UsageError(str(error)) from None
    out.write(body if body.endswith(b"\n") else body + b"\n")
    out.flush()
    return 0


def _select_documents(
    documents: Sequence[DocumentElement], sel: str | None, where: str
) -> list[DocumentElement]:
    """The ``<document>`` entries to apply, in document order (a chain for one sel)."""
    if sel is not None:
        wanted = sel.lstrip("/")
        chosen = [d for d in documents if d.sel.lstrip("/") == wanted]
        if not chosen:
            raise UsageError(f"{where} has no <document> entry with sel {sel!r}")
        return chosen
    if not documents:
        raise UsageError(f"{where} has no <document> entry")
    sels = {d.sel.lstrip("/") for d in documents}
    if len(sels) > 1:
        raise UsageError(f"{where} has <document> entries for {len(sels)} documents: give --sel")
    return list(documents)


def _carries(document: DocumentElement) -> tuple[bool, bool]:
    """(has patch operations, says body-not-changed) for a raw ``<document>``."""
    from .xcapdiff import XCAP_DIFF_NS

    ops = body_not_changed = False
    for child in document.element:
        if not isinstance(child.tag, str):
            continue
        if child.tag == f"{{{XCAP_DIFF_NS}}}body-not-changed":
            body_not_changed = True
        elif child.tag in {f"{{{XCAP_DIFF_NS}}}{t}" for t in ("add", "replace", "remove")}:
            ops = True
    return ops, body_not_changed


def _tag_line(error: Exception, tag: str) -> str:
    text = str(error)
    return text if text.startswith(tag + ":") else f"{tag}: {text}"


def _cmd_apply(args: argparse.Namespace, out: IO[bytes], err: IO[str]) -> int:
    if args.doc == "-" and args.xcapdiff == "-":
        raise UsageError("DOC and XCAPDIFF cannot both be read from stdin")
    document = _read(args.doc)
    patch_data = _read(args.xcapdiff)
    _parse(document, args.doc)
    patch_tree = _parse(patch_data, args.xcapdiff)

    from .diff.apply import apply_patch
    from .errors import PatchError, XcapDiffError, XmlInputError
    from .xcapdiff import XCAP_DIFF_NS, document_elements

    try:
        if _root_name(patch_tree) == (XCAP_DIFF_NS, "xcap-diff"):
            # Raw <document> elements: the same path as document_entry's self-check,
            # and a default namespace in scope keeps its meaning for the applier.
            try:
                documents = document_elements(patch_data)
            except (XcapDiffError, ValueError) as error:
                raise UsageError(f"invalid xcap-diff document {args.xcapdiff}: {error}") from None
            for entry in _select_documents(documents, args.sel, args.xcapdiff):
                has_ops, body_not_changed = _carries(entry)
                if body_not_changed:
                    continue
                if not has_ops:
                    raise PatchFailed(
                        f"the <document> entry for {entry.sel} carries no patch "
                        "(etag-only form): fetch the document instead"
                    )
                document = apply_patch(document, entry.element)
        else:
            document = apply_patch(document, patch_data)
    except PatchError as error:
        raise PatchFailed(_tag_line(error, error.rfc5261_tag)) from None
    except XmlInputError as error:
        raise UsageError(f"invalid XML in {error}") from None
    except (XcapDiffError, ValueError) as error:
        raise UsageError(str(error)) from None
    # A newline after the root element changes nothing in the document (XML 1.0 Misc).
    out.write(document if document.endswith(b"\n") else document + b"\n")
    out.flush()
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog=PROG,
        description="Compute and apply RFC 5874 xcap-diff documents (RFC 5261 patches).",
        epilog="Exit status: 0 ok, 1 a patch failed, 2 bad usage or invalid input.",
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)

    diff = commands.add_parser(
        "diff",
        help="print the xcap-diff document that turns OLD into NEW",
        description=(
            "Print a complete RFC 5874 xcap-diff document for the change from OLD to NEW. "
            "OLD or NEW may be the word 'none' (document created or deleted; write ./none "
            "for a file of that name) or '-' for standard input. The document carries RFC "
            "5261 patch operations, self-checked before output; when no correct patch can "
            "be given it carries etag-only entries and a warning goes to stderr."
        ),
    )
    diff.add_argument("old", metavar="OLD", help="old version of the document, or 'none'")
    diff.add_argument("new", metavar="NEW", help="new version of the document, or 'none'")
    diff.add_argument(
        "--xcap-root",
        default=DEFAULT_XCAP_ROOT,
        metavar="URI",
        help=f"the xcap-root attribute (default: {DEFAULT_XCAP_ROOT})",
    )
    diff.add_argument(
        "--sel",
        metavar="DOCSEL",
        help=(
            "document selector relative to the xcap-root (default: "
            f"AUID/users/{DEFAULT_USER}/index, the AUID guessed from the root element; "
            "required for unknown application usages)"
        ),
    )
    diff.add_argument(
        "--previous-etag",
        metavar="E",
        help="etag of OLD (default: derived from OLD's content)",
    )
    diff.add_argument(
        "--new-etag",
        metavar="E",
        help="etag of NEW (default: derived from NEW's content)",
    )
    diff.set_defaults(run=_cmd_diff)

    apply = commands.add_parser(
        "apply",
        help="apply an xcap-diff or RFC 5261 <diff> document to DOC",
        description=(
            "Print DOC patched by XCAPDIFF: an RFC 5874 xcap-diff document (the operations of "
            "its <document> entries for --sel, or of its only document, in order) or an RFC "
            "5261 operations container such as <diff>. A failing patch exits with status 1 "
            "and names the RFC 5261 error element (e.g. unlocated-node) on stderr."
        ),
    )
    apply.add_argument("doc", metavar="DOC", help="the document to patch ('-' for stdin)")
    apply.add_argument("xcapdiff", metavar="XCAPDIFF", help="the xcap-diff or <diff> document")
    apply.add_argument(
        "--sel",
        metavar="DOCSEL",
        help="which <document> entries to apply (needed when there are several documents)",
    )
    apply.set_defaults(run=_cmd_apply)

    from .cli_publish import add_publish_command

    add_publish_command(commands)
    from .cli_monitor import add_monitor_command

    add_monitor_command(commands)
    from .cli_status import add_status_command

    add_status_command(commands)
    from .cli_check import add_check_command

    add_check_command(commands)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the command; returns the exit status (the console script exits with it)."""
    out: IO[bytes] = sys.stdout.buffer
    err: IO[str] = sys.stderr
    args_in: Sequence[str] = sys.argv[1:] if argv is None else argv
    try:
        args = build_parser().parse_args(list(args_in))
        if getattr(args, "run", None) is None:
            raise UsageError(
                f"a command is required: diff, apply, publish, monitor, status or check "
                f"(see '{PROG} --help')"
            )
        status: int = args.run(args, out, err)
        return status
    except SystemExit as stop:  # --help
        return stop.code if isinstance(stop.code, int) else 0
    except UsageError as error:
        err.write(f"{PROG}: error: {_one_line(error)}\n")
        return 2
    except PatchFailed as error:
        err.write(f"{PROG}: {_one_line(error)}\n")
        return 1
    except BrokenPipeError:  # e.g. `xcapdiff diff a b | head`
        return 1


def _one_line(error: Exception) -> str:
    return " ".join(str(error).split())


if __name__ == "__main__":
    sys.exit(main())
