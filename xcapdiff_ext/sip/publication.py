"""RFC 3903 publication state for one (owner AOR, event), sans I/O (STYLE §3).

``Publication`` builds the PUBLISH requests of NOTES.md §5 and decides what a final
response means.  It never sends anything: the caller runs each request in a
``PublishTransaction`` and feeds back the final response (``receive``) or the failure
(``transaction_failed``); the outcome says what to do next.

=========  ====  ============  ==========================================
operation  body  SIP-If-Match  Expires
=========  ====  ============  ==========================================
initial    yes   no            the requested lifetime (``expires``)
modify     yes   yes           the requested lifetime
refresh    no    yes           the requested lifetime, at ``refresh_at``
remove     no    yes           0
=========  ====  ============  ==========================================

Decisions (RFC 3903 §4, §11):

- Call-ID and From tag are drawn once per ``Publication`` from ``new_token``; CSeq grows
  by one for every request built (retries included); each request has a fresh branch.
- Content-Type is sent only with a body (refresh and remove carry none).
- After a 2xx, the SIP-ETag and the granted Expires (else the requested one) are kept;
  ``refresh_at`` = when the request was built + granted - min(60 s, 10 % of granted).
  A 2xx without SIP-ETag (an ESC bug) leaves no state to refresh: the next publication
  is an initial one.  With ``expires=0`` (OpenXCAP's one-shot style) nothing is kept.
- 412 on modify/refresh: drop the SIP-ETag and send (once) a fresh initial PUBLISH with
  the same body (for a refresh: the last body published).  412 on remove: the state is
  gone already, which was the point: ``Removed``.
- 423: retry once with Expires = Min-Expires; later requests keep the raised value.
- 401/407: retry once per challenge kind and operation with (Proxy-)Authorization; the
  challenge is kept and answered pre-emptively on later requests (nc counts per nonce).
  ``stale=true`` is not a failure: retry with the new nonce (at most ``MAX_STALE`` times).
- Misuse (a call the state forbids, a provisional response, a response for another
  branch) raises ``LocalProtocolError`` and the publication goes to ERROR for good.
  A final response on our branch whose CSeq or Call-ID does not match is the peer's
  fault: ``Failed(retryable=True)``.

The password is kept private: it is in no ``repr`` and no outcome (the Authorization
header carries only the digest).
"""

from __future__ import annotations

import enum
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import NoReturn

from xcapdiff_ext.errors import ConfigError, LocalProtocolError, XcapDiffError
from xcapdiff_ext.sip.digest import Challenge, authorization, challenge_from_response
from xcapdiff_ext.sip.message import SipRequest, SipResponse

__all__ = [
    "CONTENT_TYPE",
    "Failed",
    "Outcome",
    "PubState",
    "Publication",
    "Published",
    "Removed",
    "SendAgain",
    "refresh_margin",
]

CONTENT_TYPE = "application/xcap-diff+xml"  # RFC 5875 §4
BRANCH_COOKIE = "z9hG4bK"
MAX_FORWARDS = "70"
MAX_STALE = 3  # stale=true retries per operation before giving up (a looping server)
REFRESH_MARGIN = 60.0  # seconds before expiry at most...
REFRESH_FRACTION = 0.1  # ...and at most this share of the granted lifetime

_TOKEN_RE = re.compile(r"[A-Za-z0-9.!%*_+`'~-]+")  # RFC 3261 §25.1 token
_AOR_RE = re.compile(r"sips?:[^\s<>\"\x00-\x1f\x7f]+", re.IGNORECASE)
_VIA_RE = re.compile(r"SIP/2\.0/[A-Za-z]+ [^\s;,]+(;[^\s;,]+)*", re.IGNORECASE)
_EVENT_RE = re.compile(r"[A-Za-z0-9!%*_+`'~-]+(\.[A-Za-z0-9!%*_+`'~-]+)*")
_CONTROL_RE = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")  # everything but HTAB
_LEADING_INT_RE = re.compile(r"\s*(\d+)")

# Headers this module writes itself: an extra header may not replace them (long and
# RFC 3261 §7.3.3 compact forms, lower case).
_MANAGED = frozenset(
    {
        "via", "v", "max-forwards", "from", "f", "to", "t", "call-id", "i", "cseq",
        "event", "o", "expires", "sip-if-match", "content-type", "c", "content-length",
        "l", "user-agent", "authorization", "proxy-authorization",
    }
)  # fmt: skip

_PERMANENT_REASONS = {
    403: "the presence server refuses publications for {aor} (check its policy and the "
    "sip_username/sip_password settings)",
    404: "the presence server does not know the resource {aor}",
    415: "the presence server does not accept {content_type} bodies for the {event} event",
    489: "the presence server does not know the {event} event (presence_xcapdiff not loaded?)",
}


def refresh_margin(granted: float) -> float:
    """How long before expiry a refresh is sent: min(60 s, 10 % of the lifetime)."""
    return min(REFRESH_MARGIN, REFRESH_FRACTION * granted)


class PubState(enum.Enum):
    IDLE = "idle"  # no SIP-ETag held, no request in flight
    ACTIVE = "active"  # a SIP-ETag is held, no request in flight
    WAITING = "waiting"  # a request is in flight: feed its final response or failure
    ERROR = "error"  # misused (LocalProtocolError): unusable, make a new Publication


class _Input(enum.Enum):
    PUBLISH = "publish"
    REFRESH = "refresh"
    REMOVE = "remove"
    RESPONSE = "final response"
    FAILURE = "transaction failure"


class _Op(enum.Enum):
    INITIAL = "initial"
    MODIFY = "modify"
    REFRESH = "refresh"
    REMOVE = "remove"


_P, _In = PubState, _Input

# (state, input) -> the states it may lead to: every legal move, in one place.
_TRANSITIONS: dict[tuple[PubState, _Input], frozenset[PubState]] = {
    (_P.IDLE, _In.PUBLISH): frozenset({_P.WAITING}),
    (_P.ACTIVE, _In.PUBLISH): frozenset({_P.WAITING}),
    (_P.ACTIVE, _In.REFRESH): frozenset({_P.WAITING}),
    (_P.ACTIVE, _In.REMOVE): frozenset({_P.WAITING}),
    # WAITING again when the outcome is SendAgain.
    (_P.WAITING, _In.RESPONSE): frozenset({_P.IDLE, _P.ACTIVE, _P.WAITING}),
    (_P.WAITING, _In.FAILURE): frozenset({_P.IDLE, _P.ACTIVE}),
}


@dataclass(frozen=True, slots=True)
class Published:
    """A 2xx: the ESC holds ``etag`` for ``expires`` s; refresh at ``refresh_at``.

    ``etag``/``refresh_at`` are None when nothing is kept (one-shot ``expires=0``, or an
    ESC that sent no SIP-ETag)."""

    etag: str | None
    expires: int
    refresh_at: float | None


@dataclass(frozen=True, slots=True)
class Removed:
    """The publication is gone at the ESC (2xx to the removal, or 412: already gone)."""


@dataclass(frozen=True, slots=True)
class SendAgain:
    """Run ``request`` in a new transaction (412 recovery, 423, digest challenge)."""

    request: SipRequest
    reason: str


@dataclass(frozen=True, slots=True)
class Failed:
    """The operation failed; ``retryable`` says whether trying later can help.

    ``retry_after`` (seconds) is the ESC's Retry-After (503, other 5xx, 408);
    ``status`` is None for a transaction timeout or transport failure."""

    reason: str
    retryable: bool
    retry_after: float | None = None
    status: int | None = None


Outcome = Published | Removed | SendAgain | Failed


@dataclass(slots=True)
class _Auth:
    """A challenge we answer (per header kind): nc counts requests per nonce."""

    challenge: Challenge
    nc: int = 0


class Publication:
    """The publisher side of one RFC 3903 publication (owner AOR + event package)."""

    def __init__(
        self,
        aor: str,
        *,
        event: str = "xcap-diff",
        expires: int = 3600,
        new_token: Callable[[], str],
        extra_headers: tuple[tuple[str, str], ...] = (),
        user_agent: str = "xcapdiff-ext",
        credentials: tuple[str, str] | None = None,
        content_type: str = CONTENT_TYPE,
        etag: str | None = None,
    ) -> None:
        """``etag``: a SIP-ETag the ESC granted before (remembered across a restart): the
        first ``publish`` then modifies that publication instead of creating a second
        one; if the ESC no longer knows it, its 412 leads to a fresh initial PUBLISH."""
        if not _AOR_RE.fullmatch(aor):
            raise LocalProtocolError(f"AOR {aor!r}: expected a sip: or sips: URI")
        if not _EVENT_RE.fullmatch(event):
            raise LocalProtocolError(f"event {event!r}: expected an RFC 6665 event type")
        if isinstance(expires, bool) or not isinstance(expires, int) or expires < 0:
            raise LocalProtocolError(f"expires {expires!r}: expected whole seconds >= 0")
        if _CONTROL_RE.search(user_agent):
            raise ConfigError("user_agent", user_agent, "expected no control characters")
        if _CONTROL_RE.search(content_type) or not content_type:
            raise LocalProtocolError(f"content_type {content_type!r}: expected a MIME type")
        for name, value in extra_headers:
            _check_extra_header(name, value)
        if credentials is not None and _CONTROL_RE.search(credentials[0]):
            raise ConfigError("sip_username", credentials[0], "expected no control characters")
        self._aor = aor
        self._event = event
        self._expires = expires
        self._new_token = new_token
        self._extra = tuple(extra_headers)
        self._user_agent = user_agent
        self._content_type = content_type
        self._credentials = credentials
        self._tag = self._token("From tag")
        self._call_id = self._token("Call-ID")
        self._cseq = 0
        self._state = PubState.IDLE
        if etag is not None and (not etag or _CONTROL_RE.search(etag)):
            raise LocalProtocolError(f"etag {etag!r}: expected a SIP-ETag token")
        self._etag: str | None = etag
        self._refresh_at: float | None = None
        self._last_body = b""  # the last body the ESC accepted (412 recovery of a refresh)
        self._auth: dict[str, _Auth] = {}  # "Authorization"/"Proxy-Authorization" -> state
        # The operation in flight.
        self._op = _Op.INITIAL
        self._body = b""
        self._via = ""
        self._sent_at = 0.0
        self._request: SipRequest | None = None
        self._did_412 = self._did_423 = False
        self._auth_retried: set[str] = set()
        self._stale = 0

    def __repr__(self) -> str:  # never the credentials
        return (
            f"<Publication {self._aor} event={self._event} {self._state.name}"
            f" etag={self._etag!r} cseq={self._cseq}>"
        )

    # -- read-only state ------------------------------------------------------------

    @property
    def aor(self) -> str:
        return self._aor

    @property
    def state(self) -> PubState:
        return self._state

    @property
    def etag(self) -> str | None:
        """The SIP-ETag the ESC gave on the last success; None when no state is held."""
        return self._etag

    @property
    def refresh_at(self) -> float | None:
        """When to call ``refresh`` (None when nothing is held)."""
        return self._refresh_at

    @property
    def expires(self) -> int:
        """The lifetime requested (raised by a 423's Min-Expires)."""
        return self._expires

    @property
    def call_id(self) -> str:
        return self._call_id

    @property
    def cseq(self) -> int:
        """The CSeq number of the last request built (0 before the first)."""
        return self._cseq

    # -- inputs ---------------------------------------------------------------------

    def publish(self, body: bytes, *, via: str, now: float) -> SipRequest:
        """Publish ``body``: initial (no SIP-ETag held) or modify (SIP-If-Match).

        ``via`` is the transport part of the Via header (``SIP/2.0/UDP host:port``,
        optionally with parameters such as ``;rport``); the branch is added here."""
        if not body:
            self._fail("publish", "expected a non-empty body (a refresh carries none)")
        self._move(_In.PUBLISH, PubState.WAITING)
        op = _Op.MODIFY if self._etag is not None else _Op.INITIAL
        return self._begin(op, body, via, now)

    def refresh(self, *, via: str, now: float) -> SipRequest:
        """Extend the lifetime of the held publication (no body, SIP-If-Match)."""
        self._move(_In.REFRESH, PubState.WAITING)
        return self._begin(_Op.REFRESH, b"", via, now)

    def remove(self, *, via: str, now: float) -> SipRequest:
        """Remove the held publication (Expires: 0, SIP-If-Match, no body)."""
        self._move(_In.REMOVE, PubState.WAITING)
        return self._begin(_Op.REMOVE, b"", via, now)

    def receive(self, response: SipResponse, now: float) -> Outcome:
        """The final response to the request in flight (from its transaction)."""
        request = self._request
        if self._state is not PubState.WAITING or request is None:
            self._fail("a response", "no request is in flight")
        if response.status < 200:
            self._fail(f"a {response.status} response", "expected a final response")
        if response.branch != request.branch:
            self._fail(
                f"a response for branch {response.branch!r}",
                f"the request in flight is {request.branch!r}",
            )
        if response.cseq != request.cseq or response.call_id != request.call_id:
            return self._finish(
                _In.RESPONSE,
                Failed(
                    f"{response.status} {response.reason}: CSeq/Call-ID of the response "
                    f"do not match the request ({response.cseq!r} vs {request.cseq!r})",
                    retryable=True,
                    status=response.status,
                ),
            )
        return self._react(response, now)

    def transaction_failed(self, reason: str, now: float) -> Failed:
        """The request in flight got no final response (Timer F, transport error)."""
        if self._state is not PubState.WAITING:
            self._fail("a transaction failure", "no request is in flight")
        outcome = Failed(f"no response: {reason}", retryable=True)
        self._finish(_In.FAILURE, outcome)
        return outcome

    # -- reactions ------------------------------------------------------------------

    def _react(self, response: SipResponse, now: float) -> Outcome:
        status, op = response.status, self._op
        label = f"{status} {response.reason}".strip()
        if 200 <= status < 300:
            return self._succeeded(response)
        if status == 412 and op in (_Op.MODIFY, _Op.REFRESH) and not self._did_412:
            self._did_412 = True
            self._etag = self._refresh_at = None
            body = self._body if op is _Op.MODIFY else self._last_body
            return self._again(_Op.INITIAL, body, now, f"{label}: SIP-ETag unknown, initial")
        if status == 412 and op is _Op.REMOVE:
            self._etag = self._refresh_at = None
            return self._finish(_In.RESPONSE, Removed())
        if status == 423 and op is not _Op.REMOVE and not self._did_423:
            min_expires = _leading_int(response.header("Min-Expires"))
            if min_expires is not None and min_expires > self._expires:
                self._did_423 = True
                self._expires = min_expires
                return self._again(op, self._body, now, f"{label}: Expires {min_expires}")
            return self._failed(f"{label}: no usable Min-Expires", False, status)
        if status in (401, 407):
            return self._challenged(response, label, now)
        if status in _PERMANENT_REASONS:
            detail = _PERMANENT_REASONS[status].format(
                aor=self._aor, event=self._event, content_type=self._content_type
            )
            allow = response.header("Allow-Events")
            if status == 489 and allow:
                detail += f"; it supports: {allow}"
            return self._failed(f"{label}: {detail}", False, status)
        if status == 408 or 500 <= status < 600:
            # Retry-After is honoured on any retryable answer (RFC 3261 §20.33), 503 mostly.
            delay = _leading_int(response.header("Retry-After"))
            after = float(delay) if delay is not None else None
            outcome = Failed(label, retryable=True, retry_after=after, status=status)
            return self._finish(_In.RESPONSE, outcome)
        if 300 <= status < 400:
            return self._failed(f"{label}: redirects are not followed", False, status)
        return self._failed(label, False, status)  # other 4xx, 6xx

    def _succeeded(self, response: SipResponse) -> Outcome:
        if self._op is _Op.REMOVE:
            self._etag = self._refresh_at = None
            return self._finish(_In.RESPONSE, Removed())
        granted = _leading_int(response.header("Expires"))
        if granted is None:
            granted = self._expires
        etag = response.header("SIP-ETag")
        etag = etag.strip() if etag else None
        if self._body:
            self._last_body = self._body
        if self._expires == 0 or granted == 0 or not etag:
            self._etag = self._refresh_at = None  # nothing held at the ESC we can refer to
            return self._finish(_In.RESPONSE, Published(etag, granted, None))
        self._etag = etag
        self._refresh_at = self._sent_at + granted - refresh_margin(granted)
        return self._finish(_In.RESPONSE, Published(etag, granted, self._refresh_at))

    def _challenged(self, response: SipResponse, label: str, now: float) -> Outcome:
        if self._credentials is None:
            return self._failed(
                f"{label}: the server wants authentication, but sip_username/sip_password "
                "are not set",
                False,
                response.status,
            )
        try:
            challenge = challenge_from_response(response)
        except XcapDiffError as err:
            return self._failed(f"{label}: unusable challenge: {err}", False, response.status)
        kind = challenge.answer_header
        if challenge.stale:
            self._stale += 1
            if self._stale > MAX_STALE:
                return self._failed(f"{label}: stale nonce again and again", True, response.status)
        elif kind in self._auth_retried:
            return self._failed(
                f"{label}: the server refused the credentials of {self._credentials[0]!r}",
                False,
                response.status,
            )
        else:
            self._auth_retried.add(kind)
        known = self._auth.get(kind)
        if known is None or known.challenge.nonce != challenge.nonce:
            self._auth[kind] = _Auth(challenge)
        else:
            known.challenge = challenge
        return self._again(self._op, self._body, now, f"{label}: digest authentication")

    # -- building -------------------------------------------------------------------

    def _begin(self, op: _Op, body: bytes, via: str, now: float) -> SipRequest:
        if not _VIA_RE.fullmatch(via) or "branch=" in via.lower():
            self._fail(f"via {via!r}", "expected 'SIP/2.0/<transport> host[:port]' without branch")
        if op is not _Op.INITIAL and self._etag is None:
            self._fail(op.value, "no SIP-ETag is held")
        self._via = via
        self._did_412 = self._did_423 = False
        self._auth_retried = set()
        self._stale = 0
        return self._build(op, body, now)

    def _again(self, op: _Op, body: bytes, now: float, reason: str) -> Outcome:
        request = self._build(op, body, now)
        return self._finish(_In.RESPONSE, SendAgain(request, reason))

    def _build(self, op: _Op, body: bytes, now: float) -> SipRequest:
        self._op, self._body, self._sent_at = op, body, now
        self._cseq += 1
        expires = 0 if op is _Op.REMOVE else self._expires
        headers: list[tuple[str, str]] = [
            ("Via", f"{self._via};branch={BRANCH_COOKIE}{self._token('branch')}"),
            ("Max-Forwards", MAX_FORWARDS),
            ("From", f"<{self._aor}>;tag={self._tag}"),
            ("To", f"<{self._aor}>"),
            ("Call-ID", self._call_id),
            ("CSeq", f"{self._cseq} PUBLISH"),
            ("Event", self._event),
            ("Expires", str(expires)),
        ]
        if op is not _Op.INITIAL:
            assert self._etag is not None  # checked by _begin; 412 recovery is INITIAL
            headers.append(("SIP-If-Match", self._etag))
        if self._credentials is not None:
            username, password = self._credentials
            for kind, auth in self._auth.items():
                auth.nc += 1
                value = authorization(
                    auth.challenge,
                    method="PUBLISH",
                    uri=self._aor,
                    username=username,
                    password=password,
                    cnonce=self._token("cnonce"),
                    nc=auth.nc,
                    body=body,
                )
                headers.append((kind, value))
        if self._user_agent:
            headers.append(("User-Agent", self._user_agent))
        if body:
            headers.append(("Content-Type", self._content_type))
        headers.extend(self._extra)
        request = SipRequest("PUBLISH", self._aor, tuple(headers), body)
        self._request = request
        return request

    # -- internals ------------------------------------------------------------------

    def _token(self, what: str) -> str:
        token = self._new_token()
        if not _TOKEN_RE.fullmatch(token):
            raise LocalProtocolError(f"new_token() gave {token!r} for the {what}: not a token")
        return token

    def _failed(self, reason: str, retryable: bool, status: int) -> Outcome:
        return self._finish(_In.RESPONSE, Failed(reason, retryable=retryable, status=status))

    def _finish(self, event: _Input, outcome: Outcome) -> Outcome:
        if isinstance(outcome, SendAgain):
            target = PubState.WAITING
        else:
            self._request = None
            target = PubState.ACTIVE if self._etag is not None else PubState.IDLE
        self._move(event, target)
        return outcome

    def _move(self, event: _Input, target: PubState) -> None:
        if target not in _TRANSITIONS.get((self._state, event), frozenset()):
            self._fail(event.value, f"not allowed (would go to {target.name})")
        self._state = target

    def _fail(self, what: str, detail: str) -> NoReturn:
        state = self._state.name
        self._state = PubState.ERROR
        raise LocalProtocolError(f"publication {self._aor}: {what} in state {state}: {detail}")


def _check_extra_header(name: str, value: str) -> None:
    if not _TOKEN_RE.fullmatch(name):
        raise ConfigError("sip_extra_headers", name, "expected a header name (a SIP token)")
    if name.lower() in _MANAGED:
        raise ConfigError("sip_extra_headers", name, "this header is set by xcapdiff itself")
    if _CONTROL_RE.search(value) or not value.strip():
        raise ConfigError(
            "sip_extra_headers",
            f"{name}: {value}",
            "expected a non-empty value on one line (no CR, LF or control characters)",
        )


def _leading_int(text: str | None) -> int | None:
    """The delta-seconds at the start of Expires/Min-Expires/Retry-After (comments follow)."""
    if text is None:
        return None
    match = _LEADING_INT_RE.match(text)
    return int(match.group(1)) if match else None
