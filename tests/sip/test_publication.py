"""sip.publication: RFC 3903 publication state (NOTES.md §5), fixed times and tokens."""

from __future__ import annotations

import itertools
from collections.abc import Callable

import pytest

from xcapdiff_ext.errors import ConfigError, LocalProtocolError
from xcapdiff_ext.sip.digest import authorization, challenge_from_response
from xcapdiff_ext.sip.message import SipRequest, SipResponse
from xcapdiff_ext.sip.publication import (
    CONTENT_TYPE,
    Failed,
    Publication,
    Published,
    PubState,
    Removed,
    SendAgain,
    refresh_margin,
)
from xcapdiff_ext.sip.transaction import Final, PublishTransaction

AOR = "sip:alice@example.com"
VIA = "SIP/2.0/UDP 192.0.2.1:5060"
BODY = b'<xcap-diff xmlns="urn:ietf:params:xml:ns:xcap-diff" xcap-root="http://x/"/>'
BODY2 = BODY.replace(b"x/", b"y/")
USER, PASSWORD = "alice", "s3cr3t-Pa55"
CHALLENGE = 'Digest realm="example.com", nonce="n1", qop="auth", algorithm=MD5'


def tokens() -> Callable[[], str]:
    counter = itertools.count(1)
    return lambda: f"tok{next(counter)}"


def make(**kwargs: object) -> Publication:
    return Publication(AOR, new_token=tokens(), **kwargs)  # type: ignore[arg-type]


def answer(
    request: SipRequest, status: int, reason: str = "OK", *headers: tuple[str, str]
) -> SipResponse:
    """The ESC's response to ``request`` (Via, Call-ID, CSeq copied)."""
    copied = tuple(
        (name, value)
        for name in ("Via", "From", "To", "Call-ID", "CSeq")
        if (value := request.header(name)) is not None
    )
    return SipResponse(status, reason, copied + headers)


def ok(request: SipRequest, etag: str = "e1", expires: int | None = None) -> SipResponse:
    extra = [("SIP-ETag", etag)]
    if expires is not None:
        extra.append(("Expires", str(expires)))
    return answer(request, 200, "OK", *extra)


def published(pub: Publication, etag: str = "e1", now: float = 0.0) -> SipRequest:
    """Bring ``pub`` to ACTIVE with ``etag``; return the initial request."""
    request = pub.publish(BODY, via=VIA, now=now)
    assert isinstance(pub.receive(ok(request, etag), now + 0.1), Published)
    return request


# -- building requests ---------------------------------------------------------------------


def test_initial_request_exact() -> None:
    pub = make()
    request = pub.publish(BODY, via=VIA, now=0.0)
    assert request.method == "PUBLISH" and request.uri == AOR and request.body == BODY
    assert request.headers == (
        ("Via", f"{VIA};branch=z9hG4bKtok3"),
        ("Max-Forwards", "70"),
        ("From", f"<{AOR}>;tag=tok1"),
        ("To", f"<{AOR}>"),
        ("Call-ID", "tok2"),
        ("CSeq", "1 PUBLISH"),
        ("Event", "xcap-diff"),
        ("Expires", "3600"),
        ("User-Agent", "xcapdiff-ext"),
        ("Content-Type", CONTENT_TYPE),
    )
    assert request.header("SIP-If-Match") is None
    assert pub.state is PubState.WAITING and pub.cseq == 1 and pub.call_id == "tok2"
    # it is a valid transaction request
    tx = PublishTransaction(request, reliable=False)
    assert tx.branch == "z9hG4bKtok3"


def test_modify_keeps_call_id_and_tag_and_counts_cseq() -> None:
    pub = make()
    first = published(pub)
    modify = pub.publish(BODY2, via=VIA, now=5.0)
    assert modify.header("SIP-If-Match") == "e1"
    assert modify.body == BODY2 and modify.header("Content-Type") == CONTENT_TYPE
    assert modify.call_id == first.call_id == "tok2"
    assert modify.header("From") == first.header("From") == f"<{AOR}>;tag=tok1"
    assert modify.cseq == (2, "PUBLISH")
    assert modify.branch == "z9hG4bKtok4" != first.branch
    assert modify.header("Expires") == "3600"


def test_extra_headers_user_agent_event_appended_verbatim() -> None:
    pub = make(
        event="presence",
        expires=600,
        extra_headers=(("Thor-Scope", "publish-xcap"), ("X-Two", "a;b=c")),
        user_agent="OpenXCAP/3.2",
        content_type="application/pidf+xml",
    )
    request = pub.publish(BODY, via=VIA + ";rport", now=0.0)
    assert request.headers[-2:] == (("Thor-Scope", "publish-xcap"), ("X-Two", "a;b=c"))
    assert request.header("Event") == "presence"
    assert request.header("Expires") == "600"
    assert request.header("User-Agent") == "OpenXCAP/3.2"
    assert request.header("Content-Type") == "application/pidf+xml"
    assert request.header("Via") == f"{VIA};rport;branch=z9hG4bKtok3"


def test_empty_user_agent_is_omitted() -> None:
    request = make(user_agent="").publish(BODY, via=VIA, now=0.0)
    assert request.header("User-Agent") is None


@pytest.mark.parametrize(
    "headers",
    [
        (("Thor-Scope", "publish-xcap\r\nVia: SIP/2.0/UDP evil"),),
        (("X-A", "line\nbreak"),),
        (("X-A", "cr\ronly"),),
        (("X-A", "nul\x00"),),
        (("X-A", ""),),
        (("Bad Name", "v"),),
        (("X-A\r\nVia", "v"),),
        (("Via", "SIP/2.0/UDP evil"),),
        (("call-id", "x"),),
        (("i", "x"),),
        (("Content-Length", "0"),),
    ],
)
def test_bad_extra_headers_are_refused(headers: tuple[tuple[str, str], ...]) -> None:
    with pytest.raises(ConfigError) as info:
        make(extra_headers=headers)
    assert info.value.key == "sip_extra_headers"


@pytest.mark.parametrize(
    "kwargs",
    [
        {"aor": "alice@example.com"},
        {"aor": "sip:alice@example.com\r\nX: y"},
        {"aor": "sip:a lice@example.com"},
        {"event": "xcap diff"},
        {"event": "xcap-diff\r\n"},
        {"expires": -1},
        {"expires": True},
    ],
)
def test_bad_arguments_are_refused(kwargs: dict[str, object]) -> None:
    aor = kwargs.pop("aor", AOR)
    with pytest.raises(LocalProtocolError):
        Publication(aor, new_token=tokens(), **kwargs)  # type: ignore[arg-type]


def test_bad_user_agent_is_refused() -> None:
    with pytest.raises(ConfigError):
        make(user_agent="ua\r\nX: y")


@pytest.mark.parametrize(
    "via",
    ["SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bK1", "192.0.2.1:5060", f"{VIA}\r\nX: y", ""],
)
def test_bad_via_is_refused(via: str) -> None:
    pub = make()
    with pytest.raises(LocalProtocolError, match="via"):
        pub.publish(BODY, via=via, now=0.0)
    assert pub.state is PubState.ERROR


def test_bad_token_is_refused() -> None:
    with pytest.raises(LocalProtocolError, match="not a token"):
        Publication(AOR, new_token=lambda: "a b")


# -- 2xx, refresh timing, refresh, removal -------------------------------------------------


def test_200_stores_etag_and_granted_expires() -> None:
    pub = make()
    request = pub.publish(BODY, via=VIA, now=10.0)
    outcome = pub.receive(ok(request, "e1", expires=1800), 12.0)
    # measured from when the request was built: conservative
    assert outcome == Published("e1", 1800, 10.0 + 1800 - 60)
    assert pub.state is PubState.ACTIVE and pub.etag == "e1" and pub.refresh_at == 1750.0


def test_200_without_expires_uses_the_requested_one() -> None:
    pub = make()
    request = pub.publish(BODY, via=VIA, now=0.0)
    assert pub.receive(ok(request, "e1"), 0.5) == Published("e1", 3600, 3540.0)


def test_refresh_margin() -> None:
    assert refresh_margin(3600) == 60.0
    assert refresh_margin(600) == 60.0
    assert refresh_margin(100) == 10.0
    pub = make(expires=100)
    request = pub.publish(BODY, via=VIA, now=0.0)
    assert pub.receive(ok(request, "e1", expires=100), 0.1) == Published("e1", 100, 90.0)


def test_refresh_request_and_new_etag() -> None:
    pub = make()
    published(pub, "e1")
    refresh = pub.refresh(via=VIA, now=3540.0)
    assert refresh.body == b""
    assert refresh.header("Content-Type") is None
    assert refresh.header("SIP-If-Match") == "e1"
    assert refresh.header("Expires") == "3600"
    assert refresh.cseq == (2, "PUBLISH")
    assert pub.receive(ok(refresh, "e2", 3600), 3540.2) == Published("e2", 3600, 7080.0)
    assert pub.etag == "e2"
    # a modify after the refresh uses the newest etag
    assert pub.publish(BODY2, via=VIA, now=3600.0).header("SIP-If-Match") == "e2"


def test_remove_request_and_200() -> None:
    pub = make()
    published(pub, "e1")
    remove = pub.remove(via=VIA, now=20.0)
    assert remove.header("Expires") == "0"
    assert remove.header("SIP-If-Match") == "e1"
    assert remove.body == b"" and remove.header("Content-Type") is None
    assert pub.receive(ok(remove, "e9", 0), 20.1) == Removed()
    assert pub.state is PubState.IDLE and pub.etag is None and pub.refresh_at is None
    again = pub.publish(BODY, via=VIA, now=30.0)
    assert again.header("SIP-If-Match") is None and again.cseq == (3, "PUBLISH")


def test_one_shot_expires_zero_keeps_nothing() -> None:
    pub = make(expires=0)
    request = pub.publish(BODY, via=VIA, now=0.0)
    assert request.header("Expires") == "0" and request.header("SIP-If-Match") is None
    assert pub.receive(ok(request, "e1", 0), 0.1) == Published("e1", 0, None)
    assert pub.state is PubState.IDLE and pub.etag is None
    assert pub.publish(BODY2, via=VIA, now=1.0).header("SIP-If-Match") is None


def test_2xx_without_sip_etag_keeps_nothing() -> None:
    pub = make()
    request = pub.publish(BODY, via=VIA, now=0.0)
    assert pub.receive(answer(request, 202, "Accepted"), 0.1) == Published(None, 3600, None)
    assert pub.state is PubState.IDLE
    with pytest.raises(LocalProtocolError):
        pub.refresh(via=VIA, now=1.0)


# -- 412, 423 ------------------------------------------------------------------------------


def test_412_on_modify_sends_one_fresh_initial_with_the_same_body() -> None:
    pub = make()
    published(pub, "e1")
    modify = pub.publish(BODY2, via=VIA, now=5.0)
    outcome = pub.receive(answer(modify, 412, "Conditional Request Failed"), 5.1)
    assert isinstance(outcome, SendAgain)
    fresh = outcome.request
    assert fresh.header("SIP-If-Match") is None
    assert fresh.body == BODY2
    assert fresh.cseq == (3, "PUBLISH") and fresh.branch != modify.branch
    assert pub.etag is None and pub.state is PubState.WAITING
    assert pub.receive(ok(fresh, "e7"), 5.2) == Published("e7", 3600, 5.1 + 3540)
    assert pub.state is PubState.ACTIVE


def test_412_twice_fails() -> None:
    pub = make()
    published(pub, "e1")
    modify = pub.publish(BODY2, via=VIA, now=5.0)
    outcome = pub.receive(answer(modify, 412, "Conditional Request Failed"), 5.1)
    assert isinstance(outcome, SendAgain)
    failed = pub.receive(answer(outcome.request, 412, "Conditional Request Failed"), 5.2)
    assert isinstance(failed, Failed) and not failed.retryable and failed.status == 412
    assert pub.state is PubState.IDLE


def test_412_on_refresh_republishes_the_last_body() -> None:
    pub = make()
    published(pub, "e1")
    modify = pub.publish(BODY2, via=VIA, now=5.0)
    pub.receive(ok(modify, "e2"), 5.1)
    refresh = pub.refresh(via=VIA, now=3000.0)
    outcome = pub.receive(answer(refresh, 412, "Conditional Request Failed"), 3000.1)
    assert isinstance(outcome, SendAgain)
    assert outcome.request.body == BODY2
    assert outcome.request.header("SIP-If-Match") is None
    assert outcome.request.header("Content-Type") == CONTENT_TYPE


def test_412_on_remove_means_removed() -> None:
    pub = make()
    published(pub, "e1")
    remove = pub.remove(via=VIA, now=5.0)
    assert pub.receive(answer(remove, 412, "Conditional Request Failed"), 5.1) == Removed()
    assert pub.state is PubState.IDLE


def test_423_retries_once_with_min_expires() -> None:
    pub = make(expires=60)
    request = pub.publish(BODY, via=VIA, now=0.0)
    outcome = pub.receive(answer(request, 423, "Interval Too Brief", ("Min-Expires", "300")), 0.1)
    assert isinstance(outcome, SendAgain)
    assert outcome.request.header("Expires") == "300"
    assert outcome.request.body == BODY and outcome.request.header("SIP-If-Match") is None
    assert outcome.request.cseq == (2, "PUBLISH")
    assert pub.expires == 300
    assert pub.receive(ok(outcome.request, "e1", 300), 0.2) == Published("e1", 300, 0.1 + 270)
    # later requests keep the raised lifetime
    assert pub.refresh(via=VIA, now=270.0).header("Expires") == "300"


def test_423_twice_fails() -> None:
    pub = make(expires=60)
    request = pub.publish(BODY, via=VIA, now=0.0)
    again = pub.receive(answer(request, 423, "Interval Too Brief", ("Min-Expires", "300")), 0.1)
    assert isinstance(again, SendAgain)
    outcome = pub.receive(
        answer(again.request, 423, "Interval Too Brief", ("Min-Expires", "900")), 0.2
    )
    assert isinstance(outcome, Failed) and not outcome.retryable and outcome.status == 423


@pytest.mark.parametrize("header", [(), (("Min-Expires", "abc"),), (("Min-Expires", "30"),)])
def test_423_without_usable_min_expires_fails(header: tuple[tuple[str, str], ...]) -> None:
    pub = make(expires=60)
    request = pub.publish(BODY, via=VIA, now=0.0)
    outcome = pub.receive(answer(request, 423, "Interval Too Brief", *header), 0.1)
    assert isinstance(outcome, Failed) and not outcome.retryable
    assert "Min-Expires" in outcome.reason


# -- digest --------------------------------------------------------------------------------


def expected_auth(response: SipResponse, *, cnonce: str, nc: int, body: bytes) -> str:
    return authorization(
        challenge_from_response(response),
        method="PUBLISH",
        uri=AOR,
        username=USER,
        password=PASSWORD,
        cnonce=cnonce,
        nc=nc,
        body=body,
    )


def test_401_then_200_and_preemptive_auth_on_refresh() -> None:
    pub = make(credentials=(USER, PASSWORD))
    request = pub.publish(BODY, via=VIA, now=0.0)
    assert request.header("Authorization") is None
    challenge = answer(request, 401, "Unauthorized", ("WWW-Authenticate", CHALLENGE))
    outcome = pub.receive(challenge, 0.1)
    assert isinstance(outcome, SendAgain)
    retry = outcome.request
    # tokens: tag 1, Call-ID 2, branch 3, branch 4, cnonce 5
    assert retry.header("Authorization") == expected_auth(challenge, cnonce="tok5", nc=1, body=BODY)
    assert retry.branch == "z9hG4bKtok4" and retry.cseq == (2, "PUBLISH")
    assert retry.header("Proxy-Authorization") is None
    assert pub.receive(ok(retry, "e1"), 0.2) == Published("e1", 3600, 3540.1)
    refresh = pub.refresh(via=VIA, now=3540.1)
    assert refresh.header("Authorization") == expected_auth(
        challenge, cnonce="tok7", nc=2, body=b""
    )


def test_407_uses_proxy_authorization() -> None:
    pub = make(credentials=(USER, PASSWORD))
    request = pub.publish(BODY, via=VIA, now=0.0)
    challenge = answer(
        request, 407, "Proxy Authentication Required", ("Proxy-Authenticate", CHALLENGE)
    )
    outcome = pub.receive(challenge, 0.1)
    assert isinstance(outcome, SendAgain)
    assert outcome.request.header("Authorization") is None
    assert outcome.request.header("Proxy-Authorization") == expected_auth(
        challenge, cnonce="tok5", nc=1, body=BODY
    )


def test_401_twice_is_a_permanent_failure() -> None:
    pub = make(credentials=(USER, PASSWORD))
    request = pub.publish(BODY, via=VIA, now=0.0)
    challenge = ("WWW-Authenticate", CHALLENGE)
    outcome = pub.receive(answer(request, 401, "Unauthorized", challenge), 0.1)
    assert isinstance(outcome, SendAgain)
    failed = pub.receive(answer(outcome.request, 401, "Unauthorized", challenge), 0.2)
    assert isinstance(failed, Failed) and not failed.retryable and failed.status == 401
    assert "refused the credentials" in failed.reason
    assert PASSWORD not in failed.reason


def test_stale_nonce_retries_with_the_new_nonce_without_counting() -> None:
    pub = make(credentials=(USER, PASSWORD))
    request = pub.publish(BODY, via=VIA, now=0.0)
    first = pub.receive(answer(request, 401, "Unauthorized", ("WWW-Authenticate", CHALLENGE)), 0.1)
    assert isinstance(first, SendAgain)
    stale = answer(
        first.request,
        401,
        "Unauthorized",
        ("WWW-Authenticate", 'Digest realm="example.com", nonce="n2", qop="auth", stale=true'),
    )
    second = pub.receive(stale, 0.2)
    assert isinstance(second, SendAgain)
    # tokens: 3 branch, 4 branch, 5 cnonce, 6 branch, 7 cnonce; nc restarts for nonce n2
    assert second.request.header("Authorization") == expected_auth(
        stale, cnonce="tok7", nc=1, body=BODY
    )
    assert pub.receive(ok(second.request, "e1"), 0.3) == Published("e1", 3600, 3540.2)


def test_stale_nonce_loop_gives_up() -> None:
    pub = make(credentials=(USER, PASSWORD))
    request = pub.publish(BODY, via=VIA, now=0.0)
    outcome: object = None
    for n in range(10):
        stale = (
            "WWW-Authenticate",
            f'Digest realm="example.com", nonce="s{n}", qop="auth", stale=true',
        )
        outcome = pub.receive(answer(request, 401, "Unauthorized", stale), float(n))
        if not isinstance(outcome, SendAgain):
            break
        request = outcome.request
    assert isinstance(outcome, Failed) and outcome.retryable
    assert n == 3


def test_401_without_credentials_fails_clearly() -> None:
    pub = make()
    request = pub.publish(BODY, via=VIA, now=0.0)
    outcome = pub.receive(answer(request, 401, "Unauthorized", ("WWW-Authenticate", CHALLENGE)), 1)
    assert isinstance(outcome, Failed) and not outcome.retryable
    assert "sip_username" in outcome.reason


def test_401_with_an_unusable_challenge_fails() -> None:
    pub = make(credentials=(USER, PASSWORD))
    request = pub.publish(BODY, via=VIA, now=0.0)
    outcome = pub.receive(answer(request, 401, "Unauthorized"), 0.1)  # no WWW-Authenticate
    assert isinstance(outcome, Failed) and not outcome.retryable


def test_password_is_in_no_repr_or_outcome() -> None:
    pub = make(credentials=(USER, PASSWORD))
    request = pub.publish(BODY, via=VIA, now=0.0)
    outcome = pub.receive(answer(request, 401, "Unauthorized", ("WWW-Authenticate", CHALLENGE)), 1)
    assert isinstance(outcome, SendAgain)
    texts = [repr(pub), str(pub), repr(outcome), outcome.request.to_bytes().decode()]
    assert not any(PASSWORD in text for text in texts)


# -- failures ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "reason", "text"),
    [
        (
            489,
            "Bad Event",
            "489 Bad Event: the presence server does not know the xcap-diff event "
            "(presence_xcapdiff not loaded?)",
        ),
        (415, "Unsupported Media Type", "does not accept application/xcap-diff+xml bodies"),
        (404, "Not Found", f"does not know the resource {AOR}"),
        (403, "Forbidden", f"refuses publications for {AOR}"),
    ],
)
def test_permanent_failures_with_a_clear_reason(status: int, reason: str, text: str) -> None:
    pub = make()
    request = pub.publish(BODY, via=VIA, now=0.0)
    outcome = pub.receive(answer(request, status, reason), 0.1)
    assert isinstance(outcome, Failed)
    assert not outcome.retryable and outcome.status == status and outcome.retry_after is None
    assert text in outcome.reason
    assert pub.state is PubState.IDLE


def test_489_names_allow_events() -> None:
    pub = make()
    request = pub.publish(BODY, via=VIA, now=0.0)
    outcome = pub.receive(answer(request, 489, "Bad Event", ("Allow-Events", "presence")), 0.1)
    assert isinstance(outcome, Failed) and outcome.reason.endswith("it supports: presence")


@pytest.mark.parametrize(
    ("value", "delay"), [("120", 120.0), ("30 (maintenance);duration=60", 30.0), (None, None)]
)
def test_503_is_retryable_with_retry_after(value: str | None, delay: float | None) -> None:
    pub = make()
    request = pub.publish(BODY, via=VIA, now=0.0)
    headers = (("Retry-After", value),) if value is not None else ()
    outcome = pub.receive(answer(request, 503, "Service Unavailable", *headers), 0.1)
    assert outcome == Failed(
        "503 Service Unavailable", retryable=True, retry_after=delay, status=503
    )


@pytest.mark.parametrize("status", [408, 500, 502, 504, 580])
def test_other_5xx_and_408_are_retryable(status: int) -> None:
    pub = make()
    request = pub.publish(BODY, via=VIA, now=0.0)
    outcome = pub.receive(answer(request, status, "Oops"), 0.1)
    assert outcome == Failed(f"{status} Oops", retryable=True, status=status)


@pytest.mark.parametrize("status", [300, 302, 400, 405, 480, 488, 600, 603, 606])
def test_other_4xx_6xx_3xx_are_permanent(status: int) -> None:
    pub = make()
    request = pub.publish(BODY, via=VIA, now=0.0)
    outcome = pub.receive(answer(request, status, "No"), 0.1)
    assert isinstance(outcome, Failed) and not outcome.retryable and outcome.status == status


def test_retry_after_on_500_is_honoured_too() -> None:
    pub = make()
    request = pub.publish(BODY, via=VIA, now=0.0)
    outcome = pub.receive(answer(request, 500, "Busy", ("Retry-After", "5")), 0.1)
    assert outcome == Failed("500 Busy", retryable=True, retry_after=5.0, status=500)


def test_bad_username_is_refused() -> None:
    with pytest.raises(ConfigError) as info:
        make(credentials=("al\nice", PASSWORD))
    assert info.value.key == "sip_username"
    assert PASSWORD not in str(info.value)


def test_failure_keeps_the_etag() -> None:
    pub = make()
    published(pub, "e1")
    modify = pub.publish(BODY2, via=VIA, now=5.0)
    outcome = pub.receive(answer(modify, 500, "Server Error"), 5.1)
    assert isinstance(outcome, Failed) and outcome.retryable
    assert pub.state is PubState.ACTIVE and pub.etag == "e1"


def test_transaction_failure_is_retryable() -> None:
    pub = make()
    published(pub, "e1")
    pub.publish(BODY2, via=VIA, now=5.0)
    outcome = pub.transaction_failed("Timer F: no final response within 32 s", 37.0)
    assert outcome == Failed("no response: Timer F: no final response within 32 s", True)
    assert pub.state is PubState.ACTIVE and pub.etag == "e1"


def test_mismatching_cseq_is_the_peers_fault() -> None:
    pub = make()
    request = pub.publish(BODY, via=VIA, now=0.0)
    wrong = ok(request).with_header("CSeq", "99 PUBLISH")
    outcome = pub.receive(wrong, 0.1)
    assert isinstance(outcome, Failed) and outcome.retryable
    assert pub.state is PubState.IDLE


# -- misuse --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "misuse",
    [
        lambda pub: pub.refresh(via=VIA, now=0.0),
        lambda pub: pub.remove(via=VIA, now=0.0),
        lambda pub: pub.receive(SipResponse(200, "OK"), 0.0),
        lambda pub: pub.transaction_failed("x", 0.0),
        lambda pub: pub.publish(b"", via=VIA, now=0.0),
    ],
)
def test_misuse_in_idle(misuse: Callable[[Publication], object]) -> None:
    pub = make()
    with pytest.raises(LocalProtocolError):
        misuse(pub)
    assert pub.state is PubState.ERROR
    with pytest.raises(LocalProtocolError):
        pub.publish(BODY, via=VIA, now=1.0)


def test_misuse_while_waiting() -> None:
    pub = make()
    request = pub.publish(BODY, via=VIA, now=0.0)
    with pytest.raises(LocalProtocolError, match="WAITING"):
        pub.publish(BODY2, via=VIA, now=0.1)
    assert pub.state is PubState.ERROR
    with pytest.raises(LocalProtocolError):
        pub.receive(ok(request), 0.2)


def test_provisional_response_is_misuse() -> None:
    pub = make()
    request = pub.publish(BODY, via=VIA, now=0.0)
    with pytest.raises(LocalProtocolError, match="final"):
        pub.receive(answer(request, 180, "Ringing"), 0.1)


def test_response_for_another_branch_is_misuse() -> None:
    pub = make()
    request = pub.publish(BODY, via=VIA, now=0.0)
    other = ok(request).with_header("Via", f"{VIA};branch=z9hG4bKother")
    with pytest.raises(LocalProtocolError, match="branch"):
        pub.receive(other, 0.1)


# -- with the transaction ------------------------------------------------------------------


def test_publication_through_a_transaction() -> None:
    pub = make()
    request = pub.publish(BODY, via=VIA, now=0.0)
    tx = PublishTransaction(request, reliable=False)
    tx.start(0.0)
    (final,) = tx.receive_response(ok(request, "e1"), 0.05)
    assert isinstance(final, Final)
    assert pub.receive(final.response, 0.05) == Published("e1", 3600, 3540.0)
