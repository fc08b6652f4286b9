"""xcapdiff_ext.sip.digest: RFC 2617 / RFC 7616 vectors, challenge parsing, choices."""

from __future__ import annotations

import hashlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from xcapdiff_ext.errors import LocalProtocolError, RemoteProtocolError
from xcapdiff_ext.sip.digest import (
    Challenge,
    authorization,
    challenge_from_response,
    parse_challenge,
    pick_challenge,
)
from xcapdiff_ext.sip.message import SipResponse, quote_string

RFC2617 = (
    'Digest realm="testrealm@host.com", qop="auth,auth-int", '
    'nonce="dcd98b7102dd2f0e8b11d0f600bfb0c093", opaque="5ccc069c403ebaf9f0171e9517f40e41"'
)
RFC7616 = (
    'Digest realm="http-auth@example.org", qop="auth, auth-int", algorithm={alg}, '
    'nonce="7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v", '
    'opaque="FQhe/qaU925kfnzjCev0ciny7QMkPqMAFRtzCUYo5tdS"'
)
CNONCE_7616 = "f2/wE4q74E6zIJEtWaHKaf5wv/H5QzzpXusqGemxURZJ"


def fields(value: str) -> dict[str, str]:
    """The answer's parameters, unquoted (test helper: values hold no commas)."""
    assert value.startswith("Digest ")
    out = {}
    for item in value[len("Digest ") :].split(", "):
        name, _, val = item.partition("=")
        out[name] = val[1:-1] if val.startswith('"') else val
    return out


def h(alg: str, text: str) -> str:
    return hashlib.new(alg, text.encode()).hexdigest()


def test_rfc2617_section_3_5() -> None:
    challenge = parse_challenge(RFC2617)
    answer = authorization(
        challenge,
        method="GET",
        uri="/dir/index.html",
        username="Mufasa",
        password="Circle Of Life",
        cnonce="0a4f113b",
        nc=1,
    )
    assert answer == (
        'Digest username="Mufasa", realm="testrealm@host.com", '
        'nonce="dcd98b7102dd2f0e8b11d0f600bfb0c093", uri="/dir/index.html", '
        'response="6629fae49393a05397450978507c4ef1", algorithm=MD5, cnonce="0a4f113b", '
        'qop=auth, nc=00000001, opaque="5ccc069c403ebaf9f0171e9517f40e41"'
    )
    assert "Circle" not in answer


@pytest.mark.parametrize(
    ("alg", "expected"),
    [
        ("SHA-256", "753927fa0e85d155564e2e272a28d1802ca10daf4496794697cf8db5856cb6c1"),
        ("MD5", "8ca523f5e9506fed4657c9700eebdbec"),
    ],
)
def test_rfc7616_section_3_9_1(alg: str, expected: str) -> None:
    challenge = parse_challenge(RFC7616.format(alg=alg))
    assert challenge.algorithm == alg and challenge.qop == ("auth", "auth-int")
    answer = fields(
        authorization(
            challenge,
            method="GET",
            uri="/dir/index.html",
            username="Mufasa",
            password="Circle of Life",
            cnonce=CNONCE_7616,
            nc=1,
        )
    )
    assert answer["response"] == expected
    assert answer["qop"] == "auth" and answer["nc"] == "00000001"
    assert answer["opaque"] == "FQhe/qaU925kfnzjCev0ciny7QMkPqMAFRtzCUYo5tdS"
    assert answer["algorithm"] == alg


@pytest.mark.parametrize(("alg", "hash_name"), [("MD5-sess", "md5"), ("SHA-256-sess", "sha256")])
def test_sess_algorithms(alg: str, hash_name: str) -> None:
    challenge = Challenge(realm="r", nonce="n", algorithm=alg, qop=("auth",))
    answer = fields(
        authorization(
            challenge, method="PUBLISH", uri="sip:a@b", username="u", password="p", cnonce="c", nc=2
        )
    )
    ha1 = h(hash_name, f"{h(hash_name, 'u:r:p')}:n:c")
    ha2 = h(hash_name, "PUBLISH:sip:a@b")
    assert answer["response"] == h(hash_name, f"{ha1}:n:00000002:c:auth:{ha2}")
    assert answer["cnonce"] == "c"


def test_auth_int_only_when_it_is_the_only_qop() -> None:
    challenge = Challenge(realm="r", nonce="n", qop=("auth-int",))
    body = b"<xcap-diff/>"
    answer = fields(
        authorization(
            challenge,
            method="PUBLISH",
            uri="sip:a@b",
            username="u",
            password="p",
            cnonce="c",
            nc=1,
            body=body,
        )
    )
    ha2 = h("md5", f"PUBLISH:sip:a@b:{hashlib.md5(body).hexdigest()}")
    assert answer["qop"] == "auth-int"
    assert answer["response"] == h("md5", f"{h('md5', 'u:r:p')}:n:00000001:c:auth-int:{ha2}")
    both = parse_challenge('Digest realm="r", nonce="n", qop="auth-int,auth"')
    assert (
        fields(
            authorization(both, method="X", uri="u", username="u", password="p", cnonce="c", nc=1)
        )["qop"]
        == "auth"
    )


def test_rfc2069_compat_without_qop() -> None:
    challenge = parse_challenge('Digest realm="r", nonce="n"')
    answer = fields(
        authorization(
            challenge, method="PUBLISH", uri="sip:a@b", username="u", password="p", cnonce="c", nc=1
        )
    )
    assert "qop" not in answer and "nc" not in answer and "cnonce" not in answer
    assert "opaque" not in answer
    ha2 = h("md5", "PUBLISH:sip:a@b")
    assert answer["response"] == h("md5", f"{h('md5', 'u:r:p')}:n:{ha2}")


def test_challenge_parsing_edge_cases() -> None:
    c = parse_challenge(
        'digest  realm="a, b \\"q\\"",nonce=abc123 , algorithm=md5-SESS,'
        'stale=TRUE, domain="sip:x sip:y", qop="auth, foo", opaque=""'
    )
    assert c == Challenge(
        realm='a, b "q"',
        nonce="abc123",
        algorithm="MD5-sess",
        qop=("auth",),
        opaque="",
        stale=True,
        domain="sip:x sip:y",
    )
    assert parse_challenge('Digest realm="r", nonce="n", stale=false').stale is False
    assert parse_challenge('Digest realm="r", nonce="n", extra=token').qop == ()
    assert parse_challenge('Digest nonce="n", realm=""').realm == ""


@pytest.mark.parametrize(
    "value",
    [
        'Basic realm="r"',
        "Negotiate abc",
        "",
        'Digest realm="r"',
        'Digest nonce="n"',
        'Digest realm="r", nonce="n", algorithm=SHA-512-256',
        'Digest realm="r", nonce="n", algorithm=AKAv1-MD5',
        'Digest realm="r", nonce="n", qop="auth-conf"',
        'Digest realm="r", nonce="n", realm="s"',
        'Digest realm="r, nonce="n"',
        "Digest realm",
        'Digest realm="r" nonce="n"',
    ],
)
def test_unusable_challenges(value: str) -> None:
    with pytest.raises(RemoteProtocolError):
        parse_challenge(value)


def test_pick_strongest() -> None:
    md5 = 'Digest realm="r", nonce="n1", qop="auth"'
    sha = 'Digest realm="r", nonce="n2", qop="auth", algorithm=SHA-256'
    sha_sess = 'Digest realm="r", nonce="n3", qop="auth", algorithm=SHA-256-sess'
    assert pick_challenge([md5, sha]).nonce == "n2"
    assert pick_challenge([sha, md5]).nonce == "n2"
    assert pick_challenge([sha_sess, sha]).nonce == "n3"  # equals: the server's order
    assert pick_challenge(['Basic realm="r"', md5, "Digest algorithm=XYZ"]).nonce == "n1"
    with pytest.raises(RemoteProtocolError, match="Basic"):
        pick_challenge(['Basic realm="r"'])
    with pytest.raises(RemoteProtocolError):
        pick_challenge([])


def test_challenge_from_response() -> None:
    www = 'Digest realm="r", nonce="n", algorithm=SHA-256, qop="auth"'
    c401 = challenge_from_response(SipResponse(401, "Unauthorized", (("WWW-Authenticate", www),)))
    assert c401.algorithm == "SHA-256" and c401.answer_header == "Authorization"
    prx = 'Digest realm="p, q", nonce="n", qop="auth"'
    c407 = challenge_from_response(
        SipResponse(407, "Proxy Authentication Required", (("Proxy-Authenticate", prx),))
    )
    assert c407.proxy and c407.realm == "p, q"
    assert c407.answer_header == "Proxy-Authorization"
    with pytest.raises(RemoteProtocolError):
        challenge_from_response(SipResponse(401, "Unauthorized"))
    with pytest.raises(LocalProtocolError):
        challenge_from_response(SipResponse(200, "OK"))


@pytest.mark.parametrize(
    "kwargs",
    [
        {"method": "PUB LISH"},
        {"uri": "sip:a@b\r\nX: y"},
        {"username": "u\n"},
        {"cnonce": 'a"b'},
        {"cnonce": ""},
        {"nc": 0},
        {"nc": 2**32},
        {"nc": "00000001"},
    ],
)
def test_misuse_is_local(kwargs: dict[str, object]) -> None:
    args: dict[str, object] = {
        "method": "PUBLISH",
        "uri": "sip:a@b",
        "username": "u",
        "password": "p",
        "cnonce": "c",
        "nc": 1,
        **kwargs,
    }
    with pytest.raises(LocalProtocolError):
        authorization(Challenge(realm="r", nonce="n"), **args)  # type: ignore[arg-type]


@given(
    username=st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\r\n\x00")),
    password=st.text(st.characters(blacklist_categories=("Cs",))).map(lambda p: "Secret#" + p),
)
def test_answer_is_a_header_value_without_the_password(username: str, password: str) -> None:
    challenge = Challenge(realm="r", nonce="n", qop=("auth",), opaque="o")
    answer = authorization(
        challenge,
        method="PUBLISH",
        uri="sip:a@b",
        username=username,
        password=password,
        cnonce="c",
        nc=1,
    )
    assert password not in answer.replace(username, "")
    # a valid header value (no injection through the username), username quoted faithfully
    assert SipResponse(200, "OK", (("Authorization", answer),)).header("Authorization") == answer
    assert answer.startswith(f"Digest username={quote_string(username)}, ")
