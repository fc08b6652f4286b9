"""parse_settings: defaults, every refusal names its key, values parse into typed fields."""

from __future__ import annotations

import dataclasses

import pytest
from hypothesis import given
from hypothesis import strategies as st

from xcapdiff_ext.config import (
    DEFAULT_XCAP_ROOT,
    KEYS,
    MiUrl,
    Settings,
    SipProxy,
    parse_byte_size,
    parse_settings,
)
from xcapdiff_ext.errors import ConfigError

DEFAULTS = {
    "storage": "Database",
    "transport": "mi",
    "mi_url": MiUrl("udp", "127.0.0.1", 8080),
    "mi_protocol": "jsonrpc",
    "mi_timeout": 10.0,
    "mi_reply_dir": "/tmp",
    "sip_proxy": None,
    "sip_username": "",
    "sip_password": "",
    "sip_extra_headers": (),
    "sip_tls_ca_file": "",
    "sip_tls_cert_file": "",
    "sip_user_agent": "xcapdiff-ext",
    "sip_local_address": "",
    "publish_expires": 3600,
    "diff_processing": "aggregate",
    "min_interval": 5.0,
    "max_body_bytes": 16384,
    "spool_dir": "/var/lib/openxcap-xcapdiff",
    "max_pending_bytes": 64 * 1024 * 1024,
    "max_document_bytes": 10 * 1024 * 1024,
    "diff_workers": 1,
    "retry_initial": 1.0,
    "retry_max": 60.0,
    "retry_jitter": 0.1,
    "status_interval": 60.0,
    "xcap_root": "http://127.0.0.1/xcap-root/",
}


def test_defaults_cover_every_key() -> None:
    assert set(DEFAULTS) == set(KEYS)


@pytest.mark.parametrize("key", sorted(DEFAULTS))
def test_default(key: str) -> None:
    assert getattr(parse_settings({}), key) == DEFAULTS[key]
    assert getattr(Settings(), key) == DEFAULTS[key]


def test_secret_keys() -> None:
    assert Settings.secret_keys == ("sip_password",)


# (key, bad value) — every one must raise ConfigError naming exactly that key.
BAD = [
    ("storage", ""),
    ("storage", "Data base"),
    ("storage", "xcap.backend"),
    ("transport", "MI"),
    ("transport", "http"),
    ("transport", ""),
    ("mi_url", ""),
    ("mi_url", "tcp:127.0.0.1:8080"),
    ("mi_url", "udp:127.0.0.1"),
    ("mi_url", "udp:127.0.0.1:0"),
    ("mi_url", "udp:127.0.0.1:65536"),
    ("mi_url", "http://127.0.0.1:99999/mi"),
    ("mi_url", "http://user:pw@127.0.0.1:8888/mi"),
    ("mi_url", "fifo:relative/path"),
    ("mi_url", "fifo:"),
    ("mi_url", "xmlrpc:https://127.0.0.1:8080/RPC2"),
    ("mi_url", "xmlrpc:127.0.0.1:8080"),
    ("mi_protocol", "json"),
    ("sip_extra_headers", "no colon here"),
    ("sip_extra_headers", "Bad Name: x"),
    ("sip_tls_ca_file", "relative/ca.pem"),
    ("sip_tls_cert_file", "cert.pem"),
    ("sip_user_agent", ""),
    ("sip_local_address", "not-an-address"),
    ("mi_timeout", "0"),
    ("mi_timeout", "soon"),
    ("mi_reply_dir", "relative/dir"),
    ("sip_proxy", "proxy.example.com"),
    ("sip_proxy", "sip:"),
    ("sip_proxy", "sip:proxy.example.com:0"),
    ("sip_proxy", "sip:proxy.example.com:70000"),
    ("sip_proxy", "sip:proxy.example.com;transport=sctp"),
    ("sip_proxy", "sip:proxy.example.com;maddr=1.2.3.4"),
    ("sip_proxy", "sips:proxy.example.com;transport=udp"),
    ("sip_proxy", "sip:alice@proxy.example.com"),
    ("sip_username", "al\r\nice"),
    ("publish_expires", "-1"),
    ("publish_expires", "1.5"),
    ("publish_expires", "soon"),
    ("publish_expires", ""),
    ("diff_processing", "patching"),
    ("min_interval", "abc"),
    ("min_interval", "-1"),
    ("min_interval", "nan"),
    ("min_interval", "inf"),
    ("max_body_bytes", "511"),
    ("max_body_bytes", "16 kilobytes"),
    ("max_body_bytes", "-16k"),
    ("max_body_bytes", "1.5k"),
    ("max_body_bytes", "16T"),
    ("spool_dir", "var/lib/x"),
    ("spool_dir", ""),
    ("spool_dir", "/var/\0lib"),
    ("max_pending_bytes", "1023k"),
    ("max_pending_bytes", "lots"),
    ("max_document_bytes", "100"),
    ("max_document_bytes", "10 MB please"),
    ("diff_workers", "-1"),
    ("diff_workers", "17"),
    ("diff_workers", "two"),
    ("retry_initial", "0"),
    ("retry_initial", "-1"),
    ("retry_initial", "x"),
    ("retry_max", "0.5"),
    ("retry_max", "inf"),
    ("retry_jitter", "1.5"),
    ("retry_jitter", "-0.1"),
    ("retry_jitter", "nan"),
    ("status_interval", "-5"),
    ("status_interval", "often"),
    ("xcap_root", "ftp://xcap.example.com/"),
    ("xcap_root", "xcap.example.com"),
    ("xcap_root", "http://xcap.example.com:0/"),
]


@pytest.mark.parametrize(("key", "value"), BAD, ids=[f"{k}={v!r}" for k, v in BAD])
def test_bad_value_names_key(key: str, value: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_settings({key: value})
    err = info.value
    assert err.key == key
    assert err.section == "XCAPDiff"
    assert str(err).startswith(f"[XCAPDiff] {key} = ")
    assert "\n" not in str(err)


def test_every_key_has_a_bad_value_case() -> None:
    assert {k for k, _ in BAD} >= set(KEYS) - {"sip_password"}


def test_cross_key_errors_name_the_key() -> None:
    with pytest.raises(ConfigError) as info:
        parse_settings({"sip_password": "s3cret"})
    assert info.value.key == "sip_password"
    assert "s3cret" not in str(info.value)
    with pytest.raises(ConfigError) as info:
        parse_settings({"retry_initial": "10", "retry_max": "5"})
    assert info.value.key == "retry_max"


def test_mi_refuses_publish_expires_zero() -> None:
    with pytest.raises(ConfigError, match="removal") as info:
        parse_settings({"publish_expires": "0"})
    assert info.value.key == "publish_expires"
    with pytest.raises(ConfigError):
        parse_settings({"transport": "mi", "publish_expires": "0"})
    with pytest.raises(ConfigError):
        dataclasses.replace(Settings(), publish_expires=0)


@pytest.mark.parametrize("transport", ["sip", "null"])
def test_publish_expires_zero_allowed_without_mi(transport: str) -> None:
    assert parse_settings({"transport": transport, "publish_expires": "0"}).publish_expires == 0


def test_short_expires_accepted() -> None:
    assert parse_settings({"publish_expires": "60"}).publish_expires == 60


GOOD = [
    ("transport", "sip", "sip"),
    ("transport", "null", "null"),
    ("mi_protocol", "legacy", "legacy"),
    ("diff_processing", "no-patching", "no-patching"),
    ("diff_processing", "xcap-patching", "xcap-patching"),
    ("storage", "OpenSIPS", "OpenSIPS"),
    ("min_interval", "0", 0.0),
    ("min_interval", "2.5", 2.5),
    ("status_interval", "0", 0.0),
    ("retry_jitter", "0", 0.0),
    ("retry_jitter", "1", 1.0),
    ("spool_dir", "/srv/spool", "/srv/spool"),
    ("max_body_bytes", " 512 ", 512),
    ("sip_username", "alice@example.com", "alice@example.com"),
    (
        "xcap_root",
        "https://xcap.example.com:8443/xcap-root",
        "https://xcap.example.com:8443/xcap-root/",
    ),
    ("xcap_root", "http://xcap.example.com/", "http://xcap.example.com/"),
]


@pytest.mark.parametrize(("key", "text", "value"), GOOD)
def test_good_value(key: str, text: str, value: object) -> None:
    assert getattr(parse_settings({key: text}), key) == value


@pytest.mark.parametrize(
    ("text", "size"),
    [
        ("16384", 16384),
        ("0", 0),
        ("512B", 512),
        ("16k", 16 * 1024),
        ("16K", 16 * 1024),
        ("16kB", 16 * 1024),
        ("16KiB", 16 * 1024),
        ("16 KiB", 16 * 1024),
        ("1M", 1024 * 1024),
        ("64MiB", 64 * 1024 * 1024),
        ("64mib", 64 * 1024 * 1024),
        ("1G", 1024**3),
        ("2GiB", 2 * 1024**3),
    ],
)
def test_byte_size(text: str, size: int) -> None:
    assert parse_byte_size(text) == size


@pytest.mark.parametrize("text", ["", "k", "1.5M", "-1", "1T", "1 M B", "0x10", "1e3"])
def test_byte_size_refused(text: str) -> None:
    with pytest.raises(ValueError):
        parse_byte_size(text)


@pytest.mark.parametrize("key", ["max_body_bytes", "max_pending_bytes", "max_document_bytes"])
def test_every_byte_key_takes_suffixes(key: str) -> None:
    assert getattr(parse_settings({key: "2MiB"}), key) == 2 * 1024 * 1024
    assert getattr(parse_settings({key: "2048k"}), key) == 2 * 1024 * 1024


@pytest.mark.parametrize(
    ("text", "url", "http_url"),
    [
        ("udp:127.0.0.1:8080", MiUrl("udp", "127.0.0.1", 8080), None),
        ("udp:[::1]:8080", MiUrl("udp", "::1", 8080), None),
        ("udp:OpenSIPS.example.com:1", MiUrl("udp", "opensips.example.com", 1), None),
        (
            "http://127.0.0.1:8888/mi",
            MiUrl("http", "127.0.0.1", 8888, "/mi"),
            "http://127.0.0.1:8888/mi",
        ),
        ("http://localhost/mi", MiUrl("http", "localhost", 80, "/mi"), "http://localhost:80/mi"),
        ("https://mi.example.com", MiUrl("https", "mi.example.com", 443, "/"), None),
        (
            "fifo:/run/opensips/opensips_fifo",
            MiUrl("fifo", path="/run/opensips/opensips_fifo"),
            None,
        ),
        (
            "xmlrpc:http://127.0.0.1:8080/RPC2",
            MiUrl("xmlrpc", "127.0.0.1", 8080, "/RPC2"),
            "http://127.0.0.1:8080/RPC2",
        ),
    ],
)
def test_mi_url(text: str, url: MiUrl, http_url: str | None) -> None:
    parsed = parse_settings({"mi_url": text}).mi_url
    assert parsed == url
    assert MiUrl.from_text(parsed.to_text()) == parsed
    if http_url is not None:
        assert parsed.http_url == http_url
    if url.scheme in ("udp", "fifo"):
        assert parsed.http_url is None


@pytest.mark.parametrize(
    ("text", "proxy"),
    [
        ("sip:proxy.example.com", SipProxy("sip", "proxy.example.com")),
        ("sip:10.0.0.1:5070", SipProxy("sip", "10.0.0.1", 5070)),
        ("sip:[2001:db8::1]:5060", SipProxy("sip", "2001:db8::1", 5060)),
        ("sip:p.example.com;transport=TCP", SipProxy("sip", "p.example.com", None, "tcp")),
        ("sip:p.example.com:5061;transport=tls", SipProxy("sip", "p.example.com", 5061, "tls")),
        ("sip:p.example.com;lr;transport=udp", SipProxy("sip", "p.example.com", None, "udp")),
        ("sips:p.example.com", SipProxy("sips", "p.example.com")),
        ("sips:p.example.com;transport=tcp", SipProxy("sips", "p.example.com", None, "tcp")),
    ],
)
def test_sip_proxy(text: str, proxy: SipProxy) -> None:
    parsed = parse_settings({"sip_proxy": text}).sip_proxy
    assert parsed == proxy
    assert SipProxy.from_text(proxy.to_text()) == proxy


def test_empty_sip_proxy_is_none() -> None:
    assert parse_settings({"sip_proxy": ""}).sip_proxy is None


def test_password_never_shown() -> None:
    settings = parse_settings({"sip_username": "alice", "sip_password": "hunter2-zz"})
    assert settings.sip_password == "hunter2-zz"
    for text in (repr(settings), str(settings), f"{settings}", str(settings.to_mapping())):
        assert "hunter2-zz" not in text
    assert settings.to_mapping(redact=False)["sip_password"] == "hunter2-zz"


def test_unknown_key_suggests_closest() -> None:
    with pytest.raises(ConfigError, match=r"did you mean 'min_interval'") as info:
        parse_settings({"min_intervall": "5"})
    assert info.value.key == "min_intervall"
    with pytest.raises(ConfigError, match=r"did you mean 'mi_url'"):
        parse_settings({"MI_URL": "udp:127.0.0.1:8080"})
    with pytest.raises(ConfigError, match=r"unknown key$"):
        parse_settings({"zzz": "1"})


def test_unknown_key_value_not_shown() -> None:
    # A mistyped secret key must not leak its value into the log line.
    with pytest.raises(ConfigError, match=r"did you mean 'sip_password'") as info:
        parse_settings({"sip_pasword": "hunter2-zz"})
    assert "hunter2-zz" not in str(info.value)


@pytest.mark.parametrize(
    ("root", "expected"),
    [
        ("http://xcap.example.com/", "http://xcap.example.com/"),
        ("http://xcap.example.com", "http://xcap.example.com/"),
        ("https://xcap.example.com/xcap-root", "https://xcap.example.com/xcap-root/"),
        ("http://xcap.example.com/, http://alias.example.com/", "http://xcap.example.com/"),
        ("", DEFAULT_XCAP_ROOT),
    ],
)
def test_root_from_server(root: str, expected: str) -> None:
    assert parse_settings({}, server={"root": root}).xcap_root == expected


def test_own_xcap_root_overrides_server() -> None:
    settings = parse_settings(
        {"xcap_root": "http://mine.example.com/r"}, server={"root": "http://x.example.com/"}
    )
    assert settings.xcap_root == "http://mine.example.com/r/"
    empty = parse_settings({"xcap_root": ""}, server={"root": "http://x.example.com/"})
    assert empty.xcap_root == "http://x.example.com/"


def test_bad_server_root_names_server_section() -> None:
    with pytest.raises(ConfigError) as info:
        parse_settings({}, server={"root": "xcap.example.com"})
    assert (info.value.section, info.value.key) == ("Server", "root")


def test_settings_are_frozen() -> None:
    settings = Settings()
    with pytest.raises(dataclasses.FrozenInstanceError):
        settings.min_interval = 1.0  # type: ignore[misc]


@given(
    st.fixed_dictionaries(
        {},
        optional={
            "transport": st.sampled_from(["sip", "null"]),
            "min_interval": st.floats(0, 1e6),
            "publish_expires": st.integers(1, 10**6).map(str),
            "max_body_bytes": st.integers(512, 2**40).map(str),
            "retry_jitter": st.floats(0, 1),
            "sip_proxy": st.sampled_from(["", "sip:a.example.com:5070;transport=tcp"]),
        },
    )
)
def test_round_trip(raw: dict[str, object]) -> None:
    settings = parse_settings({k: str(v) for k, v in raw.items()})
    assert parse_settings(settings.to_mapping(redact=False)) == settings
