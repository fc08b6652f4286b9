"""Digest authentication, client side (RFC 2617, RFC 7616; RFC 8760 for SHA-256 in SIP).

Pure (STYLE §2): no I/O, no clock, no randomness (the caller supplies ``cnonce``), no
logging.  The password only ever enters a hash; nothing here stores or returns it.

A peer's challenge we cannot answer (another scheme, an unknown algorithm, no realm or
nonce, only unknown qop values) raises ``RemoteProtocolError``; wrong arguments from our
side raise ``LocalProtocolError``.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Final

from xcapdiff_ext.errors import LocalProtocolError, RemoteProtocolError
from xcapdiff_ext.sip.message import SipResponse, quote_string

__all__ = [
    "ALGORITHMS",
    "Challenge",
    "authorization",
    "challenge_from_response",
    "parse_challenge",
    "pick_challenge",
]


def _md5(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# Canonical spelling → (hash, strength rank for pick_challenge).
ALGORITHMS: Final[dict[str, tuple[Callable[[bytes], str], int]]] = {
    "MD5": (_md5, 0),
    "MD5-sess": (_md5, 0),
    "SHA-256": (_sha256, 1),
    "SHA-256-sess": (_sha256, 1),
}
_BY_UPPER: Final = {name.upper(): name for name in ALGORITHMS}
_QOPS: Final = ("auth", "auth-int")
_TOKEN = re.compile(r"[A-Za-z0-9\-.!%*_+`'~]+")
# One auth-param: name = token / quoted-string (RFC 7235 §2.1), then a comma or the end.
_PARAM = re.compile(
    r"""[ \t]*(?P<name>[A-Za-z0-9\-.!%*_+`'~]+)[ \t]*=[ \t]*
        (?:"(?P<quoted>(?:[^"\\]|\\.)*)"|(?P<token>[^\s,"]*))
        [ \t]*(?:,|$)""",
    re.VERBOSE | re.DOTALL,
)


@dataclass(frozen=True, slots=True)
class Challenge:
    """One Digest challenge from ``WWW-Authenticate`` (``proxy=False``, a 401) or
    ``Proxy-Authenticate`` (``proxy=True``, a 407).  ``algorithm`` is canonically spelt;
    ``qop`` holds the supported values offered, lower-case, in the server's order."""

    realm: str
    nonce: str
    algorithm: str = "MD5"
    qop: tuple[str, ...] = ()
    opaque: str | None = None
    stale: bool = False
    domain: str | None = None
    proxy: bool = False

    @property
    def answer_header(self) -> str:
        """Where the answer goes: ``Authorization`` or ``Proxy-Authorization``."""
        return "Proxy-Authorization" if self.proxy else "Authorization"


def _fail(reason: str) -> RemoteProtocolError:
    return RemoteProtocolError(f"unusable Digest challenge: {reason}")


def parse_challenge(value: str, *, proxy: bool = False) -> Challenge:
    """A ``WWW-Authenticate`` / ``Proxy-Authenticate`` header value → ``Challenge``."""
    scheme, _, rest = value.strip(" \t").partition(" ")
    if scheme.lower() != "digest":
        raise _fail(f"scheme {scheme[:20]!r} is not Digest")
    params: dict[str, str] = {}
    pos, rest = 0, rest.strip(" \t")
    while pos < len(rest):
        match = _PARAM.match(rest, pos)
        if match is None or match.end() == pos:
            raise _fail(f"cannot parse parameters at {rest[pos : pos + 30]!r}")
        name = match["name"].lower()
        if name in params:
            raise _fail(f"parameter {name} repeated")
        quoted = match["quoted"]
        params[name] = re.sub(r"\\(.)", r"\1", quoted) if quoted is not None else match["token"]
        pos = match.end()
    realm, nonce = params.get("realm"), params.get("nonce")
    if realm is None or not nonce:
        raise _fail("no realm or no nonce")
    algorithm = _BY_UPPER.get(params.get("algorithm", "MD5").upper())
    if algorithm is None:
        raise _fail(f"unknown algorithm {params['algorithm'][:20]!r}")
    qop: tuple[str, ...] = ()
    if "qop" in params:
        offered = [q.strip(" \t").lower() for q in params["qop"].split(",")]
        qop = tuple(q for q in dict.fromkeys(offered) if q in _QOPS)
        if not qop:
            raise _fail(f"no supported qop in {params['qop'][:30]!r}")
    return Challenge(
        realm=realm,
        nonce=nonce,
        algorithm=algorithm,
        qop=qop,
        opaque=params.get("opaque"),
        stale=params.get("stale", "").lower() == "true",
        domain=params.get("domain"),
        proxy=proxy,
    )


def pick_challenge(values: Iterable[str], *, proxy: bool = False) -> Challenge:
    """The strongest usable challenge among header values: SHA-256(-sess) over MD5(-sess),
    the server's order among equals (RFC 7616 §3.7).  Unusable ones (Basic, unknown
    algorithms) are skipped; if none is usable, ``RemoteProtocolError``."""
    best: Challenge | None = None
    reasons: list[str] = []
    for value in values:
        try:
            challenge = parse_challenge(value, proxy=proxy)
        except RemoteProtocolError as err:
            reasons.append(err.detail)
            continue
        if best is None or ALGORITHMS[challenge.algorithm][1] > ALGORITHMS[best.algorithm][1]:
            best = challenge
    if best is None:
        raise _fail("; ".join(reasons) if reasons else "no challenge offered")
    return best


def challenge_from_response(response: SipResponse) -> Challenge:
    """The challenge to answer in a 401 (``WWW-Authenticate``) or 407 (``Proxy-Authenticate``)."""
    if response.status == 401:
        return pick_challenge(response.header_values("WWW-Authenticate"))
    if response.status == 407:
        return pick_challenge(response.header_values("Proxy-Authenticate"), proxy=True)
    raise LocalProtocolError(f"a {response.status} response carries no challenge")


def _check(name: str, value: str) -> None:
    if not isinstance(value, str) or re.search(r"[\r\n\x00]", value):
        raise LocalProtocolError(f"{name} must be a str without CR, LF or NUL")


def authorization(
    challenge: Challenge,
    *,
    method: str,
    uri: str,
    username: str,
    password: str,
    cnonce: str,
    nc: int,
    body: bytes = b"",
) -> str:
    """The ``Authorization`` / ``Proxy-Authorization`` value answering ``challenge``.

    qop=auth when offered, auth-int only when it is the only choice (``body`` is hashed),
    no qop → the RFC 2069 form.  ``nc`` counts uses of this nonce (1 first, RFC 7616
    §3.4); ``uri`` is the Request-URI exactly as sent; ``cnonce`` is the caller's random
    string (no quotes).  ``password`` is used only inside H(A1)."""
    if not isinstance(method, str) or not _TOKEN.fullmatch(method):
        raise LocalProtocolError(f"method is not a token: {method!r}")
    for name, value in (("uri", uri), ("username", username)):
        _check(name, value)
    if not isinstance(password, str):  # any text: it only enters H(A1)
        raise LocalProtocolError("password must be a str")
    _check("cnonce", cnonce)
    if not cnonce or '"' in cnonce or "\\" in cnonce:
        raise LocalProtocolError("cnonce must be non-empty, without quotes or backslashes")
    if type(nc) is not int or not 1 <= nc <= 0xFFFFFFFF:
        raise LocalProtocolError(f"nc must be an int in 1..0xFFFFFFFF: {nc!r}")
    if challenge.algorithm not in ALGORITHMS:
        raise LocalProtocolError(f"unknown algorithm {challenge.algorithm!r}")
    h = ALGORITHMS[challenge.algorithm][0]

    def hh(*parts: str) -> str:
        return h(":".join(parts).encode("utf-8"))

    ha1 = hh(username, challenge.realm, password)
    if challenge.algorithm.endswith("-sess"):
        ha1 = hh(ha1, challenge.nonce, cnonce)
    qop = "auth" if "auth" in challenge.qop else ("auth-int" if challenge.qop else None)
    ha2 = hh(method, uri, h(body)) if qop == "auth-int" else hh(method, uri)
    nc_text = f"{nc:08x}"
    if qop is None:
        response = hh(ha1, challenge.nonce, ha2)
    else:
        response = hh(ha1, challenge.nonce, nc_text, cnonce, qop, ha2)
    fields = [
        f"username={quote_string(username)}",
        f"realm={quote_string(challenge.realm)}",
        f"nonce={quote_string(challenge.nonce)}",
        f"uri={quote_string(uri)}",
        f'response="{response}"',
        f"algorithm={challenge.algorithm}",
    ]
    if qop is not None:
        fields += [f'cnonce="{cnonce}"', f"qop={qop}", f"nc={nc_text}"]
    elif challenge.algorithm.endswith("-sess"):
        fields.append(f'cnonce="{cnonce}"')  # -sess needs it even without qop (RFC 2617 §3.2.2.2)
    if challenge.opaque is not None:
        fields.append(f"opaque={quote_string(challenge.opaque)}")
    return "Digest " + ", ".join(fields)
