"""xcapdiff_ext.sip.message: build, parse (datagram and stream), RFC 4475 robustness."""

from __future__ import annotations

import contextlib

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from xcapdiff_ext.errors import LocalProtocolError, RemoteProtocolError
from xcapdiff_ext.sip.message import (
    NEED_DATA,
    SipMessageReader,
    SipRequest,
    SipResponse,
    parse_message,
    parse_params,
    quote_string,
)

TOKEN_CHARS = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-.!%*_+`'~"
tokens = st.text(TOKEN_CHARS, min_size=1, max_size=12)
header_names = tokens.filter(lambda n: n.lower() not in ("content-length", "l"))
header_values = st.text(
    st.characters(blacklist_categories=("Cs",), blacklist_characters="\r\n\x00"), max_size=40
).map(lambda v: v.strip(" \t"))
uris = st.text(
    st.characters(blacklist_categories=("Cs",), min_codepoint=0x21).filter(lambda c: c != "\x7f"),
    min_size=1,
    max_size=30,
)
headers = st.lists(st.tuples(header_names, header_values), max_size=8).map(tuple)
bodies = st.binary(max_size=200)
requests = st.builds(SipRequest, tokens, uris, headers, bodies)
responses = st.builds(SipResponse, st.integers(100, 699), header_values, headers, bodies)
messages = st.one_of(requests, responses)

PUBLISH = SipRequest(
    "PUBLISH",
    "sip:alice@example.com",
    (
        ("Via", "SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bK.abc;rport"),
        ("From", "<sip:alice@example.com>;tag=1"),
        ("To", "<sip:alice@example.com>"),
        ("Call-ID", "c1@192.0.2.1"),
        ("CSeq", "7 PUBLISH"),
        ("Event", "xcap-diff"),
        ("Content-Type", "application/xcap-diff+xml"),
    ),
    b"<xcap-diff/>",
)


# ------------------------------------------------------------------ round trips


@given(messages)
def test_round_trip_datagram(message: SipRequest | SipResponse) -> None:
    assert parse_message(message.to_bytes()) == message


@given(st.lists(messages, min_size=1, max_size=4), st.integers(1, 7))
def test_round_trip_stream_in_chunks(batch: list[SipRequest | SipResponse], chunk: int) -> None:
    wire = b"\r\n\r\n".join(m.to_bytes() for m in batch) + b"\r\n"
    reader = SipMessageReader()
    got: list[SipRequest | SipResponse] = []
    for i in range(0, len(wire), chunk):
        reader.feed(wire[i : i + chunk])
        while (m := reader.next_message()) is not NEED_DATA:
            got.append(m)
    reader.feed(b"")
    assert reader.next_message() is NEED_DATA
    assert got == batch


def test_to_bytes_layout() -> None:
    wire = SipResponse(200, "OK", (("CSeq", "1 PUBLISH"),)).to_bytes()
    assert wire == b"SIP/2.0 200 OK\r\nCSeq: 1 PUBLISH\r\nContent-Length: 0\r\n\r\n"


def test_properties() -> None:
    assert PUBLISH.branch == "z9hG4bK.abc"
    assert PUBLISH.call_id == "c1@192.0.2.1"
    assert PUBLISH.cseq == (7, "PUBLISH")
    assert PUBLISH.header("content-length") == "12"
    bare = SipResponse(200, "OK")
    assert (bare.branch, bare.call_id, bare.cseq) == (None, None, None)
    assert bare.with_header("CSeq", "x PUBLISH").cseq is None


def test_with_and_without_header() -> None:
    m = PUBLISH.with_header("SIP-If-Match", "e1")
    assert m.headers[-1] == ("SIP-If-Match", "e1")
    m2 = m.with_header("sip-if-match", "e2")
    assert m2.header_values("SIP-If-Match") == ["e2"] and len(m2.headers) == len(m.headers)
    assert m2.without_header("SIP-IF-MATCH") == PUBLISH
    # compact forms are the same header: replacing "v" replaces the Via
    assert PUBLISH.with_header("v", "SIP/2.0/TCP h;branch=z9hG4bK.2").branch == "z9hG4bK.2"
    assert PUBLISH.without_header("i").call_id is None
    with pytest.raises(LocalProtocolError):
        PUBLISH.with_header("Content-Length", "3")


# ------------------------------------------------------------------ header forms


def test_compact_forms() -> None:
    wire = (
        b"SIP/2.0 200 OK\r\nv: SIP/2.0/UDP h;branch=z9hG4bK.x\r\ni: abc\r\nf: <sip:a@b>;tag=1\r\n"
        b"t: <sip:a@b>\r\nm: <sip:a@h>\r\ne: gzip\r\nc: text/plain\r\ns: hi\r\nk: 100rel\r\n"
        b"o: xcap-diff\r\nu: presence, xcap-diff\r\nCSeq: 1 PUBLISH\r\nl: 2\r\n\r\nok"
    )
    m = parse_message(wire)
    assert isinstance(m, SipResponse)
    assert m.branch == "z9hG4bK.x" and m.call_id == "abc" and m.body == b"ok"
    for long, value in [
        ("From", "<sip:a@b>;tag=1"),
        ("To", "<sip:a@b>"),
        ("Contact", "<sip:a@h>"),
        ("Content-Encoding", "gzip"),
        ("Content-Type", "text/plain"),
        ("Subject", "hi"),
        ("Supported", "100rel"),
        ("Event", "xcap-diff"),
    ]:
        assert m.header(long) == value
        assert m.header(long.upper()) == value
    assert m.header_values("Allow-Events") == ["presence", "xcap-diff"]
    assert m.header("Content-Length") == "2"
    assert ("l", "2") not in m.headers  # framing is not stored


def test_folding_crlf_and_lf() -> None:
    crlf = (
        b"SIP/2.0 200 OK\r\nSubject: first\r\n  second\r\n\tthird\r\nCall-ID: x\r\n"
        b"Content-Length: 0\r\n\r\n"
    )
    for wire in (crlf, crlf.replace(b"\r\n", b"\n")):
        m = parse_message(wire)
        assert m.header("Subject") == "first second third"
        assert m.call_id == "x"


def test_multiple_via_with_comma_lists() -> None:
    wire = (
        b"SIP/2.0 200 OK\r\n"
        b"Via: SIP/2.0/UDP a;branch=z9hG4bK.top , SIP/2.0/UDP b;branch=z9hG4bK.2\r\n"
        b"Via: SIP/2.0/TCP c;branch=z9hG4bK.3\r\n"
        b'Contact: "Bob, Jr." <sip:bob@h;x=a,b>, <sip:c@d>\r\n'
        b'WWW-Authenticate: Digest realm="a, b", nonce="n", qop="auth,auth-int"\r\n'
        b"Content-Length: 0\r\n\r\n"
    )
    m = parse_message(wire)
    assert m.header_values("Via") == [
        "SIP/2.0/UDP a;branch=z9hG4bK.top",
        "SIP/2.0/UDP b;branch=z9hG4bK.2",
        "SIP/2.0/TCP c;branch=z9hG4bK.3",
    ]
    assert m.branch == "z9hG4bK.top"
    assert m.header_values("Contact") == ['"Bob, Jr." <sip:bob@h;x=a,b>', "<sip:c@d>"]
    assert m.header_values("WWW-Authenticate") == [
        'Digest realm="a, b", nonce="n", qop="auth,auth-int"'
    ]


def test_parse_params_and_quote_string() -> None:
    assert parse_params('"A;b" <sip:a@b;lr>;tag=12;Branch="x;y\\"z";rport') == (
        '"A;b" <sip:a@b;lr>',
        {"tag": "12", "branch": 'x;y"z', "rport": None},
    )
    assert parse_params("SIP/2.0/UDP h") == ("SIP/2.0/UDP h", {})
    assert quote_string('a"b\\c') == '"a\\"b\\\\c"'
    with pytest.raises(LocalProtocolError):
        quote_string("a\r\nb")


# ------------------------------------------------------------------ validation (ours)


@pytest.mark.parametrize(
    "value",
    ["x\r\nVia: evil", "x\nEvil: 1", "x\rEvil: 1", "x\x00"],
)
def test_header_injection_refused(value: str) -> None:
    with pytest.raises(LocalProtocolError):
        SipRequest("PUBLISH", "sip:a@b", (("Thor-Scope", value),))
    with pytest.raises(LocalProtocolError):
        PUBLISH.with_header("Thor-Scope", value)
    with pytest.raises(LocalProtocolError):
        SipResponse(200, value)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"method": "PUB LISH", "uri": "sip:a@b"},
        {"method": "", "uri": "sip:a@b"},
        {"method": "PUBLISH", "uri": "sip:a@b x"},
        {"method": "PUBLISH", "uri": ""},
        {"method": "PUBLISH", "uri": "sip:a@b", "headers": (("Bad Name", "v"),)},
        {"method": "PUBLISH", "uri": "sip:a@b", "headers": (("Bad:Name", "v"),)},
        {"method": "PUBLISH", "uri": "sip:a@b", "headers": (("l", "0"),)},
        {"method": "PUBLISH", "uri": "sip:a@b", "body": "text"},
        {"method": "PUBLISH", "uri": "sip:a@b", "headers": (("X", "\udc80"),)},
    ],
)
def test_invalid_requests_refused(kwargs: dict[str, object]) -> None:
    with pytest.raises(LocalProtocolError):
        SipRequest(**kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize("status", [99, 700, True, "200"])
def test_invalid_status_refused(status: object) -> None:
    with pytest.raises(LocalProtocolError):
        SipResponse(status, "x")  # type: ignore[arg-type]


# ------------------------------------------------------------------ datagram framing


def test_content_length_mismatch() -> None:
    wire = PUBLISH.to_bytes()
    with pytest.raises(RemoteProtocolError, match="Content-Length"):
        parse_message(wire + b"x")
    with pytest.raises(RemoteProtocolError, match="Content-Length"):
        parse_message(wire[:-1])


def test_datagram_without_content_length_takes_the_rest() -> None:
    m = parse_message(b"SIP/2.0 200 OK\r\nCall-ID: x\r\n\r\nbody\r\n")
    assert m.body == b"body\r\n"
    assert parse_message(b"SIP/2.0 200 OK\r\nCall-ID: x\r\n").call_id == "x"


def test_leading_crlf_skipped_and_oversize() -> None:
    assert parse_message(b"\r\n\r\n" + PUBLISH.to_bytes()) == PUBLISH
    with pytest.raises(RemoteProtocolError, match="limit"):
        parse_message(PUBLISH.to_bytes(), max_bytes=50)


# ------------------------------------------------------------------ stream framing


def test_stream_byte_by_byte_pipelined_with_keepalives() -> None:
    ok = SipResponse(200, "OK", (("Via", "SIP/2.0/TCP h;branch=z9hG4bK.1"),), b"")
    wire = b"\r\n\r\n" + PUBLISH.to_bytes() + b"\r\n" + ok.to_bytes() + b"\r\n\r\n" + ok.to_bytes()
    reader = SipMessageReader()
    got = []
    for byte in wire:
        reader.feed(bytes([byte]))
        while (m := reader.next_message()) is not NEED_DATA:
            got.append(m)
    assert got == [PUBLISH, ok, ok]
    assert reader.buffered == 0


def test_stream_requires_content_length() -> None:
    reader = SipMessageReader()
    reader.feed(b"SIP/2.0 200 OK\r\nCall-ID: x\r\n\r\n")
    with pytest.raises(RemoteProtocolError, match="Content-Length"):
        reader.next_message()
    with pytest.raises(RemoteProtocolError, match="broken"):
        reader.next_message()


def test_stream_eof() -> None:
    reader = SipMessageReader()
    reader.feed(PUBLISH.to_bytes()[:-3])
    assert reader.next_message() is NEED_DATA
    reader.feed(b"")
    assert reader.at_eof
    with pytest.raises(RemoteProtocolError, match="closed"):
        reader.next_message()
    with pytest.raises(LocalProtocolError):
        reader.feed(b"x")
    clean = SipMessageReader()
    clean.feed(PUBLISH.to_bytes() + b"\r\n")
    clean.feed(b"")
    assert clean.next_message() == PUBLISH
    assert clean.next_message() is NEED_DATA


def test_stream_oversize() -> None:
    reader = SipMessageReader(max_message_bytes=100)
    reader.feed(b"SIP/2.0 200 OK\r\nSubject: " + b"x" * 200)
    with pytest.raises(RemoteProtocolError, match="limit"):
        reader.next_message()
    reader = SipMessageReader(max_message_bytes=100)
    reader.feed(b"SIP/2.0 200 OK\r\nContent-Length: 500\r\n\r\n")
    with pytest.raises(RemoteProtocolError, match="limit"):
        reader.next_message()


# ------------------------------------------------------------------ RFC 4475 robustness
# Literals adapted from RFC 4475 §3.1 (the cases that apply to responses or to parsing
# in general).  Each must parse or raise RemoteProtocolError; the expected outcome is
# pinned so that a change in leniency is a visible decision.

HDRS = (
    b"Via: SIP/2.0/UDP 192.0.2.2;branch=z9hG4bK.t\r\nCall-ID: t1@192.0.2.2\r\n"
    b"From: <sip:a@example.com>;tag=1\r\nTo: <sip:b@example.com>;tag=2\r\nCSeq: 1 PUBLISH\r\n"
)
TORTURE: dict[str, tuple[bytes, bool]] = {
    # 3.1.1.1 wsinv: unusual whitespace, folding, escaped quotes, odd casing
    "wsinv-response": (
        b"SIP/2.0 200 OK\r\nTO :\r\n <sip:vivekg@chair-dnrc.example.com> ;   tag    = 1918181833n\r\n"
        b'from   : "J Rosenberg \\\\\\""       <sip:jdrosen@example.com>\r\n  ;\r\n  tag = 98asjd8\r\n'
        b"MaX-fOrWaRdS: 0068\r\nCall-ID: wsinv.ndaksdj@192.0.2.1\r\ncseq: 0009\r\n  PUBLISH\r\n"
        b"Via  : SIP/2.0\r\n      /UDP\r\n    192.0.2.2;branch=390skdjuw\r\ns :\r\nNewFangledHeader:   newfangled value\r\n"
        b" continued newfangled value\r\nUnknownHeaderWithUnusualValue: ;;,,;;,;\r\n"
        b"l: 0\r\n\r\n",
        True,
    ),
    # 3.1.1.2 intmeth / 3.1.1.12 unknown headers with odd token characters
    "unknown-headers": (
        b"SIP/2.0 200 OK\r\n" + HDRS + b"extensionHeader-!.%*+_`'~:\xef\xbb\xbfbang\r\n"
        b"NewFangledHeader: newfangled value\r\nl: 0\r\n\r\n",
        True,
    ),
    # 3.1.1.3 esc02-like: percent-escapes and escaped quotes in values
    "escaped-values": (
        b"SIP/2.0 200 OK\r\n" + HDRS + b'Contact: "%Z%41\\"" <sip:%61lice@example.com>\r\n'
        b"Content-Length: 0\r\n\r\n",
        True,
    ),
    # 3.1.1.4 escnull: escaped nulls are just text
    "escnull": (b"SIP/2.0 200 OK\r\n" + HDRS + b"Subject: %00%00\r\nl: 0\r\n\r\n", True),
    # 3.1.1.6 longreq: long values and many Via lines
    "long-values": (
        b"SIP/2.0 200 OK\r\n"
        + HDRS
        + b"X-Long: "
        + b"a" * 4000
        + b"\r\n"
        + b"".join(b"Via: SIP/2.0/TCP h%d;branch=z9hG4bK.%d\r\n" % (i, i) for i in range(40))
        + b"l: 0\r\n\r\n",
        True,
    ),
    # 3.1.1.8 noreason (the response with no reason phrase), with and without the SP
    "noreason-sp": (b"SIP/2.0 100 \r\n" + HDRS + b"l: 0\r\n\r\n", True),
    "noreason": (b"SIP/2.0 100\r\n" + HDRS + b"l: 0\r\n\r\n", True),
    # 3.1.1.10 semiuri-like / 3.1.1.11 multipart body with CRLFs inside
    "body-with-blank-lines": (
        b"SIP/2.0 200 OK\r\n" + HDRS + b"l: 10\r\n\r\n\r\n\r\nab\r\n\r\n",
        True,
    ),
    # 3.1.2.1 badinv01-like: a bare CR as line end inside headers
    "bare-cr": (b"SIP/2.0 200 OK\r\n" + HDRS + b"X: a\rY: b\r\nl: 0\r\n\r\n", False),
    # 3.1.2.2 clerr: Content-Length larger than the body
    "clerr": (b"SIP/2.0 200 OK\r\n" + HDRS + b"Content-Length: 9999\r\n\r\nshort", False),
    # 3.1.2.3 scalar02: negative / huge Content-Length
    "cl-negative": (b"SIP/2.0 200 OK\r\n" + HDRS + b"Content-Length: -999\r\n\r\n", False),
    "cl-huge": (
        b"SIP/2.0 200 OK\r\n" + HDRS + b"Content-Length: 99999999999999999999\r\n\r\n",
        False,
    ),
    "cl-conflict": (b"SIP/2.0 200 OK\r\n" + HDRS + b"l: 0\r\nContent-Length: 1\r\n\r\nx", False),
    # 3.1.2.4 scalarlg: status code out of range / not three digits
    "status-700": (b"SIP/2.0 700 Huh\r\n" + HDRS + b"l: 0\r\n\r\n", False),
    "status-099": (b"SIP/2.0 099 Huh\r\n" + HDRS + b"l: 0\r\n\r\n", False),
    "status-2000": (b"SIP/2.0 2000 Huh\r\n" + HDRS + b"l: 0\r\n\r\n", False),
    "status-text": (b"SIP/2.0 OK 200\r\n" + HDRS + b"l: 0\r\n\r\n", False),
    # 3.1.2.7 quotbal-like: an unterminated quote in a value is just text to the framer
    "unbalanced-quote": (
        b"SIP/2.0 200 OK\r\n" + HDRS + b'Contact: "Mr J. User <sip:j@example.com>\r\nl: 0\r\n\r\n',
        True,
    ),
    # 3.1.2.13 lwsstart / multiple spaces in the request line
    "multiple-spaces-request": (b"OPTIONS  sip:a@b  SIP/2.0\r\n" + HDRS + b"l: 0\r\n\r\n", False),
    # 3.1.2.16 unkscm-like: request URI with whitespace
    "uri-with-space": (b"OPTIONS sip:a b@c SIP/2.0\r\n" + HDRS + b"l: 0\r\n\r\n", False),
    # 3.1.2.17 badvers: SIP/7.0
    "badvers-response": (b"SIP/7.0 200 OK\r\n" + HDRS + b"l: 0\r\n\r\n", False),
    "badvers-request": (b"OPTIONS sip:a@b SIP/7.0\r\n" + HDRS + b"l: 0\r\n\r\n", False),
    # 3.1.2.19 (insuf-like) header line without a colon, continuation before any header
    "no-colon": (b"SIP/2.0 200 OK\r\n" + HDRS + b"NoColonHere\r\nl: 0\r\n\r\n", False),
    "leading-continuation": (b"SIP/2.0 200 OK\r\n folded\r\n" + HDRS + b"\r\n", False),
    "space-in-name": (b"SIP/2.0 200 OK\r\nBad Name: x\r\n\r\n", False),
    "not-utf8": (b"SIP/2.0 200 OK\r\nSubject: \xff\xfe\r\n\r\n", False),
    "nul-in-header": (b"SIP/2.0 200 OK\r\nSubject: a\x00b\r\n\r\n", False),
    "garbage": (b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03", False),
    "empty": (b"", False),
    "only-crlf": (b"\r\n\r\n", False),
    "no-end-of-headers": (b"SIP/2.0 200 OK\r\nCall-ID: x", False),
}


@pytest.mark.parametrize("name", sorted(TORTURE))
def test_rfc4475_robustness(name: str) -> None:
    wire, parses = TORTURE[name]
    if parses:
        message = parse_message(wire)
        assert parse_message(message.to_bytes()) == message
    else:
        with pytest.raises(RemoteProtocolError):
            parse_message(wire)


def test_wsinv_values() -> None:
    m = parse_message(TORTURE["wsinv-response"][0])
    assert m.header("To") == "<sip:vivekg@chair-dnrc.example.com> ;   tag    = 1918181833n"
    assert m.cseq == (9, "PUBLISH")
    assert m.header("Via") == "SIP/2.0 /UDP 192.0.2.2;branch=390skdjuw"
    assert m.branch == "390skdjuw"
    assert m.header("Subject") == ""
    assert m.header("NewFangledHeader") == "newfangled value continued newfangled value"
    m = parse_message(TORTURE["noreason"][0])
    assert isinstance(m, SipResponse) and (m.status, m.reason) == (100, "")


@given(st.binary(max_size=300))
@example(b"SIP/2.0 200 OK\r\n\r\n")
@example(b"A B SIP/2.0\n\n")
@example(b"SIP/2.0 200 OK\r\nl: 01\r\n\r\nx")
def test_random_bytes_raise_only_remote_protocol_error(data: bytes) -> None:
    with contextlib.suppress(RemoteProtocolError):
        parse_message(data)


@given(st.lists(st.binary(min_size=1, max_size=60), max_size=6))
def test_random_stream_raises_only_remote_protocol_error(chunks: list[bytes]) -> None:
    reader = SipMessageReader(max_message_bytes=200)
    try:
        for chunk in [*chunks, b""]:
            reader.feed(chunk)
            while reader.next_message() is not NEED_DATA:
                pass
    except RemoteProtocolError:
        pass


@given(messages, st.binary(max_size=40))
def test_mutated_messages_raise_only_remote_protocol_error(
    message: SipRequest | SipResponse, noise: bytes
) -> None:
    wire = message.to_bytes()
    for cut in (len(wire) // 3, len(wire) // 2):
        with contextlib.suppress(RemoteProtocolError):
            parse_message(wire[:cut] + noise + wire[cut:])
