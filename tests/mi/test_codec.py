"""mi.codec against every request and reply recorded in shared/opensips/MI.md.

The byte literals below are copied from MI.md (observed on OpenSIPS 3.6.8, or the
documented 1.x/2.x forms).  Where MI.md elides the id (``"id":..``) the case puts in
the id of the request it answers.
"""

from __future__ import annotations

import json
import xmlrpc.client
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from lxml import etree

from tests.strategies import documents, serialize
from xcapdiff_ext.errors import PublishRejected, TransportError
from xcapdiff_ext.interfaces import Publication, PublishOutcome
from xcapdiff_ext.mi.codec import (
    MAX_DATAGRAM_BYTES,
    BodyNotEncodable,
    LocalProtocolError,
    MiError,
    MiProtocol,
    MiTransport,
    Published,
    PublishRequest,
    RemoteProtocolError,
    ReplyIdMismatch,
    ReplyTooLarge,
    RequestTooLarge,
    RetryWithoutEtag,
    SipRejected,
    check_datagram_size,
    decode_reply,
    encode_request,
    one_line_body,
    reply_id,
)
from xcapdiff_ext.xmlsafe import c14n, parse_document

JSONRPC, LEGACY = MiProtocol.JSONRPC, MiProtocol.LEGACY
HTTP, DATAGRAM, FIFO, XMLRPC = (
    MiTransport.HTTP,
    MiTransport.DATAGRAM,
    MiTransport.FIFO,
    MiTransport.XMLRPC,
)
CT = "application/xcap-diff+xml"
ALICE = "sip:alice@127.0.0.1"
BODY = b"<?xml ...?><xcap-diff ...>...</xcap-diff>"  # MI.md's elided body, verbatim
XCAP_BODY = (
    b'<?xml version="1.0" encoding="UTF-8"?>\n'
    b'<d:xcap-diff xmlns:d="urn:ietf:params:xml:ns:xcap-diff" xcap-root="http://x/">\n'
    b'  <d:attribute sel="a/b/@c">line one\nline two</d:attribute>\n'
    b"</d:xcap-diff>\n"
)

INITIAL = PublishRequest(ALICE, 3600, CT, BODY)
MODIFY = PublishRequest(ALICE, 3600, CT, BODY, etag="a.1795695501.12847.1.0")
REFRESH = PublishRequest(ALICE, 3600, etag="a.1795695501.12847.1.0")
REFRESH_NO_ETAG = PublishRequest(ALICE, 3600)
REMOVAL = PublishRequest.removal(ALICE, etag="a.1795696722.1981.1.0")
REMOVAL_NO_ETAG = PublishRequest.removal(ALICE)


def jsonrpc_decode(data: bytes, request: PublishRequest, request_id: int | str = 7) -> Any:
    return decode_reply(
        data, request=request, protocol=JSONRPC, transport=HTTP, request_id=request_id
    )


# --------------------------------------------------------------------------- requests


def test_http_request_is_the_recorded_bytes() -> None:
    recorded = b'{"jsonrpc":"2.0","method":"pua_publish","id":1,"params":{"presentity_uri":"sip:alice@127.0.0.1","expires":3600,"event_package":"xcap-diff","content_type":"application/xcap-diff+xml","body":"<?xml ...?><xcap-diff ...>...</xcap-diff>"}}'
    assert encode_request(INITIAL, protocol=JSONRPC, transport=HTTP, request_id=1) == recorded


def test_datagram_request_matches_the_recorded_envelope() -> None:
    recorded = b'{"jsonrpc": "2.0", "method": "pua_publish", "id": 43, "params": {...}}'
    ours = json.loads(
        encode_request(INITIAL, protocol="jsonrpc", transport="datagram", request_id=43)
    )
    envelope = json.loads(recorded.replace(b"{...}", b"null"))
    assert {k: v for k, v in ours.items() if k != "params"} == {
        k: v for k, v in envelope.items() if k != "params"
    }


def test_fifo_request_matches_the_recorded_one() -> None:
    recorded = b':notes_reply:{"jsonrpc": "2.0", "method": "pua_publish", "id": "42", "params": {"presentity_uri": "sip:alice@127.0.0.1", "expires": 3600, "event_package": "xcap-diff", "content_type": "application/xcap-diff+xml", "body": "<?xml ...>"}}\n'
    request = PublishRequest(ALICE, 3600, CT, b"<?xml ...>")
    ours = encode_request(
        request, protocol=JSONRPC, transport=FIFO, request_id="42", reply_fifo="notes_reply"
    )
    assert ours.startswith(b":notes_reply:{") and ours.endswith(b"}\n")
    assert ours.count(b"\n") == 1  # one line: the JSON escapes body newlines
    assert json.loads(ours[len(b":notes_reply:") :]) == json.loads(
        recorded[len(b":notes_reply:") :]
    )


def test_body_newlines_travel_json_escaped() -> None:
    request = PublishRequest(ALICE, 3600, CT, XCAP_BODY)
    data = encode_request(request, protocol=JSONRPC, transport=DATAGRAM, request_id=1)
    assert b"\n" not in data
    assert json.loads(data)["params"]["body"].encode() == XCAP_BODY


@pytest.mark.parametrize(
    ("request_", "keys"),
    [
        (INITIAL, {"presentity_uri", "expires", "event_package", "content_type", "body"}),
        (MODIFY, {"presentity_uri", "expires", "event_package", "content_type", "body", "etag"}),
        (REFRESH, {"presentity_uri", "expires", "event_package", "etag"}),
        (REFRESH_NO_ETAG, {"presentity_uri", "expires", "event_package"}),
        (REMOVAL, {"presentity_uri", "expires", "event_package", "etag"}),
    ],
    ids=["initial", "modify", "refresh", "refresh-no-etag", "removal"],
)
def test_named_params_pick_a_valid_recipe_without_extra_headers(
    request_: PublishRequest, keys: set[str]
) -> None:
    for transport in (HTTP, DATAGRAM):
        params = json.loads(
            encode_request(request_, protocol=JSONRPC, transport=transport, request_id=5)
        )["params"]
        assert set(params) == keys
        assert "extra_headers" not in params and "event" not in params
        assert params["event_package"] == "xcap-diff"
    (struct,), method = xmlrpc.client.loads(
        encode_request(request_, protocol=JSONRPC, transport=XMLRPC)
    )
    assert method == "pua_publish" and set(struct) == keys


def test_removal_request() -> None:
    params = json.loads(encode_request(REMOVAL, protocol=JSONRPC, transport=HTTP, request_id=9))[
        "params"
    ]
    assert params == {
        "presentity_uri": ALICE,
        "expires": 0,
        "event_package": "xcap-diff",
        "etag": "a.1795696722.1981.1.0",
    }
    assert REMOVAL.is_removal and not INITIAL.is_removal


def test_extra_headers_cannot_be_given() -> None:
    with pytest.raises(TypeError):
        PublishRequest(ALICE, 3600, extra_headers="X: y")  # type: ignore[call-arg]
    with pytest.raises(TypeError):
        encode_request(
            INITIAL, protocol=JSONRPC, transport=HTTP, request_id=1, extra_headers="X: y"
        )  # type: ignore[call-arg]
    assert "extra_headers" not in PublishRequest.__dataclass_fields__
    with pytest.raises((AttributeError, TypeError)):  # frozen, slots: no new attribute
        INITIAL.extra_headers = "X: y"  # type: ignore[attr-defined,misc]


@pytest.mark.parametrize(
    "kwargs",
    [
        {"presentity_uri": "alice", "expires": 1},
        {"presentity_uri": "sip:a b@x", "expires": 1},
        {"presentity_uri": ALICE, "expires": -1},
        {"presentity_uri": ALICE, "expires": True},
        {"presentity_uri": ALICE, "expires": "3600"},
        {"presentity_uri": ALICE, "expires": 1, "content_type": CT},  # no body: -32602 recipe
        {"presentity_uri": ALICE, "expires": 1, "body": b"<x/>"},
        {"presentity_uri": ALICE, "expires": 0, "content_type": CT, "body": b"<x/>"},
        {"presentity_uri": ALICE, "expires": 1, "etag": "."},  # legacy placeholder: 418 in 3.x
        {"presentity_uri": ALICE, "expires": 1, "etag": "a\nb"},
        {"presentity_uri": ALICE, "expires": 1, "etag": ""},
        {"presentity_uri": ALICE, "expires": 1, "content_type": ".", "body": b"<x/>"},
        {"presentity_uri": ALICE, "expires": 1, "content_type": CT, "body": "<x/>"},
    ],
)
def test_invalid_requests_cannot_be_built(kwargs: dict[str, Any]) -> None:
    with pytest.raises(LocalProtocolError):
        PublishRequest(**kwargs)


def test_from_publication() -> None:
    pub = Publication(owner=ALICE, body=BODY, etag="e.1")
    assert PublishRequest.from_publication(pub, expires=3600) == PublishRequest(
        ALICE, 3600, CT, BODY, "e.1"
    )
    with pytest.raises(LocalProtocolError):
        PublishRequest.from_publication(Publication(ALICE, BODY, event="presence"), expires=60)


def test_published_converts_to_publish_outcome() -> None:
    published = Published("a.1", 3600, "200 OK")
    outcome = PublishOutcome(published.etag, published.expires, published.detail)
    assert (outcome.etag, outcome.expires, outcome.detail) == ("a.1", 3600, "200 OK")


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        ({"protocol": JSONRPC, "transport": HTTP}, LocalProtocolError),  # no request_id
        ({"protocol": JSONRPC, "transport": HTTP, "request_id": True}, LocalProtocolError),
        ({"protocol": JSONRPC, "transport": HTTP, "request_id": ""}, LocalProtocolError),
        ({"protocol": JSONRPC, "transport": FIFO, "request_id": 1}, LocalProtocolError),
        (
            {"protocol": JSONRPC, "transport": FIFO, "request_id": 1, "reply_fifo": "a.b"},
            LocalProtocolError,
        ),
        (
            {"protocol": JSONRPC, "transport": FIFO, "request_id": 1, "reply_fifo": "a/b"},
            LocalProtocolError,
        ),
        (
            {"protocol": JSONRPC, "transport": FIFO, "request_id": 1, "reply_fifo": "a\\b"},
            LocalProtocolError,
        ),
        (
            {"protocol": JSONRPC, "transport": HTTP, "request_id": 1, "reply_fifo": "r"},
            LocalProtocolError,
        ),
        ({"protocol": LEGACY, "transport": HTTP}, LocalProtocolError),
        ({"protocol": "json", "transport": HTTP, "request_id": 1}, LocalProtocolError),
        ({"protocol": JSONRPC, "transport": "tcp", "request_id": 1}, LocalProtocolError),
    ],
)
def test_encode_misuse(kwargs: dict[str, Any], error: type[Exception]) -> None:
    with pytest.raises(error):
        encode_request(INITIAL, **kwargs)


def test_body_must_be_utf8_for_jsonrpc() -> None:
    request = PublishRequest(
        ALICE, 3600, CT, b'<?xml version="1.0" encoding="ISO-8859-1"?><a>\xe9</a>'
    )
    with pytest.raises(BodyNotEncodable) as caught:
        encode_request(request, protocol=JSONRPC, transport=HTTP, request_id=1)
    assert not caught.value.retryable


def test_datagram_limit() -> None:
    check_datagram_size(b"x" * MAX_DATAGRAM_BYTES)
    with pytest.raises(RequestTooLarge) as caught:
        check_datagram_size(b"x" * (MAX_DATAGRAM_BYTES + 1))
    assert not caught.value.retryable and "65457" in str(caught.value)
    big = PublishRequest(ALICE, 3600, CT, b"<a>" + b"x" * 65457 + b"</a>")
    with pytest.raises(RequestTooLarge):
        encode_request(big, protocol=JSONRPC, transport=DATAGRAM, request_id=1)
    with pytest.raises(RequestTooLarge):
        encode_request(big, protocol=LEGACY, transport=DATAGRAM)
    assert encode_request(big, protocol=JSONRPC, transport=HTTP, request_id=1)  # no limit there


# --------------------------------------------------------------------------- 3.x replies

S = Published  # short for the table
REPLIES_3X: list[tuple[str, bytes, PublishRequest, int | str, object]] = [
    # (case, recorded reply, what was sent, request id, expected result or (error, attrs))
    (
        "http-success",
        b'{"jsonrpc":"2.0","result":{"reply":"200 OK","ETag":"a.1795696722.1981.1.0","Expires":3600},"id":1}',
        INITIAL,
        1,
        S("a.1795696722.1981.1.0", 3600, "200 OK"),
    ),
    (
        "datagram-success",
        b'{"jsonrpc":"2.0","result":{"reply":"200 OK","ETag":"a.1795696722.1981.4.2","Expires":3600},"id":43}',
        INITIAL,
        43,
        S("a.1795696722.1981.4.2", 3600, "200 OK"),
    ),
    (
        "fifo-success-string-id",
        b'{"jsonrpc":"2.0","result":{"reply":"200 OK","ETag":"a.1795696722.1981.3.1","Expires":3600},"id":"42"}',
        INITIAL,
        "42",
        S("a.1795696722.1981.3.1", 3600, "200 OK"),
    ),
    (
        "removal-success",
        b'{"jsonrpc":"2.0","result":{"reply":"200 OK","ETag":"a.1795696722.1981.1.0","Expires":0},"id":7}',
        REMOVAL,
        7,
        S("a.1795696722.1981.1.0", 0, "200 OK: removed"),
    ),
    (
        "result-408",
        b'{"jsonrpc":"2.0","result":{"reply":"408 Request Timeout"},"id":7}',
        INITIAL,
        7,
        (SipRejected, {"status": 408, "reason": "Request Timeout", "retryable": True}),
    ),
    (
        "unknown-event",
        b'{"jsonrpc":"2.0","error":{"code":400,"message":"Unknown event"},"id":7}',
        INITIAL,
        7,
        (MiError, {"code": 400, "retryable": False, "hint~": "presence_xcapdiff not loaded"}),
    ),
    (
        "named-params-mismatch",
        b'{"jsonrpc":"2.0","error":{"code":-32602,"message":"Invalid params","data":"Named parameters do not match"},"id":7}',
        INITIAL,
        7,
        (MiError, {"code": -32602, "retryable": False, "data": "Named parameters do not match"}),
    ),
    (
        "too-few-params",
        b'{"jsonrpc":"2.0","error":{"code":-32602,"message":"Invalid params","data":"Too few or too many parameters"},"id":7}',
        INITIAL,
        7,
        (MiError, {"code": -32602, "retryable": False}),
    ),
    (
        "bad-expires-type",
        b'{"jsonrpc":"2.0","error":{"code":-32602,"message":"Invalid params","data":"Bad type for parameter \'expires\'"},"id":7}',
        INITIAL,
        7,
        (MiError, {"code": -32602, "retryable": False, "detail~": "Bad type"}),
    ),
    (
        "ambiguous-call",
        b'{"jsonrpc":"2.0","error":{"code":-32602,"message":"Invalid params","data":"Ambiguous call, use named parameters instead"},"id":7}',
        INITIAL,
        7,
        (MiError, {"code": -32602, "retryable": False}),
    ),
    (
        "wrong-etag",
        b'{"jsonrpc":"2.0","error":{"code":418,"message":"Wrong ETag"},"id":7}',
        MODIFY,
        7,
        RetryWithoutEtag(
            PublishRequest(ALICE, 3600, CT, BODY), "418 Wrong ETag: resend without etag"
        ),
    ),
    (
        "wrong-etag-without-etag",
        b'{"jsonrpc":"2.0","error":{"code":418,"message":"Wrong ETag"},"id":7}',
        INITIAL,
        7,
        (MiError, {"code": 418, "retryable": False}),
    ),
    (
        "bad-presentity-uri",
        b'{"jsonrpc":"2.0","error":{"code":404,"message":"Bad presentity URI"},"id":7}',
        INITIAL,
        7,
        (MiError, {"code": 404, "retryable": False}),
    ),
    (
        "500-removal-of-nothing",
        b'{"jsonrpc":"2.0","error":{"code":500,"message":"MI/PUBLISH failed"},"id":7}',
        REMOVAL,
        7,
        S(None, 0, "already removed: pua holds no publication (MI/PUBLISH failed)"),
    ),
    (
        "500-removal-of-nothing-no-etag",
        b'{"jsonrpc":"2.0","error":{"code":500,"message":"MI/PUBLISH failed"},"id":7}',
        REMOVAL_NO_ETAG,
        7,
        S(None, 0, "already removed: pua holds no publication (MI/PUBLISH failed)"),
    ),
    (
        "500-new-publication-without-body",
        b'{"jsonrpc":"2.0","error":{"code":500,"message":"MI/PUBLISH failed"},"id":7}',
        REFRESH_NO_ETAG,
        7,
        (MiError, {"code": 500, "retryable": False, "hint~": "without body"}),
    ),
    (
        "500-unresolvable-domain",
        b'{"jsonrpc":"2.0","error":{"code":500,"message":"MI/PUBLISH failed"},"id":7}',
        INITIAL,
        7,
        (MiError, {"code": 500, "retryable": False, "hint~": "presence_server"}),
    ),
    (
        "method-not-found",
        b'{"jsonrpc":"2.0","error":{"code":-32601,"message":"Method not found"},"id":7}',
        INITIAL,
        7,
        (MiError, {"code": -32601, "retryable": False, "hint~": "pua_mi"}),
    ),
    (
        "parse-error-id-null",
        b'{"jsonrpc":"2.0","error":{"code":-32700,"message":"Parse error"},"id":null}',
        INITIAL,
        7,
        (MiError, {"code": -32700, "retryable": False}),
    ),
    (
        "datagram-plain-parse-error",
        b"400 Parse_error",
        INITIAL,
        7,
        (MiError, {"code": 400, "reason": "Parse_error", "retryable": False}),
    ),
]


def check_expected(outcome: Any, expected: object) -> None:
    if not isinstance(expected, tuple):
        assert outcome() == expected
        return
    error, attrs = expected
    with pytest.raises(error) as caught:
        outcome()
    for name, value in attrs.items():
        if name.endswith("~"):
            assert value in getattr(caught.value, name[:-1])
        else:
            assert getattr(caught.value, name) == value
    assert isinstance(caught.value, TransportError)
    if error in (MiError, SipRejected):
        assert isinstance(caught.value, PublishRejected)
        assert str(caught.value) == caught.value.detail


@pytest.mark.parametrize(
    ("reply", "request_", "request_id", "expected"),
    [case[1:] for case in REPLIES_3X],
    ids=[case[0] for case in REPLIES_3X],
)
def test_jsonrpc_replies(
    reply: bytes, request_: PublishRequest, request_id: int | str, expected: object
) -> None:
    for transport in (HTTP, DATAGRAM, FIFO):
        check_expected(
            lambda t=transport: decode_reply(
                reply, request=request_, protocol=JSONRPC, transport=t, request_id=request_id
            ),
            expected,
        )


def test_unknown_event_message_says_presence_xcapdiff_not_loaded() -> None:
    reply = b'{"jsonrpc":"2.0","error":{"code":400,"message":"Unknown event"},"id":7}'
    with pytest.raises(MiError, match="presence_xcapdiff not loaded"):
        jsonrpc_decode(reply, INITIAL)


def test_500_message_names_presence_server() -> None:
    reply = b'{"jsonrpc":"2.0","error":{"code":500,"message":"MI/PUBLISH failed"},"id":7}'
    with pytest.raises(MiError, match="presence_server"):
        jsonrpc_decode(reply, MODIFY)


@pytest.mark.parametrize(
    ("reply", "retryable"),
    [
        (b'{"jsonrpc":"2.0","result":{"reply":"503 Service Unavailable"},"id":7}', True),
        (b'{"jsonrpc":"2.0","result":{"reply":"500 Server Internal Error"},"id":7}', True),
        (b'{"jsonrpc":"2.0","result":{"reply":"480 Transaction timeout"},"id":7}', True),
        (b'{"jsonrpc":"2.0","result":{"reply":"489 Bad Event"},"id":7}', False),
        (b'{"jsonrpc":"2.0","result":{"reply":"403 Forbidden"},"id":7}', False),
        (b'{"jsonrpc":"2.0","result":{"reply":"603 Decline"},"id":7}', False),
    ],
)
def test_sip_failures_inside_result(reply: bytes, retryable: bool) -> None:
    with pytest.raises(SipRejected) as caught:
        jsonrpc_decode(reply, INITIAL)
    assert caught.value.retryable is retryable


def test_retry_without_etag_is_a_finite_loop() -> None:
    wrong = b'{"jsonrpc":"2.0","error":{"code":418,"message":"Wrong ETag"},"id":7}'
    first = jsonrpc_decode(wrong, MODIFY)
    assert isinstance(first, RetryWithoutEtag) and first.request.etag is None
    with pytest.raises(MiError):  # the retry answered 418 again: give up
        jsonrpc_decode(wrong, first.request)


@pytest.mark.parametrize(
    "reply",
    [
        b'{"jsonrpc":"2.0","result":{"reply":"200 OK","ETag":"x","Expires":3600},"id":8}',
        b'{"jsonrpc":"2.0","result":{"reply":"200 OK","ETag":"x","Expires":3600},"id":"7"}',
        b'{"jsonrpc":"2.0","result":{"reply":"200 OK","ETag":"x","Expires":3600},"id":null}',
        b'{"jsonrpc":"2.0","result":{"reply":"200 OK","ETag":"x","Expires":3600},"id":true}',
        b'{"jsonrpc":"2.0","error":{"code":418,"message":"Wrong ETag"},"id":6}',
        b'{"jsonrpc":"2.0","error":{"code":400,"message":"Unknown event"},"id":null}',
    ],
)
def test_id_mismatch(reply: bytes) -> None:
    with pytest.raises(ReplyIdMismatch) as caught:
        jsonrpc_decode(reply, MODIFY, request_id=7)
    assert caught.value.expected == 7 and caught.value.retryable


@pytest.mark.parametrize(
    "reply",
    [
        b"",
        b"   ",
        b"{",
        b'{"jsonrpc":"2.0","result":{"reply":"200 OK"}}',  # no id
        b'{"jsonrpc":"1.0","result":{"reply":"200 OK"},"id":7}',
        b'{"result":{"reply":"200 OK"},"id":7}',
        b'{"jsonrpc":"2.0","id":7}',
        b'{"jsonrpc":"2.0","result":{"reply":"200 OK"},"error":{"code":1,"message":"x"},"id":7}',
        b'{"jsonrpc":"2.0","result":[],"id":7}',
        b'{"jsonrpc":"2.0","result":{},"id":7}',
        b'{"jsonrpc":"2.0","result":{"reply":"OK"},"id":7}',
        b'{"jsonrpc":"2.0","result":{"reply":"100 Trying"},"id":7}',
        b'{"jsonrpc":"2.0","result":{"reply":"200 OK","ETag":5},"id":7}',
        b'{"jsonrpc":"2.0","result":{"reply":"200 OK","ETag":"a b"},"id":7}',
        b'{"jsonrpc":"2.0","result":{"reply":"200 OK","ETag":"x","Expires":-1},"id":7}',
        b'{"jsonrpc":"2.0","result":{"reply":"200 OK","ETag":"x","Expires":NaN},"id":7}',
        b'{"jsonrpc":"2.0","result":{"reply":"200 OK","ETag":"x","Expires":1.5},"id":7}',
        b'{"jsonrpc":"2.0","result":{"reply":"200 OK","ETag":"x","Expires":true},"id":7}',
        b'{"jsonrpc":"2.0","error":"boom","id":7}',
        b'{"jsonrpc":"2.0","error":null,"id":7}',
        b'{"jsonrpc":"2.0","error":{"code":"418","message":"Wrong ETag"},"id":7}',
        b'{"jsonrpc":"2.0","error":{"code":418},"id":7}',
        b"[" * 50000 + b"]" * 50000,
        b'{"a":' * 20000 + b"1" + b"}" * 20000,
        b'{"jsonrpc":"2.0","result":{"reply":"200 OK","Expires":' + b"9" * 5000 + b'},"id":7}',
        b"\xff\xfe{}",
        b"200 OK\n200 OK\nETag:: a.1\nExpires:: 3600\n\n",  # legacy text to a 3.x client
        b"<html>502 Bad Gateway</html>",
    ],
)
def test_malformed_jsonrpc_replies(reply: bytes) -> None:
    with pytest.raises(RemoteProtocolError):
        jsonrpc_decode(reply, MODIFY)


def test_oversized_reply() -> None:
    reply = b'{"jsonrpc":"2.0","result":{"reply":"200 OK","ETag":"x","Expires":3600},"id":7}'
    padded = reply[:-1] + b" " * 70000 + b"}"
    with pytest.raises(ReplyTooLarge):
        jsonrpc_decode(padded, MODIFY)
    assert decode_reply(
        padded,
        request=MODIFY,
        protocol=JSONRPC,
        transport=HTTP,
        request_id=7,
        max_reply_bytes=80000,
    ) == Published("x", 3600, "200 OK")
    for protocol in MiProtocol:
        for transport in MiTransport:
            with pytest.raises(ReplyTooLarge):
                decode_reply(
                    b"x" * 65537,
                    request=MODIFY,
                    protocol=protocol,
                    transport=transport,
                    request_id=7,
                )


def test_success_without_etag_is_still_success() -> None:
    reply = b'{"jsonrpc":"2.0","result":{"reply":"200 OK"},"id":7}'
    assert jsonrpc_decode(reply, MODIFY) == Published(None, None, "200 OK: no ETag in the reply")


def test_reply_id() -> None:
    assert reply_id(b'{"jsonrpc":"2.0","result":{"reply":"200 OK"},"id":43}') == 43
    assert reply_id(b'{"jsonrpc":"2.0","result":{"reply":"200 OK"},"id":"42"}') == "42"
    assert (
        reply_id(b'{"jsonrpc":"2.0","error":{"code":-32700,"message":"Parse error"},"id":null}')
        is None
    )
    assert reply_id(b"400 Parse_error") is None
    assert reply_id(b'{"id":true}') is None
    assert reply_id(b"[]") is None
    assert reply_id(b"\xff") is None
    assert reply_id(b'{"id":1}' + b" " * 70000) is None


# --------------------------------------------------------------------------- legacy text

LEGACY_BODY = b'<?xml version="1.0" encoding="UTF-8"?><d:xcap-diff xmlns:d="urn:ietf:params:xml:ns:xcap-diff" xcap-root="http://x/"/>'


def test_legacy_fifo_request_is_the_documented_form() -> None:
    request = PublishRequest("sip:alice@example.com", 3600, CT, LEGACY_BODY)
    data = encode_request(request, protocol=LEGACY, transport=FIFO, reply_fifo="reply_fifo")
    assert data == (
        b":pua_publish:reply_fifo\n"
        b"sip:alice@example.com\n"
        b"3600\n"
        b"xcap-diff\n"
        b"application/xcap-diff+xml\n"
        b".\n"
        b".\n" + LEGACY_BODY + b"\n"
        b"\n"
    )


def test_legacy_datagram_request() -> None:
    request = PublishRequest(
        "sip:alice@example.com", 3600, CT, LEGACY_BODY, etag="a.1218435715.10924.7.3"
    )
    data = encode_request(request, protocol=LEGACY, transport=DATAGRAM)
    lines = data.split(b"\n")
    assert lines[:7] == [
        b":pua_publish:",
        b"sip:alice@example.com",
        b"3600",
        b"xcap-diff",
        b"application/xcap-diff+xml",
        b"a.1218435715.10924.7.3",
        b".",  # extra_headers: always "."
    ]
    assert lines[7:] == [LEGACY_BODY, b""]


def test_legacy_removal_has_no_body_line() -> None:
    data = encode_request(REMOVAL, protocol=LEGACY, transport=FIFO, reply_fifo="r1")
    assert data == (
        b":pua_publish:r1\nsip:alice@127.0.0.1\n0\nxcap-diff\n.\na.1795696722.1981.1.0\n.\n\n"
    )


def test_legacy_body_with_newlines_is_one_line() -> None:
    request = PublishRequest(ALICE, 3600, CT, XCAP_BODY)
    data = encode_request(request, protocol=LEGACY, transport=FIFO, reply_fifo="r")
    lines = data.split(b"\n")
    assert len(lines) == 10 and lines[-2:] == [b"", b""]
    body = lines[7]
    assert b"&#10;" in body
    assert c14n(parse_document(body)) == c14n(parse_document(XCAP_BODY))


LEGACY_REPLIES: list[tuple[str, bytes, PublishRequest, object]] = [
    (
        "success",
        b"200 OK\n200 OK\nETag:: a.1218435715.10924.7.3\nExpires:: 3600\n\n",
        INITIAL,
        S("a.1218435715.10924.7.3", 3600, "200 OK"),
    ),
    (
        "success-no-final-empty-line",
        b"200 OK\n200 OK\nETag:: a.1218435715.10924.7.3\nExpires:: 3600",
        INITIAL,
        S("a.1218435715.10924.7.3", 3600, "200 OK"),
    ),
    (
        "unknown-event",
        b"400 Unknown event\n\n",
        INITIAL,
        (MiError, {"code": 400, "hint~": "presence_xcapdiff not loaded"}),
    ),
    (
        "body-missing",
        b"400 Body parameter is missing\n\n",
        INITIAL,
        (MiError, {"code": 400, "retryable": False}),
    ),
    (
        "too-many",
        b"400 Too many parameters\n\n",
        INITIAL,
        (MiError, {"code": 400, "retryable": False}),
    ),
    (
        "bad-uri",
        b"404 Bad presentity URI\n\n",
        INITIAL,
        (MiError, {"code": 404, "retryable": False}),
    ),
    (
        "wrong-etag",
        b"418 Wrong ETag\n\n",
        MODIFY,
        RetryWithoutEtag(MODIFY.without_etag(), "418 Wrong ETag: resend without etag"),
    ),
    (
        "publish-failed",
        b"500 MI/PUBLISH failed\n\n",
        INITIAL,
        (MiError, {"code": 500, "retryable": False}),
    ),
    (
        "publish-failed-removal",
        b"500 MI/PUBLISH failed\n\n",
        REMOVAL,
        S(None, 0, "already removed: pua holds no publication (MI/PUBLISH failed)"),
    ),
    (
        "accepted",
        b"202 Accepted\n\n",
        INITIAL,
        S(None, None, "202 Accepted: the outcome of the PUBLISH is unknown"),
    ),
    (
        "sip-408",
        b"200 OK\n408 Request Timeout\n\n",
        INITIAL,
        (SipRejected, {"status": 408, "retryable": True}),
    ),
    ("3x-parse-error", b"400 Parse_error", INITIAL, (MiError, {"code": 400, "retryable": False})),
    (
        "json-from-3x",
        b'{"jsonrpc":"2.0","error":{"code":-32700,"message":"Parse error"},"id":null}',
        INITIAL,
        (RemoteProtocolError, {"detail~": "jsonrpc"}),
    ),
    ("garbage", b"hello\n", INITIAL, (RemoteProtocolError, {})),
    ("no-sip-node", b"200 OK\nETag:: a.1\n\n", INITIAL, (RemoteProtocolError, {})),
    ("bad-node", b"200 OK\n200 OK\nwhat is this\n\n", INITIAL, (RemoteProtocolError, {})),
    (
        "bad-expires",
        b"200 OK\n200 OK\nETag:: a.1\nExpires:: soon\n\n",
        INITIAL,
        (RemoteProtocolError, {}),
    ),
]


@pytest.mark.parametrize(
    ("reply", "request_", "expected"),
    [case[1:] for case in LEGACY_REPLIES],
    ids=[case[0] for case in LEGACY_REPLIES],
)
def test_legacy_text_replies(reply: bytes, request_: PublishRequest, expected: object) -> None:
    for transport in (FIFO, DATAGRAM):
        check_expected(
            lambda t=transport: decode_reply(reply, request=request_, protocol=LEGACY, transport=t),
            expected,
        )


# --------------------------------------------------------------------------- one-line body

ONE_LINE_CASES = {
    "text": b'<?xml version="1.0" encoding="UTF-8"?>\n<r>line one\nline two\r\nline three</r>\n',
    "attribute": b'<r a="one\ntwo" b="x&#10;y&#13;z"/>',
    "between-elements": b"<r>\n  <a/>\n  <b>\n    <c/>\n  </b>\n</r>\n",
    "outside-root": b"<?xml version='1.0'?>\n<!-- top -->\n<r/>\n<?end x?>\n",
    "cr-in-text": b"<r>a&#13;b&#13;\n</r>",
    "namespaces": b'<d:x xmlns:d="urn:d" xmlns="urn:e">\n<e>\xc3\xa9\n</e><d:y d:z="1\n2"/></d:x>',
    "cdata": b"<r><![CDATA[a\nb]]></r>",
    "xcap-diff": XCAP_BODY,
    "comment-one-line": b"<r>\n<!-- c --><?p d?></r>",
}


@pytest.mark.parametrize("body", ONE_LINE_CASES.values(), ids=ONE_LINE_CASES.keys())
def test_one_line_body_is_c14n_equal(body: bytes) -> None:
    line = one_line_body(body)
    assert b"\n" not in line and b"\r" not in line
    assert c14n(parse_document(line)) == c14n(parse_document(body))


def test_one_line_body_keeps_single_line_bodies_byte_exact() -> None:
    assert one_line_body(LEGACY_BODY) == LEGACY_BODY


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"<r>\n<!-- two\nlines --></r>",
        b"<r>\n<?pi two\nlines?></r>",
        b"<!-- a\nb -->\n<r/>",
        b"not xml\n",
        b"<!DOCTYPE r>\n<r/>",
    ],
)
def test_one_line_body_refusals(body: bytes) -> None:
    with pytest.raises(BodyNotEncodable) as caught:
        one_line_body(body)
    assert not caught.value.retryable


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(documents(), st.booleans())
def test_one_line_body_property(tree: etree._ElementTree, pretty: bool) -> None:
    body = serialize(tree, pretty=pretty)
    line = one_line_body(body)
    assert b"\n" not in line and b"\r" not in line
    assert c14n(parse_document(line)) == c14n(parse_document(body))


# --------------------------------------------------------------------------- XML-RPC


def xmlrpc_response(value: object) -> bytes:
    return xmlrpc.client.dumps((value,), methodresponse=True).encode()


def xmlrpc_fault(code: object, message: str) -> bytes:
    return xmlrpc.client.dumps(xmlrpc.client.Fault(code, message)).encode()


def test_legacy_xmlrpc_request_is_openxcaps_call() -> None:
    # OpenXCAP: proxy.callRemote('pua_publish', uri, 3600, 'xcap-diff',
    #           'application/xcap-diff+xml', etag or '.', '.', body)
    for etag in (None, "a.1218435715.10924.7.3"):
        request = PublishRequest("sip:alice@example.com", 3600, CT, XCAP_BODY + b"\r", etag)
        params, method = xmlrpc.client.loads(
            encode_request(request, protocol=LEGACY, transport=XMLRPC)
        )
        assert method == "pua_publish"
        assert params == (
            "sip:alice@example.com",
            3600,
            "xcap-diff",
            "application/xcap-diff+xml",
            etag or ".",
            ".",
            (XCAP_BODY + b"\r").decode(),  # CR survives as &#13;
        )
    params, _ = xmlrpc.client.loads(encode_request(REMOVAL, protocol=LEGACY, transport=XMLRPC))
    assert params == (ALICE, 0, "xcap-diff", ".", "a.1795696722.1981.1.0", ".")


def test_3x_xmlrpc_request_is_a_struct() -> None:
    data = encode_request(MODIFY, protocol=JSONRPC, transport=XMLRPC)
    (struct,), method = xmlrpc.client.loads(data)
    assert method == "pua_publish"
    assert (
        struct
        == json.loads(encode_request(MODIFY, protocol=JSONRPC, transport=HTTP, request_id=1))[
            "params"
        ]
    )


XMLRPC_REPLIES: list[tuple[str, bytes, PublishRequest, object]] = [
    (
        "3x-struct",
        xmlrpc_response({"reply": "200 OK", "ETag": "a.1795696722.1981.5.0", "Expires": 3600}),
        INITIAL,
        S("a.1795696722.1981.5.0", 3600, "200 OK"),
    ),
    (
        "3x-struct-408",
        xmlrpc_response({"reply": "408 Request Timeout"}),
        INITIAL,
        (SipRejected, {"status": 408, "retryable": True}),
    ),
    (
        "fault-418",
        xmlrpc_fault(418, "Wrong ETag"),
        MODIFY,
        RetryWithoutEtag(MODIFY.without_etag(), "418 Wrong ETag: resend without etag"),
    ),
    (
        "fault-400",
        xmlrpc_fault(400, "Unknown event"),
        INITIAL,
        (MiError, {"code": 400, "hint~": "presence_xcapdiff not loaded"}),
    ),
    (
        "fault-500-removal",
        xmlrpc_fault(500, "MI/PUBLISH failed"),
        REMOVAL,
        S(None, 0, "already removed: pua holds no publication (MI/PUBLISH failed)"),
    ),
    (
        "legacy-string",
        xmlrpc_response("200 OK\nETag:: a.1218435715.10924.7.3\nExpires:: 3600"),
        INITIAL,
        S("a.1218435715.10924.7.3", 3600, "200 OK"),
    ),
    (
        "legacy-string-with-mi-code",
        xmlrpc_response("200 OK\n200 OK\nETag:: a.1218435715.10924.7.3\nExpires:: 3600\n"),
        INITIAL,
        S("a.1218435715.10924.7.3", 3600, "200 OK"),
    ),
    ("fault-string-code", xmlrpc_fault("x", "y"), INITIAL, (RemoteProtocolError, {})),
    ("int-value", xmlrpc_response(5), INITIAL, (RemoteProtocolError, {})),
    ("not-xml", b"garbage", INITIAL, (RemoteProtocolError, {})),
    ("empty", b"", INITIAL, (RemoteProtocolError, {})),
    (
        "doctype",
        b'<?xml version="1.0"?><!DOCTYPE m [<!ENTITY a "aaaa">]><methodResponse><params><param><value>&a;</value></param></params></methodResponse>',
        INITIAL,
        (RemoteProtocolError, {}),
    ),
    (
        "utf16",
        xmlrpc_response("200 OK").decode().encode("utf-16"),
        INITIAL,
        (RemoteProtocolError, {}),
    ),
    (
        "two-params",
        b"<?xml version='1.0'?><methodResponse><params><param><value>a</value></param><param><value>b</value></param></params></methodResponse>",
        INITIAL,
        (RemoteProtocolError, {}),
    ),
    (
        "bad-int",
        b"<?xml version='1.0'?><methodResponse><params><param><value><int>x</int></value></param></params></methodResponse>",
        INITIAL,
        (RemoteProtocolError, {}),
    ),
]


@pytest.mark.parametrize(
    ("reply", "request_", "expected"),
    [case[1:] for case in XMLRPC_REPLIES],
    ids=[case[0] for case in XMLRPC_REPLIES],
)
def test_xmlrpc_replies(reply: bytes, request_: PublishRequest, expected: object) -> None:
    for protocol in MiProtocol:
        check_expected(
            lambda p=protocol: decode_reply(reply, request=request_, protocol=p, transport=XMLRPC),
            expected,
        )


# --------------------------------------------------------------------------- fuzzing

ALL_MODES = [(p, t) for p in MiProtocol for t in MiTransport]
REQUESTS = st.sampled_from([INITIAL, MODIFY, REFRESH, REFRESH_NO_ETAG, REMOVAL, REMOVAL_NO_ETAG])

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**40), 2**40) | st.floats() | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)
json_keys = st.sampled_from(["reply", "ETag", "Expires", "code", "message", "data", "id"])
json_like = st.fixed_dictionaries(
    {"jsonrpc": st.sampled_from(["2.0", "1.0", 2])},
    optional={
        "id": st.sampled_from([7, "7", None, 8, True]),
        "result": st.dictionaries(
            json_keys, json_values | st.sampled_from(["200 OK", "408 X", "x"])
        )
        | json_values,
        "error": st.dictionaries(json_keys, json_values | st.sampled_from([418, 500, -32602, 400]))
        | json_values,
    },
).map(lambda obj: json.dumps(obj).encode())
legacy_like = st.lists(
    st.sampled_from(
        [
            "200 OK",
            "202 Accepted",
            "418 Wrong ETag",
            "500 x",
            "ETag:: a.1",
            "Expires:: 3600",
            "Expires:: x",
            "",
            "::",
            "999 x",
            "1",
        ]
    )
    | st.text(max_size=10),
    max_size=6,
).map(lambda lines: "\n".join(lines).encode())
xmlrpc_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**31), 2**31 - 1)
    | st.floats()
    | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)
xmlrpc_like = st.one_of(
    xmlrpc_values,
    st.dictionaries(json_keys, xmlrpc_values | st.sampled_from(["200 OK", "408 X", "a.1"])),
).map(
    lambda v: xmlrpc.client.dumps((v,), methodresponse=True, allow_none=True).encode()
) | st.tuples(xmlrpc_values, st.text(max_size=8)).map(
    lambda f: xmlrpc.client.dumps(xmlrpc.client.Fault(f[0], f[1]), allow_none=True).encode()
)
replies = st.one_of(st.binary(max_size=300), json_like, legacy_like, xmlrpc_like)


@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(replies, REQUESTS, st.sampled_from(ALL_MODES))
@example(b"\x00", INITIAL, (JSONRPC, XMLRPC))
@example(b"1e99999", INITIAL, (JSONRPC, HTTP))
def test_decoder_raises_only_typed_errors(
    data: bytes, request: PublishRequest, mode: tuple[MiProtocol, MiTransport]
) -> None:
    protocol, transport = mode
    try:
        outcome = decode_reply(
            data, request=request, protocol=protocol, transport=transport, request_id=7
        )
    except TransportError:
        return
    assert isinstance(outcome, (Published, RetryWithoutEtag))
    reply_id(data)  # never raises either
