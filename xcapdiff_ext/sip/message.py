"""SIP messages (RFC 3261 §7, §20): frozen values, datagram parsing and a stream reader.

Pure (STYLE §2): no I/O, no clock, no logging.  The peer's bytes that break the grammar
raise ``RemoteProtocolError`` (never another type); building a message wrongly (a CR/LF
in a header value, a bad method token) raises ``LocalProtocolError``, so header
injection through ``sip_extra_headers`` cannot happen.

``Content-Length`` is framing, not data: it is never stored in ``headers`` (building a
message with one is refused), ``to_bytes`` computes it from ``body``, the parsers check
it and drop it, and ``header("Content-Length")`` answers ``str(len(body))``.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Iterable
from dataclasses import dataclass, replace
from typing import Any, ClassVar, Final, Literal, Self

from xcapdiff_ext.errors import LocalProtocolError, RemoteProtocolError

__all__ = [
    "DEFAULT_MAX_BYTES",
    "NEED_DATA",
    "NeedData",
    "SipMessageReader",
    "SipRequest",
    "SipResponse",
    "parse_message",
    "parse_params",
    "quote_string",
]

DEFAULT_MAX_BYTES: Final = 65535

# RFC 3261 §7.3.3 compact forms (plus the ones later RFCs registered), lower-cased.
_COMPACT: Final = {
    "i": "call-id",
    "m": "contact",
    "e": "content-encoding",
    "l": "content-length",
    "c": "content-type",
    "f": "from",
    "s": "subject",
    "k": "supported",
    "t": "to",
    "v": "via",
    "o": "event",
    "u": "allow-events",
    "r": "refer-to",
    "b": "referred-by",
    "x": "session-expires",
    "a": "accept-contact",
    "j": "reject-contact",
    "d": "request-disposition",
}

# Headers whose grammar is a comma-separated list (RFC 3261 §7.3.1, §20), so that several
# header lines and one line with commas mean the same.  Authentication headers are NOT
# lists of values (their parameters are comma-separated): never split them.
_LIST_HEADERS: Final = frozenset(
    {
        "accept",
        "accept-encoding",
        "accept-language",
        "alert-info",
        "allow",
        "allow-events",
        "call-info",
        "contact",
        "content-encoding",
        "content-language",
        "error-info",
        "in-reply-to",
        "proxy-require",
        "record-route",
        "require",
        "route",
        "supported",
        "unsupported",
        "via",
        "warning",
    }
)

_CONTENT_LENGTH: Final = "content-length"
_VERSION: Final = "SIP/2.0"
_TOKEN = re.compile(r"[A-Za-z0-9\-.!%*_+`'~]+")
_DIGITS = re.compile(r"[0-9]+")
_STATUS = re.compile(r"[1-6][0-9][0-9]")
_HEAD_END = re.compile(rb"\r?\n\r?\n")
_LINE_SPLIT = re.compile(rb"\r?\n")
_FORBIDDEN_IN_VALUE = re.compile(r"[\r\n\x00]")
_FORBIDDEN_IN_URI = re.compile(r"[\x00-\x20\x7f]")


def _canonical(name: str) -> str:
    lowered = name.lower()
    return _COMPACT.get(lowered, lowered)


def _split_outside(value: str, sep: str) -> list[str]:
    """Split on ``sep`` outside double quotes (with backslash escapes) and <angle brackets>."""
    parts: list[str] = []
    start, quoted, escaped, angle = 0, False, False, False
    for i, ch in enumerate(value):
        if quoted:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == '"':
                quoted = False
        elif ch == '"':
            quoted = True
        elif ch == "<":
            angle = True
        elif ch == ">":
            angle = False
        elif ch == sep and not angle:
            parts.append(value[start:i])
            start = i + 1
    parts.append(value[start:])
    return parts


def _unquote(value: str) -> str:
    if len(value) >= 2 and value[0] == '"' and value[-1] == '"':
        return re.sub(r"\\(.)", r"\1", value[1:-1], flags=re.DOTALL)
    return value


def parse_params(value: str) -> tuple[str, dict[str, str | None]]:
    """``main;a=1;b="x;y";lr`` → ``("main", {"a": "1", "b": "x;y", "lr": None})``.

    Parameter names are lower-cased (they are case-insensitive); quoted values are unquoted;
    a flag parameter maps to None.  The first value of a repeated name wins.  Never raises."""
    main, *raw = _split_outside(value, ";")
    params: dict[str, str | None] = {}
    for item in raw:
        name, eq, val = item.partition("=")
        key = name.strip(" \t").lower()
        if key and key not in params:
            params[key] = _unquote(val.strip(" \t")) if eq else None
    return main.strip(" \t"), params


def quote_string(s: str) -> str:
    """RFC 3261 §25.1 quoted-string: backslash-escape ``\\`` and ``"``; CR/LF/NUL refused."""
    if _FORBIDDEN_IN_VALUE.search(s):
        raise LocalProtocolError(f"cannot quote a string containing CR, LF or NUL: {s!r}")
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _check_utf8(text: str, what: str) -> None:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as err:
        raise LocalProtocolError(f"{what} is not encodable as UTF-8: {text!r}") from err


def _normalize_headers(headers: Iterable[tuple[str, str]]) -> tuple[tuple[str, str], ...]:
    out: list[tuple[str, str]] = []
    for item in headers:
        if not isinstance(item, tuple) or len(item) != 2:
            raise LocalProtocolError(f"a header is a (name, value) pair, not {item!r}")
        name, value = item
        if not isinstance(name, str) or not _TOKEN.fullmatch(name):
            raise LocalProtocolError(f"header name is not a token: {name!r}")
        if not isinstance(value, str):
            raise LocalProtocolError(f"header {name} value is not a str: {value!r}")
        if _FORBIDDEN_IN_VALUE.search(value):
            raise LocalProtocolError(f"header {name} value contains CR, LF or NUL: {value!r}")
        if _canonical(name) == _CONTENT_LENGTH:
            raise LocalProtocolError("Content-Length is computed from the body; do not set it")
        _check_utf8(value, f"header {name} value")
        out.append((name, value.strip(" \t")))
    return tuple(out)


def _check_body(body: object) -> None:
    if not isinstance(body, bytes):
        raise LocalProtocolError(f"body must be bytes, not {type(body).__name__}")


class _Message:
    """Header access shared by requests and responses (both frozen, slotted dataclasses)."""

    __slots__ = ()
    __dataclass_fields__: ClassVar[dict[str, Any]]
    headers: tuple[tuple[str, str], ...]
    body: bytes

    def header(self, name: str) -> str | None:
        """The first value of ``name`` (case-insensitive; compact forms match), or None."""
        wanted = _canonical(name)
        if wanted == _CONTENT_LENGTH:
            return str(len(self.body))
        for key, value in self.headers:
            if _canonical(key) == wanted:
                return value
        return None

    def header_values(self, name: str) -> list[str]:
        """Every value of ``name`` in order; list-valued headers (Via, Supported…) are also
        split on commas outside quotes and <>.  WWW-Authenticate & co. are never split."""
        wanted = _canonical(name)
        if wanted == _CONTENT_LENGTH:
            return [str(len(self.body))]
        values: list[str] = []
        for key, value in self.headers:
            if _canonical(key) != wanted:
                continue
            if wanted in _LIST_HEADERS:
                values.extend(v for v in (p.strip(" \t") for p in _split_outside(value, ",")) if v)
            else:
                values.append(value)
        return values

    def with_header(self, name: str, value: str) -> Self:
        """A copy where ``name`` has exactly this one value: it takes the place of the first
        existing line of that name (others removed), or is appended."""
        wanted = _canonical(name)
        new: list[tuple[str, str]] = []
        placed = False
        for key, old in self.headers:
            if _canonical(key) == wanted:
                if not placed:
                    new.append((name, value))
                    placed = True
            else:
                new.append((key, old))
        if not placed:
            new.append((name, value))
        return replace(self, headers=tuple(new))

    def without_header(self, name: str) -> Self:
        """A copy without any line of ``name`` (compact forms included)."""
        wanted = _canonical(name)
        return replace(self, headers=tuple(h for h in self.headers if _canonical(h[0]) != wanted))

    @property
    def branch(self) -> str | None:
        """The top Via's ``branch`` parameter (the transaction key, RFC 3261 §17.1.3)."""
        vias = self.header_values("Via")
        if not vias:
            return None
        return parse_params(vias[0])[1].get("branch")

    @property
    def call_id(self) -> str | None:
        return self.header("Call-ID")

    @property
    def cseq(self) -> tuple[int, str] | None:
        """``(number, METHOD)`` from CSeq, or None when absent or malformed."""
        value = self.header("CSeq")
        if value is None:
            return None
        parts = value.split()
        if len(parts) != 2 or not _DIGITS.fullmatch(parts[0]) or not _TOKEN.fullmatch(parts[1]):
            return None
        return int(parts[0]), parts[1]

    def _start_line(self) -> str:
        raise NotImplementedError

    def to_bytes(self) -> bytes:
        """Start line, headers as stored, a computed Content-Length, CRLF, body."""
        lines = [self._start_line()]
        lines.extend(f"{name}: {value}" for name, value in self.headers)
        lines.append(f"Content-Length: {len(self.body)}")
        return ("\r\n".join(lines) + "\r\n\r\n").encode("utf-8") + self.body


@dataclass(frozen=True, slots=True)
class SipRequest(_Message):
    """A request; validated on construction, so an invalid one cannot exist (h11 events)."""

    method: str
    uri: str
    headers: tuple[tuple[str, str], ...] = ()
    body: bytes = b""

    def __post_init__(self) -> None:
        if not isinstance(self.method, str) or not _TOKEN.fullmatch(self.method):
            raise LocalProtocolError(f"method is not a token: {self.method!r}")
        if not isinstance(self.uri, str) or not self.uri or _FORBIDDEN_IN_URI.search(self.uri):
            raise LocalProtocolError(f"request URI is empty or has whitespace: {self.uri!r}")
        _check_utf8(self.uri, "request URI")
        object.__setattr__(self, "headers", _normalize_headers(self.headers))
        _check_body(self.body)

    def _start_line(self) -> str:
        return f"{self.method} {self.uri} {_VERSION}"


@dataclass(frozen=True, slots=True)
class SipResponse(_Message):
    """A response; ``status`` 100-699, ``reason`` may be empty."""

    status: int
    reason: str
    headers: tuple[tuple[str, str], ...] = ()
    body: bytes = b""

    def __post_init__(self) -> None:
        if type(self.status) is not int or not 100 <= self.status <= 699:
            raise LocalProtocolError(f"status must be an int in 100-699: {self.status!r}")
        if not isinstance(self.reason, str) or _FORBIDDEN_IN_VALUE.search(self.reason):
            raise LocalProtocolError(f"reason phrase contains CR, LF or NUL: {self.reason!r}")
        _check_utf8(self.reason, "reason phrase")
        object.__setattr__(self, "reason", self.reason.strip(" \t"))
        object.__setattr__(self, "headers", _normalize_headers(self.headers))
        _check_body(self.body)

    def _start_line(self) -> str:
        return f"{_VERSION} {self.status} {self.reason}"


# ---------------------------------------------------------------------------- parsing


def _fail(reason: str) -> RemoteProtocolError:
    return RemoteProtocolError(f"malformed SIP message: {reason}")


def _decode(raw: bytes, what: str) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as err:
        raise _fail(f"{what} is not UTF-8") from err


def _skip_keepalives(data: bytes | bytearray, start: int = 0) -> int:
    """Index of the first byte after any CRLF / LF keep-alives (RFC 3261 §7.5, RFC 5626)."""
    i = start
    while True:
        if data.startswith(b"\r\n", i):
            i += 2
        elif data.startswith(b"\n", i):
            i += 1
        else:
            return i


def _parse_head(
    head: bytes,
) -> tuple[tuple[str, str, str], list[tuple[str, str]], int | None]:
    """Start line (3 parts), headers (unfolded, Content-Length removed), Content-Length."""
    lines = _LINE_SPLIT.split(head)
    start = _decode(lines[0], "start line")
    if "\r" in start or "\x00" in start:
        raise _fail("stray CR or NUL in the start line")
    headers: list[tuple[str, str]] = []
    for raw in lines[1:]:
        line = _decode(raw, "header line")
        if "\r" in line or "\x00" in line:
            raise _fail("stray CR or NUL in a header line")
        if line[:1] in (" ", "\t"):  # folding, RFC 3261 §7.3.1: continuation of the last
            if not headers:
                raise _fail("continuation line before the first header")
            name, value = headers[-1]
            headers[-1] = (name, (value + " " + line.strip(" \t")).strip(" \t"))
            continue
        name, colon, value = line.partition(":")
        name = name.rstrip(" \t")
        if not colon or not _TOKEN.fullmatch(name):
            raise _fail(f"bad header line {line[:40]!r}")
        headers.append((name, value.strip(" \t")))
    length: int | None = None
    kept: list[tuple[str, str]] = []
    for name, value in headers:
        if _canonical(name) != _CONTENT_LENGTH:
            kept.append((name, value))
            continue
        if not _DIGITS.fullmatch(value) or len(value) > 10:
            raise _fail(f"bad Content-Length {value[:20]!r}")
        if length is not None and length != int(value):
            raise _fail("conflicting Content-Length headers")
        length = int(value)
    return _split_start_line(start), kept, length


def _split_start_line(start: str) -> tuple[str, str, str]:
    if start[:4].upper() == "SIP/":
        version, _, rest = start.partition(" ")
        status, _, reason = rest.partition(" ")
        if version.upper() != _VERSION:
            raise _fail(f"unsupported version {version[:20]!r}")
        if not _STATUS.fullmatch(status):
            raise _fail(f"bad status code {status[:20]!r}")
        return version, status, reason
    parts = start.split(" ")
    if len(parts) != 3:
        raise _fail(f"bad request line {start[:60]!r}")
    method, uri, version = parts
    if version.upper() != _VERSION:
        raise _fail(f"unsupported version {version[:20]!r}")
    if not _TOKEN.fullmatch(method):
        raise _fail(f"method is not a token: {method[:20]!r}")
    if not uri or _FORBIDDEN_IN_URI.search(uri):
        raise _fail("bad request URI")
    return method, uri, version


def _build(
    start: tuple[str, str, str], headers: list[tuple[str, str]], body: bytes
) -> SipRequest | SipResponse:
    try:
        if start[0].upper() == _VERSION:
            return SipResponse(int(start[1]), start[2], tuple(headers), body)
        return SipRequest(start[0], start[1], tuple(headers), body)
    except LocalProtocolError as err:  # validation the grammar checks above did not cover
        raise _fail(str(err)) from err


def parse_message(data: bytes, *, max_bytes: int = DEFAULT_MAX_BYTES) -> SipRequest | SipResponse:
    """One message from one datagram (RFC 3261 §7, §18.3).

    CRLF or bare LF line ends; folded headers are unfolded to one SP; leading CRLFs are
    skipped.  Content-Length, when present, must equal the bytes after the blank line;
    absent, the body is the rest of the datagram.  Raises only ``RemoteProtocolError``."""
    if not isinstance(data, bytes | bytearray):
        raise _fail("not bytes")
    if len(data) > max_bytes:
        raise _fail(f"{len(data)} bytes exceed the {max_bytes}-byte limit")
    data = bytes(data)
    begin = _skip_keepalives(data)
    end = _HEAD_END.search(data, begin)
    if end is None:
        if not data.endswith(b"\n") or begin >= len(data):
            raise _fail("no end of headers" if begin < len(data) else "empty")
        head, body = data[begin:].rstrip(b"\r\n"), b""
    else:
        head, body = data[begin : end.start()], data[end.end() :]
    start, headers, length = _parse_head(head)
    if length is not None and length != len(body):
        raise _fail(f"Content-Length {length} but {len(body)} body bytes")
    return _build(start, headers, body)


class NeedData(enum.Enum):
    """The reader needs more bytes before it can return a message (h11's NEED_DATA)."""

    NEED_DATA = "NEED_DATA"


NEED_DATA: Final = NeedData.NEED_DATA


class SipMessageReader:
    """Messages from a byte stream (TCP/TLS; RFC 3261 §18.3): the caller ``feed``s bytes,
    then calls ``next_message`` until it returns ``NEED_DATA``.

    Content-Length is required.  CRLF keep-alives between messages (RFC 5626 §3.5.1) are
    skipped.  ``feed(b"")`` means EOF; a partial message at EOF is an error.  After any
    ``RemoteProtocolError`` the reader stays broken (the connection must be closed)."""

    def __init__(self, *, max_message_bytes: int = DEFAULT_MAX_BYTES) -> None:
        self._buffer = bytearray()
        self._max = max_message_bytes
        self._eof = False
        self._error: str | None = None
        self._scanned = 0  # where the search for the end of the headers resumes

    @property
    def at_eof(self) -> bool:
        """True once ``feed(b"")`` was called (no message will follow the buffered ones)."""
        return self._eof

    @property
    def buffered(self) -> int:
        """Bytes received and not yet returned as a message."""
        return len(self._buffer)

    def feed(self, data: bytes) -> None:
        if self._eof:
            raise LocalProtocolError("feed() after EOF")
        if not data:
            self._eof = True
        else:
            self._buffer += data

    def next_message(self) -> SipRequest | SipResponse | Literal[NeedData.NEED_DATA]:
        if self._error is not None:
            raise _fail(f"stream already broken: {self._error}")
        try:
            return self._next()
        except RemoteProtocolError as err:
            self._error = err.detail
            raise

    def _next(self) -> SipRequest | SipResponse | Literal[NeedData.NEED_DATA]:
        buf = self._buffer
        skip = _skip_keepalives(buf)
        if skip:
            del buf[:skip]
            self._scanned = 0
        if buf == b"\r":
            return self._incomplete()
        end = _HEAD_END.search(buf, max(0, self._scanned - 3))
        if end is None:
            self._scanned = len(buf)
            if len(buf) > self._max:
                raise _fail(f"headers exceed the {self._max}-byte limit")
            return self._incomplete()
        start, headers, length = _parse_head(bytes(buf[: end.start()]))
        if length is None:
            raise _fail("no Content-Length on a stream")
        total = end.end() + length
        if total > self._max:
            raise _fail(f"{total}-byte message exceeds the {self._max}-byte limit")
        if len(buf) < total:
            return self._incomplete()
        body = bytes(buf[end.end() : total])
        del buf[:total]
        self._scanned = 0
        return _build(start, headers, body)

    def _incomplete(self) -> Literal[NeedData.NEED_DATA]:
        if self._eof and self._buffer.strip(b"\r\n"):
            raise _fail("connection closed inside a message")
        return NEED_DATA
