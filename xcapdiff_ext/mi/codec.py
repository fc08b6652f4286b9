"""OpenSIPS MI ``pua_publish``: requests to bytes, reply bytes to a result or a typed error.

Pure (STYLE §2): no I/O, no clock, no logging.  Ground truth is
``shared/opensips/MI.md`` (what OpenSIPS 3.6.8 answered, and the 1.x/2.x forms).

Public API
----------
``MiProtocol``      ``JSONRPC`` (OpenSIPS >= 3.0, named parameters) or ``LEGACY`` (1.x/2.x:
                    positional parameters, text tree replies); the ``mi_protocol`` setting.
``MiTransport``     ``HTTP`` (mi_http), ``DATAGRAM`` (mi_datagram), ``FIFO`` (mi_fifo),
                    ``XMLRPC`` (mi_xmlrpc / mi_xmlrpc_ng on ``/RPC2``).
``PublishRequest``  frozen: ``presentity_uri``, ``expires``, ``content_type``+``body`` (both or
                    neither), ``etag``.  It has no ``extra_headers`` field, so no request built
                    here can carry one (it crashes OpenSIPS: MI.md, "OpenSIPS bug").
                    ``PublishRequest.from_publication(publication, expires=...)``,
                    ``PublishRequest.removal(presentity_uri, etag=None)`` (expires 0, no body),
                    ``request.without_etag()``, ``request.is_removal``.
``encode_request(request, *, protocol, transport, request_id=None, reply_fifo=None) -> bytes``
                    One request as the transport writes it.  JSON-RPC needs ``request_id``
                    (int or str, chosen by the caller); FIFO needs ``reply_fifo`` (the reply
                    FIFO's name: letters, digits, ``_``, ``-``).  Datagrams are checked
                    against ``MAX_DATAGRAM_BYTES``.  XML-RPC has no id (HTTP pairs replies).
``decode_reply(data, *, request, protocol, transport, request_id=None,
               max_reply_bytes=DEFAULT_MAX_REPLY_BYTES) -> Published | RetryWithoutEtag``
                    Classifies one reply to ``request`` (what was sent decides some cases).
                    Raises only ``TransportError`` subclasses (``.retryable`` says whether a
                    later retry can help); ``LocalProtocolError`` for misuse of this API.
``Published(etag, expires, detail)``  success; field names match ``interfaces.PublishOutcome``
                    (this module may not import the Twisted-side ``interfaces``).
``RetryWithoutEtag(request, detail)`` 418 "Wrong ETag": send ``request`` (the same one without
                    etag) once; a 418 to a request without etag is a permanent ``MiError``.
``reply_id(data) -> int | str | None``  the JSON-RPC id of a reply, to match datagrams.
``check_datagram_size(data, *, limit=MAX_DATAGRAM_BYTES)`` raises ``RequestTooLarge``.
``one_line_body(body) -> bytes``  the legacy text protocol's one-line body (below).

Errors: ``MiError(PublishRejected)`` (``.code`` ``.message`` ``.data`` ``.hint``): the MI
refused the command (JSON-RPC error, XML-RPC fault, legacy error tree).  ``SipRejected
(PublishRejected)``: the PUBLISH pua generated failed; MI reports that as a *result*
``{"reply": "408 Request Timeout"}``.  ``RemoteProtocolError(TransportError)`` and its
``ReplyTooLarge``, ``ReplyIdMismatch``: the peer's bytes are not a reply we understand.
``RequestTooLarge``, ``BodyNotEncodable`` (``TransportError``, permanent): this publication
cannot be sent this way.  ``LocalProtocolError(XcapDiffError, ValueError)``: a bad call.

Classification (code = JSON-RPC ``error.code``, XML-RPC ``faultCode`` or legacy MI code)::

    result reply 2xx + ETag/Expires     Published(etag, expires)
    result reply 408, 5xx, "timeout"    SipRejected, retryable
    result reply other >= 300           SipRejected, permanent (489: presence_xcapdiff hint)
    400 Unknown event                   MiError permanent: presence_xcapdiff not loaded
    400 other (Parse_error, ...)        MiError permanent: request shape (mi_protocol?)
    404 Bad presentity URI              MiError permanent
    418 Wrong ETag                      RetryWithoutEtag if an etag was sent, else MiError
    500 (MI/PUBLISH failed)             removal sent: Published(None, 0, "already removed");
                                        refresh sent: MiError permanent (nothing to refresh);
                                        else MiError permanent (pua_mi presence_server hint)
    -32602 / -32601 / -32700 / -32600   MiError permanent, with the likely cause
    other codes                         MiError; retryable for 408, 5xx, -32603, -32000..-32099
    legacy 202 Accepted                 Published(None, None): outcome unknown

Legacy text body: the protocol is one parameter per line, so the body must be one line.
``one_line_body`` re-serializes it with lxml and writes every newline inside the root
element as ``&#10;`` (lxml already writes CR as ``&#13;`` and newlines in attribute values
as ``&#10;``); whitespace outside the root element is dropped.  The result is C14N-equal
to the input.  Newlines inside comments or processing instructions cannot be written that
way (no character references there): ``BodyNotEncodable``.
"""

from __future__ import annotations

import enum
import json
import re
import xmlrpc.client
from dataclasses import dataclass, replace
from typing import Any, Final, Protocol
from xml.parsers.expat import ExpatError

from lxml import etree

from ..errors import (
    LocalProtocolError,
    PublishRejected,
    RemoteProtocolError,
    TransportError,
    XmlInputError,
)
from ..xmlsafe import parse_document

__all__ = [
    "DEFAULT_MAX_REPLY_BYTES",
    "EVENT_PACKAGE",
    "MAX_DATAGRAM_BYTES",
    "BodyNotEncodable",
    "CommandRequest",
    "CommandResult",
    "LocalProtocolError",
    "MiError",
    "MiProtocol",
    "MiResult",
    "MiTransport",
    "PublishRequest",
    "Published",
    "RemoteProtocolError",
    "ReplyIdMismatch",
    "ReplyTooLarge",
    "RequestTooLarge",
    "RetryWithoutEtag",
    "SipRejected",
    "check_datagram_size",
    "decode_reply",
    "encode_request",
    "mi_command_names",
    "one_line_body",
    "reply_id",
]

EVENT_PACKAGE: Final = "xcap-diff"
DEFAULT_MAX_REPLY_BYTES: Final = 64 * 1024
MAX_DATAGRAM_BYTES: Final = 65457  # mi_datagram's buffer (MI.md, "Datagram")
_MAX_EXPIRES: Final = 2**31 - 1  # pua stores an int; XML-RPC <int> is 32-bit too

# An entity-tag or expires value as it may travel on a legacy line or in JSON.
_TOKEN = re.compile(r"[!-~]{1,256}")
_FIFO_NAME = re.compile(r"[A-Za-z0-9_-]{1,64}")  # mi_fifo refuses '.', '/', '\'
_STATUS = re.compile(r"([1-6][0-9][0-9])(?: (.*))?")
_CONTROL = re.compile(r"[\x00-\x20\x7f]")
_COMMAND = re.compile(r"[a-z0-9_]{1,64}")


class MiProtocol(enum.Enum):
    """Which MI dialect the server speaks (``mi_protocol``)."""

    JSONRPC = "jsonrpc"  # OpenSIPS >= 3.0: JSON-RPC 2.0, named parameters
    LEGACY = "legacy"  # OpenSIPS 1.x/2.x: 7 positional values, text tree replies


class MiTransport(enum.Enum):
    """How the bytes travel; decides the framing, not the dialect."""

    HTTP = "http"  # mi_http: POST /mi, application/json (JSON-RPC only)
    DATAGRAM = "datagram"  # mi_datagram: one request per datagram
    FIFO = "fifo"  # mi_fifo: ":<reply fifo>:" header, reply in a private FIFO
    XMLRPC = "xmlrpc"  # mi_xmlrpc(_ng) on /RPC2: struct (3.x) or positional (legacy)


# --------------------------------------------------------------------------- errors
# RemoteProtocolError/LocalProtocolError belong in errors.py (STYLE §6) once another
# module needs them; they live here until then.


class ReplyTooLarge(RemoteProtocolError):
    """The reply is larger than ``max_reply_bytes``; it was not parsed."""


class ReplyIdMismatch(RemoteProtocolError):
    """A JSON-RPC reply for another request; a datagram shell drops it and keeps waiting."""

    def __init__(self, expected: int | str, got: object) -> None:
        super().__init__(f"reply id {got!r} does not match request id {expected!r}")
        self.expected, self.got = expected, got


class RequestTooLarge(TransportError):
    """The request does not fit the transport (a datagram above 65457 bytes)."""

    retryable = False


class BodyNotEncodable(TransportError):
    """The body cannot be carried by this protocol (not UTF-8; not one-line-able)."""

    retryable = False


class MiError(PublishRejected):
    """The MI refused ``pua_publish``: JSON-RPC error, XML-RPC fault, legacy error tree.

    ``code`` is the MI/JSON-RPC code, ``message`` its text, ``data`` JSON-RPC's ``data``,
    ``hint`` the likely cause in our terms (empty when unknown)."""

    def __init__(
        self,
        code: int,
        message: str,
        *,
        data: object = None,
        hint: str = "",
        retryable: bool = False,
    ) -> None:
        super().__init__(code, message, retryable=retryable)
        self.code, self.message, self.data, self.hint = code, message, data, hint
        text = f"MI error {code} {message!r}"
        if data is not None:
            text += f" ({data})"
        if hint:
            text += f": {hint}"
        self.detail = text
        self.args = (text,)


class SipRejected(PublishRejected):
    """pua's PUBLISH got a failure (``status`` ``reason``); MI returned it as a result."""

    def __init__(self, status: int, reason: str, *, hint: str = "", retryable: bool) -> None:
        super().__init__(status, reason, retryable=retryable)
        self.hint = hint
        text = f"PUBLISH answered {status} {reason}" + (f": {hint}" if hint else "")
        self.detail = text
        self.args = (text,)


# --------------------------------------------------------------------------- values


class PublicationLike(Protocol):
    """What ``from_publication`` reads (``interfaces.Publication`` has it)."""

    @property
    def owner(self) -> str: ...
    @property
    def body(self) -> bytes: ...
    @property
    def etag(self) -> str | None: ...
    @property
    def content_type(self) -> str: ...
    @property
    def event(self) -> str: ...


def _check_token(what: str, value: object) -> None:
    if not isinstance(value, str) or not _TOKEN.fullmatch(value):
        raise LocalProtocolError(f"{what} must be 1-256 printable ASCII characters: {value!r}")


@dataclass(frozen=True, slots=True)
class PublishRequest:
    """One ``pua_publish`` call for event ``xcap-diff``.

    ``expires`` is in seconds; 0 means removal and then there is no body.  A request
    without body and with ``expires`` > 0 is a refresh.  There is deliberately no way to
    give extra headers."""

    presentity_uri: str
    expires: int
    content_type: str | None = None
    body: bytes | None = None
    etag: str | None = None

    def __post_init__(self) -> None:
        uri = self.presentity_uri
        if not isinstance(uri, str) or not uri.startswith(("sip:", "sips:")):
            raise LocalProtocolError(f"presentity_uri must be a SIP URI: {uri!r}")
        if _CONTROL.search(uri) or len(uri) > 1024:
            raise LocalProtocolError(f"presentity_uri: no spaces or control characters: {uri!r}")
        exp = self.expires
        if isinstance(exp, bool) or not isinstance(exp, int) or not 0 <= exp <= _MAX_EXPIRES:
            raise LocalProtocolError(f"expires must be an int in 0..{_MAX_EXPIRES}: {exp!r}")
        if (self.content_type is None) != (self.body is None):
            raise LocalProtocolError("content_type and body go together (pua_publish recipes)")
        if self.content_type is not None:
            ctype = self.content_type
            if not isinstance(ctype, str) or ctype == "." or not ctype or _CONTROL.search(ctype):
                raise LocalProtocolError(f"content_type must be a media type: {ctype!r}")
        if self.body is not None and not isinstance(self.body, bytes):
            raise LocalProtocolError(f"body must be bytes, not {type(self.body).__name__}")
        if exp == 0 and self.body is not None:
            raise LocalProtocolError("expires 0 removes the publication: it takes no body")
        if self.etag is not None:
            _check_token("etag", self.etag)
            if self.etag == ".":  # legacy "none"; 3.x takes it literally (418)
                raise LocalProtocolError("etag '.' is a legacy placeholder, not an entity-tag")

    @classmethod
    def from_publication(cls, publication: PublicationLike, *, expires: int) -> PublishRequest:
        if publication.event != EVENT_PACKAGE:
            raise LocalProtocolError(f"pua_mi here publishes {EVENT_PACKAGE!r} only")
        return cls(
            presentity_uri=publication.owner,
            expires=expires,
            content_type=publication.content_type,
            body=publication.body,
            etag=publication.etag,
        )

    @classmethod
    def removal(cls, presentity_uri: str, etag: str | None = None) -> PublishRequest:
        return cls(presentity_uri=presentity_uri, expires=0, etag=etag)

    @property
    def is_removal(self) -> bool:
        return self.expires == 0

    @property
    def describe(self) -> str:
        return f"pua_publish {self.presentity_uri}"

    def without_etag(self) -> PublishRequest:
        return replace(self, etag=None)


@dataclass(frozen=True, slots=True)
class CommandRequest:
    """An MI command without parameters (``which``, ``version``), as ``xcapdiff check``
    sends to see what the MI offers; encoded and decoded like ``pua_publish``."""

    method: str

    def __post_init__(self) -> None:
        if not isinstance(self.method, str) or not _COMMAND.fullmatch(self.method):
            raise LocalProtocolError(f"an MI command name is [a-z0-9_]+: {self.method!r}")

    @property
    def describe(self) -> str:
        return self.method


@dataclass(frozen=True, slots=True)
class CommandResult:
    """The command's result as the MI gave it: JSON-RPC ``result``, the XML-RPC value,
    or the legacy reply's lines after the status line."""

    value: object


def mi_command_names(result: CommandResult) -> frozenset[str]:
    """The command names in a ``which`` result (a list of names in every MI form)."""
    value = result.value
    if isinstance(value, str):
        value = value.split()
    if isinstance(value, dict):  # some versions wrap the list
        value = next((v for v in value.values() if isinstance(v, list)), None)
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise RemoteProtocolError(f"'which' did not answer a list of names: {value!r:.80}")
    return frozenset(v.strip() for v in value if v.strip())


@dataclass(frozen=True, slots=True)
class Published:
    """Success: the entity-tag and lifetime OpenSIPS granted (None when not told)."""

    etag: str | None = None
    expires: int | None = None
    detail: str = ""


@dataclass(frozen=True, slots=True)
class RetryWithoutEtag:
    """418 Wrong ETag: pua does not know the etag we sent.  Send ``request`` once."""

    request: PublishRequest
    detail: str = "418 Wrong ETag: resend once without etag"


MiResult = Published | RetryWithoutEtag


# --------------------------------------------------------------------------- encoding


def _body_text(body: bytes) -> str:
    try:
        return body.decode("utf-8")
    except UnicodeDecodeError as err:
        raise BodyNotEncodable(f"the body is not UTF-8 ({err}); MI carries text") from None


def _named_params(request: PublishRequest) -> dict[str, object]:
    # The key set picks one of pua_publish's recipes (MI.md); no extra_headers, ever.
    params: dict[str, object] = {
        "presentity_uri": request.presentity_uri,
        "expires": request.expires,
        "event_package": EVENT_PACKAGE,
    }
    if request.body is not None:
        params["content_type"] = request.content_type
        params["body"] = _body_text(request.body)
    if request.etag is not None:
        params["etag"] = request.etag
    return params


def _check_request_id(request_id: object) -> int | str:
    if isinstance(request_id, bool) or not isinstance(request_id, (int, str)):
        raise LocalProtocolError(f"JSON-RPC needs an int or str request_id: {request_id!r}")
    if isinstance(request_id, str) and (not request_id or _CONTROL.search(request_id)):
        raise LocalProtocolError(f"request_id: no empty, space or control text: {request_id!r}")
    return request_id


def _jsonrpc(request: PublishRequest, request_id: int | str) -> bytes:
    message = {
        "jsonrpc": "2.0",
        "method": "pua_publish",
        "id": request_id,
        "params": _named_params(request),
    }
    # Compact, so the object holds no raw newline (JSON escapes those inside strings).
    text = json.dumps(message, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
    return text.encode("utf-8")


def one_line_body(body: bytes) -> bytes:
    """``body`` (an XML document) as one line, C14N-equal to it (see the module doc)."""
    if not body:
        raise BodyNotEncodable("an empty body would end a legacy MI request")
    if b"\n" not in body and b"\r" not in body:
        return body  # already one line: send it byte-exact
    try:
        tree = parse_document(body, where="publication body")
    except XmlInputError as err:
        raise BodyNotEncodable(f"the legacy MI body must be XML: {err}") from err
    if tree.docinfo.doctype:  # type: ignore[attr-defined]  # lxml-stubs: DocInfo.doctype missing
        raise BodyNotEncodable("a DOCTYPE cannot be carried on one legacy MI line")
    root = tree.getroot()
    nodes = [*reversed(list(root.itersiblings(preceding=True))), root, *root.itersiblings()]
    parts = [b'<?xml version="1.0" encoding="UTF-8"?>']
    for node in nodes:
        for inner in node.iter(etree.Comment, etree.ProcessingInstruction):
            raw = etree.tostring(inner, encoding="UTF-8", xml_declaration=False, with_tail=False)
            if b"\n" in raw or b"\r" in raw:
                raise BodyNotEncodable(
                    "a comment or processing instruction with a line break cannot be "
                    "written on one legacy MI line (no character references there)"
                )
        parts.append(etree.tostring(node, encoding="UTF-8", xml_declaration=False, with_tail=False))
    # Only text nodes can still hold a raw LF (lxml escapes CR, and LF in attributes).
    line = b"".join(parts).replace(b"\n", b"&#10;")
    if b"\r" in line:  # pragma: no cover - lxml always escapes CR
        raise BodyNotEncodable("unexpected raw CR after serialization")
    return line


def _legacy_text(request: PublishRequest, header: str, *, fifo: bool) -> bytes:
    lines = [
        header.encode("ascii"),
        request.presentity_uri.encode("utf-8"),
        str(request.expires).encode("ascii"),
        EVENT_PACKAGE.encode("ascii"),
        (request.content_type or ".").encode("utf-8"),
        (request.etag or ".").encode("ascii"),
        b".",  # extra_headers: always none (a constant, never a parameter)
    ]
    if request.body is not None:
        lines.append(one_line_body(request.body))
    text = b"".join(line + b"\n" for line in lines)
    return text + b"\n" if fifo else text  # the empty line ends a FIFO request


def _xmlrpc(request: PublishRequest, protocol: MiProtocol) -> bytes:
    params: tuple[Any, ...]
    if protocol is MiProtocol.JSONRPC:
        params = (_named_params(request),)  # mi_xmlrpc_ng: the named params as one struct
    else:
        positional: list[Any] = [
            request.presentity_uri,
            request.expires,
            EVENT_PACKAGE,
            request.content_type or ".",
            request.etag or ".",
            ".",  # extra_headers: always none
        ]
        if request.body is not None:
            positional.append(_body_text(request.body))
        params = tuple(positional)
    text = xmlrpc.client.dumps(params, methodname="pua_publish")
    # XML parsers turn a raw CR into LF; dumps writes none itself, so every CR is data.
    return text.replace("\r", "&#13;").encode("utf-8")


def _command(
    request: CommandRequest,
    proto: MiProtocol,
    kind: MiTransport,
    request_id: int | str | None,
    reply_fifo: str | None,
) -> bytes:
    if kind is MiTransport.XMLRPC:
        return xmlrpc.client.dumps((), methodname=request.method).encode("utf-8")
    if proto is MiProtocol.LEGACY:
        if kind is MiTransport.HTTP:
            raise LocalProtocolError("legacy MI over HTTP is XML-RPC: use the xmlrpc transport")
        text = f":{request.method}:{reply_fifo or ''}\n"
        return (text + "\n" if kind is MiTransport.FIFO else text).encode("ascii")
    message = {"jsonrpc": "2.0", "method": request.method, "id": _check_request_id(request_id)}
    data = json.dumps(message, separators=(",", ":")).encode("ascii")
    if kind is MiTransport.FIFO:
        data = f":{reply_fifo}:".encode("ascii") + data + b"\n"
    return data


def _command_reply(
    data: bytes, request: CommandRequest, proto: MiProtocol, kind: MiTransport, rid: object
) -> CommandResult:
    if kind is MiTransport.XMLRPC:
        if b"\x00" in data or b"<!DOCTYPE" in data or b"<!ENTITY" in data:
            raise RemoteProtocolError("XML-RPC reply with a DTD or NUL bytes refused")
        try:
            params, _ = xmlrpc.client.loads(data, use_builtin_types=True)
        except xmlrpc.client.Fault as fault:
            raise MiError(int(fault.faultCode), str(fault.faultString)) from None
        except _XMLRPC_ERRORS as err:
            raise RemoteProtocolError(f"malformed XML-RPC reply: {err!r}") from None
        return CommandResult(params[0] if params else None)
    text = _text(data).strip()
    if proto is MiProtocol.LEGACY or not text.startswith("{"):
        lines = text.replace("\r\n", "\n").split("\n")
        status = _status_line(lines[0])
        if status is None:
            raise RemoteProtocolError(f"no '<code> <reason>' MI status line: {lines[0][:80]!r}")
        if not 200 <= status[0] < 300:
            raise MiError(status[0], status[1])
        return CommandResult([line.strip() for line in lines[1:] if line.strip()])
    message = _load_json(text)
    if not isinstance(message, dict) or ("result" in message) == ("error" in message):
        raise RemoteProtocolError("not a JSON-RPC 2.0 reply with one of result, error")
    if "error" in message:
        error = message["error"] if isinstance(message["error"], dict) else {}
        code, what = error.get("code"), error.get("message")
        hint = "the module providing it is not loaded" if code == -32601 else ""
        raise MiError(code if isinstance(code, int) else 0, str(what), hint=hint)
    _check_id(message.get("id"), _check_request_id(rid))
    return CommandResult(message["result"])


def check_datagram_size(data: bytes, *, limit: int = MAX_DATAGRAM_BYTES) -> None:
    """Raise ``RequestTooLarge`` when ``data`` does not fit one mi_datagram request."""
    if len(data) > limit:
        raise RequestTooLarge(
            f"MI datagram of {len(data)} bytes exceeds the {limit}-byte limit; "
            "use the FIFO or HTTP transport for bodies this large",
            retryable=False,
        )


def _enum(kind: type[enum.Enum], value: object) -> Any:
    try:
        return kind(value)
    except ValueError:
        names = ", ".join(repr(m.value) for m in kind)
        raise LocalProtocolError(f"{kind.__name__}: {value!r} is not one of {names}") from None


def encode_request(
    request: PublishRequest | CommandRequest,
    *,
    protocol: MiProtocol | str,
    transport: MiTransport | str,
    request_id: int | str | None = None,
    reply_fifo: str | None = None,
) -> bytes:
    """The bytes to write for ``request`` (see the module doc)."""
    proto: MiProtocol = _enum(MiProtocol, protocol)
    kind: MiTransport = _enum(MiTransport, transport)
    if (reply_fifo is not None) != (kind is MiTransport.FIFO):
        raise LocalProtocolError("reply_fifo is needed for the FIFO transport, and only there")
    if reply_fifo is not None and not _FIFO_NAME.fullmatch(reply_fifo):
        raise LocalProtocolError(f"reply_fifo must match {_FIFO_NAME.pattern}: {reply_fifo!r}")
    if isinstance(request, CommandRequest):
        return _command(request, proto, kind, request_id, reply_fifo)
    if kind is MiTransport.XMLRPC:
        return _xmlrpc(request, proto)
    if proto is MiProtocol.LEGACY:
        if kind is MiTransport.HTTP:
            raise LocalProtocolError("legacy MI over HTTP is XML-RPC: use the xmlrpc transport")
        header = f":pua_publish:{reply_fifo or ''}"
        data = _legacy_text(request, header, fifo=kind is MiTransport.FIFO)
    else:
        data = _jsonrpc(request, _check_request_id(request_id))
        if kind is MiTransport.FIFO:
            data = f":{reply_fifo}:".encode("ascii") + data + b"\n"
    if kind is MiTransport.DATAGRAM:
        check_datagram_size(data)
    return data


# --------------------------------------------------------------------------- decoding


def _status_line(line: str) -> tuple[int, str] | None:
    match = _STATUS.fullmatch(line.strip())
    if match is None:
        return None
    return int(match.group(1)), (match.group(2) or "").strip()


def _expires_field(value: object) -> int | None:
    if value is None:
        return None
    if isinstance(value, str) and value.isascii() and value.isdigit() and len(value) <= 10:
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= _MAX_EXPIRES:
        raise RemoteProtocolError(f"Expires is not a number of seconds: {value!r}")
    return value


def _sip_failure(status: int, reason: str) -> SipRejected:
    retryable = status == 408 or 500 <= status < 600 or "timeout" in reason.lower()
    hint = ""
    if status == 408:
        hint = "the presence server did not answer pua's PUBLISH"
    elif status == 489:
        hint = "the presence server does not know event xcap-diff (load presence_xcapdiff there)"
    return SipRejected(status, reason, hint=hint, retryable=retryable)


def _result(result: object, request: PublishRequest) -> Published:
    """A successful MI command: ``{"reply": "<SIP code> <reason>", "ETag", "Expires"}``."""
    if not isinstance(result, dict):
        raise RemoteProtocolError(f"result is not an object: {type(result).__name__}")
    reply = result.get("reply")
    status = _status_line(reply) if isinstance(reply, str) else None
    if status is None:
        raise RemoteProtocolError(f"result has no '<code> <reason>' reply: {reply!r}")
    code, reason = status
    if code < 200:
        raise RemoteProtocolError(f"a provisional SIP status as the final result: {reply!r}")
    if code >= 300:
        # MI.md: a SIP failure is a *result* without ETag/Expires, not an error.
        raise _sip_failure(code, reason)
    etag = result.get("ETag")
    if etag is not None and (not isinstance(etag, str) or not _TOKEN.fullmatch(etag)):
        raise RemoteProtocolError(f"ETag is not an entity-tag: {etag!r}")
    expires = _expires_field(result.get("Expires"))
    detail = f"{code} {reason}".strip()
    if request.is_removal:
        detail += ": removed"
    elif etag is None:
        detail += ": no ETag in the reply"
    return Published(etag=etag, expires=expires, detail=detail)


def _mi_failure(code: int, message: str, data: object, request: PublishRequest) -> MiResult:
    """An MI error (any transport, any dialect): a result for 418/500-on-removal, else raise."""
    lowered = message.lower()
    if code == 418:
        if request.etag is not None:
            return RetryWithoutEtag(request.without_etag(), f"418 {message}: resend without etag")
        raise MiError(code, message, data=data, hint="no etag was sent, so resending cannot help")
    if code == 500:
        # One code for several causes (MI.md): what we sent tells them apart.
        if request.is_removal:
            return Published(None, 0, f"already removed: pua holds no publication ({message})")
        if request.body is None:
            hint = "a refresh without body, but pua holds no publication: send the full body"
        else:
            # OpenSIPS 3.6.8 answers this too when presence_xcapdiff is not loaded
            # (pua logs "event not found in list"): both causes are named.
            hint = (
                "pua could not send the PUBLISH: presence_xcapdiff is not loaded (OpenSIPS "
                "logs 'event not found in list'), or pua_mi's presence_server is not set "
                "and the presentity's domain does not resolve to the presence server"
            )
        raise MiError(code, message, data=data, hint=hint)
    if code == 400 and "unknown event" in lowered:
        hint = "presence_xcapdiff not loaded: OpenSIPS has no xcap-diff event"
        raise MiError(code, message, data=data, hint=hint)
    if code == 400:
        hint = "OpenSIPS refused the request's shape; does mi_protocol match its version?"
        raise MiError(code, message, data=data, hint=hint)
    if code == 404:
        hint = f"OpenSIPS cannot parse the presentity URI {request.presentity_uri!r}"
        raise MiError(code, message, data=data, hint=hint)
    hints = {
        -32602: "pua_publish rejected the parameters (mi_protocol = jsonrpc needs OpenSIPS 3.x)",
        -32601: "no pua_publish command: is pua_mi loaded?",
        -32700: "OpenSIPS could not parse the JSON we sent (a bug here)",
        -32600: "OpenSIPS saw no valid JSON-RPC request (a bug here)",
    }
    if code in hints:
        raise MiError(code, message, data=data, hint=hints[code])
    retryable = code == 408 or 500 <= code < 600 or code == -32603 or -32099 <= code <= -32000
    raise MiError(code, message, data=data, retryable=retryable)


def _tree(lines: list[str], request: PublishRequest) -> Published:
    """Legacy reply nodes: an unnamed ``<SIP code> <reason>`` node, ``ETag::``, ``Expires::``."""
    fields: dict[str, str] = {}
    sip: str | None = None
    for line in lines:
        if not line.strip():
            break  # the empty line ends the tree
        if "::" in line:
            name, _, value = line.partition("::")
            fields[name.strip().lower()] = value.strip()
        elif _status_line(line) is not None:
            sip = line.strip()  # the last unnamed status line is the PUBLISH's
        else:
            raise RemoteProtocolError(f"unexpected line in the MI reply tree: {line[:80]!r}")
    if sip is None:
        raise RemoteProtocolError("the MI reply tree has no SIP status node")
    result = {"reply": sip, "ETag": fields.get("etag"), "Expires": fields.get("expires")}
    return _result(result, request)


def _text(data: bytes) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as err:
        raise RemoteProtocolError(f"reply is not UTF-8: {err}") from None


def _legacy_reply(data: bytes, request: PublishRequest) -> MiResult:
    text = _text(data)
    if text.lstrip().startswith("{"):
        raise RemoteProtocolError("a JSON reply: this OpenSIPS is 3.x, set mi_protocol = jsonrpc")
    lines = text.replace("\r\n", "\n").split("\n")
    status = _status_line(lines[0])
    if status is None:
        raise RemoteProtocolError(f"no '<code> <reason>' MI status line: {lines[0][:80]!r}")
    code, reason = status
    if code >= 300 or code < 200:
        return _mi_failure(code, reason, None, request)
    if code == 202:
        return Published(None, None, "202 Accepted: the outcome of the PUBLISH is unknown")
    return _tree(lines[1:], request)


def _reject_constant(name: str) -> object:
    raise ValueError(f"{name} is not JSON")


def _load_json(text: str) -> object:
    try:
        return json.loads(text, parse_constant=_reject_constant)
    except (ValueError, RecursionError) as err:  # JSONDecodeError is a ValueError
        raise RemoteProtocolError(f"malformed JSON reply: {err}") from None


def _jsonrpc_reply(data: bytes, request: PublishRequest, request_id: int | str) -> MiResult:
    text = _text(data).strip()
    if not text.startswith("{"):
        # mi_datagram answers non-JSON with plain text: "400 Parse_error".
        status = _status_line(text.split("\n", 1)[0])
        if status is not None and status[0] >= 300:
            return _mi_failure(status[0], status[1], None, request)
        if status is not None:
            raise RemoteProtocolError("a legacy MI text reply: set mi_protocol = legacy")
        raise RemoteProtocolError(f"not a JSON-RPC reply: {text[:80]!r}")
    message = _load_json(text)
    if not isinstance(message, dict) or message.get("jsonrpc") != "2.0":
        raise RemoteProtocolError("not a JSON-RPC 2.0 reply object")
    if ("result" in message) == ("error" in message) or "id" not in message:
        raise RemoteProtocolError("a JSON-RPC reply needs an id and one of result, error")
    got = message["id"]
    if "error" in message:
        error = message["error"]
        if not isinstance(error, dict):
            raise RemoteProtocolError(f"JSON-RPC error is not an object: {error!r}")
        code, text_ = error.get("code"), error.get("message")
        if isinstance(code, bool) or not isinstance(code, int) or not isinstance(text_, str):
            raise RemoteProtocolError(f"JSON-RPC error without int code and message: {error!r}")
        # A request OpenSIPS could not read gets id null (JSON-RPC 2.0 §5).
        if not (got is None and code in (-32700, -32600)):
            _check_id(got, request_id)
        return _mi_failure(code, text_, error.get("data"), request)
    _check_id(got, request_id)
    return _result(message["result"], request)


def _check_id(got: object, expected: int | str) -> None:
    if type(got) is not type(expected) or got != expected:
        raise ReplyIdMismatch(expected, got)


_XMLRPC_ERRORS = (
    ExpatError,
    xmlrpc.client.ResponseError,
    ValueError,
    TypeError,
    OverflowError,
    IndexError,
    KeyError,
    AttributeError,
    RecursionError,
)


def _xmlrpc_reply(data: bytes, request: PublishRequest) -> MiResult:
    # No DTDs: xmlrpc.client uses expat, which would expand internal entities.  A NUL
    # byte means UTF-16/32, where these byte checks would not see the markup.
    if b"\x00" in data or b"<!DOCTYPE" in data or b"<!ENTITY" in data:
        raise RemoteProtocolError("XML-RPC reply with a DTD or NUL bytes refused")
    try:
        params, _ = xmlrpc.client.loads(data, use_builtin_types=True)
    except xmlrpc.client.Fault as fault:
        code, message = fault.faultCode, fault.faultString
        if isinstance(code, bool) or not isinstance(code, int):
            raise RemoteProtocolError(f"XML-RPC fault without int code: {code!r}") from None
        return _mi_failure(code, str(message), None, request)
    except _XMLRPC_ERRORS as err:
        raise RemoteProtocolError(f"malformed XML-RPC reply: {err!r}") from None
    if len(params) != 1:
        raise RemoteProtocolError(f"XML-RPC reply with {len(params)} values, expected 1")
    value = params[0]
    if isinstance(value, dict):  # mi_xmlrpc_ng (3.x): the JSON-RPC result as a struct
        return _result(value, request)
    if isinstance(value, str):  # mi_xmlrpc (1.x): the reply tree as one string
        return _tree(value.replace("\r\n", "\n").split("\n"), request)
    raise RemoteProtocolError(f"XML-RPC reply is neither struct nor string: {type(value).__name__}")


def decode_reply(
    data: bytes,
    *,
    request: PublishRequest | CommandRequest,
    protocol: MiProtocol | str,
    transport: MiTransport | str,
    request_id: int | str | None = None,
    max_reply_bytes: int = DEFAULT_MAX_REPLY_BYTES,
) -> MiResult | CommandResult:
    """Classify the reply ``data`` to ``request`` (see the module doc's table)."""
    proto: MiProtocol = _enum(MiProtocol, protocol)
    kind: MiTransport = _enum(MiTransport, transport)
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise LocalProtocolError(f"decode_reply takes bytes, not {type(data).__name__}")
    if len(data) > max_reply_bytes:
        raise ReplyTooLarge(f"MI reply of {len(data)} bytes exceeds {max_reply_bytes}")
    data = bytes(data)
    if isinstance(request, CommandRequest):
        return _command_reply(data, request, proto, kind, request_id)
    if kind is MiTransport.XMLRPC:
        return _xmlrpc_reply(data, request)
    if proto is MiProtocol.LEGACY:
        return _legacy_reply(data, request)
    return _jsonrpc_reply(data, request, _check_request_id(request_id))


def reply_id(data: bytes, *, max_reply_bytes: int = DEFAULT_MAX_REPLY_BYTES) -> int | str | None:
    """The id of a JSON-RPC reply, or None when it names no request (plain text, id null,
    garbage, too large): a datagram shell matches replies to requests with it."""
    if len(data) > max_reply_bytes:
        return None
    try:
        message = json.loads(bytes(data).decode("utf-8"), parse_constant=_reject_constant)
    except (ValueError, RecursionError):  # UnicodeDecodeError is a ValueError
        return None
    got = message.get("id") if isinstance(message, dict) else None
    if isinstance(got, bool) or not isinstance(got, (int, str)):
        return None
    return got
