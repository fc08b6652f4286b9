"""The ``[XCAPDiff]`` settings: one frozen ``Settings`` value and its parser (pure).

``parse_settings`` turns the strings of an ini section into typed values and refuses
anything it does not understand with a ``ConfigError`` that names the key (DESIGN
"Settings", STYLE §6).  Reading files, merging ``config.ini`` with ``xcapdiff.ini`` and
checking file permissions is the shell's job (``configfile.py``).  ``Settings`` checks
its own invariants in ``__post_init__``, so ``dataclasses.replace`` cannot build an
invalid one either.  Every key is documented in ``docs/configuration.md``.
"""

from __future__ import annotations

import difflib
import ipaddress
import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from typing import ClassVar, Literal, cast, get_args

from .errors import ConfigError

__all__ = [
    "DEFAULT_XCAP_ROOT",
    "KEYS",
    "DiffProcessing",
    "MiProtocol",
    "MiUrl",
    "Settings",
    "SipProxy",
    "Transport",
    "parse_byte_size",
    "parse_settings",
]

Transport = Literal["mi", "sip", "null"]
MiProtocol = Literal["jsonrpc", "legacy"]
DiffProcessing = Literal["aggregate", "xcap-patching", "no-patching"]
MiScheme = Literal["http", "https", "udp", "fifo", "xmlrpc"]
SipTransport = Literal["udp", "tcp", "tls"]

KiB = 1024
MiB = 1024 * KiB
GiB = 1024 * MiB

# Used when neither our ``xcap_root`` nor OpenXCAP's ``[Server] root`` is set.
DEFAULT_XCAP_ROOT = "http://127.0.0.1/xcap-root/"

_HIDDEN = "<hidden>"  # stands for a secret value in error messages

_HOST = r"(?:\[(?P<v6>[0-9A-Fa-f:.]+)\]|(?P<name>[A-Za-z0-9](?:[A-Za-z0-9._-]*[A-Za-z0-9])?))"
_PORT = r"(?::(?P<port>[0-9]{1,5}))?"
_HTTP_RE = re.compile(rf"(?P<scheme>https?)://{_HOST}{_PORT}(?P<path>/[^\s?#]*)?")
_UDP_RE = re.compile(rf"{_HOST}:(?P<port>[0-9]{{1,5}})")
_SIP_RE = re.compile(rf"(?P<scheme>sips?):{_HOST}{_PORT}(?P<params>(?:;[^;\s]*)*)")
_IDENT_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_INT_RE = re.compile(r"[0-9]+")
_SIZE_RE = re.compile(r"(?P<n>[0-9]+)\s*(?P<unit>[A-Za-z]*)")
_SIZE_UNITS = {
    "": 1,
    "b": 1,
    "k": KiB,
    "kb": KiB,
    "kib": KiB,
    "m": MiB,
    "mb": MiB,
    "mib": MiB,
    "g": GiB,
    "gb": GiB,
    "gib": GiB,
}


def _host_of(match: re.Match[str]) -> str:
    return match["v6"] or match["name"].lower()


def _port_of(match: re.Match[str]) -> int | None:
    if match["port"] is None:
        return None
    port = int(match["port"])
    if not 1 <= port <= 65535:
        raise ValueError(f"port {port} is outside 1..65535")
    return port


def _host_text(host: str) -> str:
    return f"[{host}]" if ":" in host else host


@dataclass(frozen=True, slots=True)
class MiUrl:
    """Where OpenSIPS' management interface listens.

    ``scheme`` says how to reach it: ``http``/``https`` (mi_http), ``xmlrpc`` (mi_xmlrpc_ng,
    plain HTTP), ``udp`` (mi_datagram) or ``fifo`` (mi_fifo; only ``path`` is set).
    ``port`` is always set except for ``fifo`` (HTTP ports default to 80/443).
    """

    scheme: MiScheme
    host: str = ""
    port: int | None = None
    path: str = ""

    def __post_init__(self) -> None:
        if self.scheme == "fifo":
            if self.host or self.port is not None or not self.path.startswith("/"):
                raise ValueError("a fifo has an absolute path and no host or port")
        else:
            if not self.host or self.port is None or not 1 <= self.port <= 65535:
                raise ValueError("host and a port in 1..65535 are required")
            if self.scheme == "udp" and self.path:
                raise ValueError("udp takes no path")
        if "\0" in self.path:
            raise ValueError("NUL in path")

    @classmethod
    def from_text(cls, text: str) -> MiUrl:
        """Parse ``http://h:p/path``, ``https://…``, ``udp:h:p``, ``fifo:/abs``,
        ``xmlrpc:http://h:p/RPC2``; raises ``ValueError`` saying what is wrong."""
        text = text.strip()
        if text.startswith("fifo:"):
            path = text[len("fifo:") :]
            if not path.startswith("/") or "\0" in path:
                raise ValueError("fifo: needs an absolute path, e.g. fifo:/run/opensips/fifo")
            return cls("fifo", path=path)
        if text.startswith("udp:"):
            m = _UDP_RE.fullmatch(text[len("udp:") :])
            if m is None:
                raise ValueError("udp: needs host:port, e.g. udp:127.0.0.1:8080")
            return cls("udp", _host_of(m), _port_of(m))
        inner, scheme = text, None
        if text.startswith("xmlrpc:"):
            inner, scheme = text[len("xmlrpc:") :], "xmlrpc"
        m = _HTTP_RE.fullmatch(inner)
        if m is None or (scheme == "xmlrpc" and m["scheme"] != "http"):
            raise ValueError(
                "expected http://host:port/path, https://host:port/path, udp:host:port, "
                "fifo:/absolute/path or xmlrpc:http://host:port/RPC2"
            )
        port = _port_of(m)
        if port is None:
            port = 443 if m["scheme"] == "https" else 80
        return cls(cast(MiScheme, scheme or m["scheme"]), _host_of(m), port, m["path"] or "/")

    def to_text(self) -> str:
        if self.scheme == "fifo":
            return f"fifo:{self.path}"
        where = f"{_host_text(self.host)}:{self.port}"
        if self.scheme == "udp":
            return f"udp:{where}"
        if self.scheme == "xmlrpc":
            return f"xmlrpc:http://{where}{self.path}"
        return f"{self.scheme}://{where}{self.path}"

    @property
    def http_url(self) -> str | None:
        """The URL to POST to for ``http``/``https``/``xmlrpc``; None otherwise."""
        if self.scheme in ("http", "https", "xmlrpc"):
            scheme = "http" if self.scheme == "xmlrpc" else self.scheme
            return f"{scheme}://{_host_text(self.host)}:{self.port}{self.path}"
        return None


@dataclass(frozen=True, slots=True)
class SipProxy:
    """The next SIP hop for PUBLISH: ``sip:host[:port][;transport=udp|tcp|tls]`` or ``sips:``.

    ``port``/``transport`` are None when not given (the SIP client applies RFC 3263 to
    the proxy's host then).  A ``;lr`` parameter is accepted and ignored.
    """

    scheme: Literal["sip", "sips"]
    host: str
    port: int | None = None
    transport: SipTransport | None = None

    def __post_init__(self) -> None:
        if not self.host:
            raise ValueError("a host is required")
        if self.port is not None and not 1 <= self.port <= 65535:
            raise ValueError(f"port {self.port} is outside 1..65535")
        if self.scheme == "sips" and self.transport == "udp":
            raise ValueError("sips: cannot use transport=udp (RFC 3261 §26.2.2)")

    @classmethod
    def from_text(cls, text: str) -> SipProxy:
        m = _SIP_RE.fullmatch(text.strip())
        if m is None:
            raise ValueError("expected sip:host[:port][;transport=udp|tcp|tls] (or sips:)")
        transport: SipTransport | None = None
        for param in filter(None, m["params"].split(";")):
            name, _, value = param.partition("=")
            if name.lower() == "transport" and value.lower() in get_args(SipTransport):
                transport = cast(SipTransport, value.lower())
            elif name.lower() != "lr" or value:
                raise ValueError(f"unsupported parameter ;{param} (only ;transport=udp|tcp|tls)")
        scheme = cast(Literal["sip", "sips"], m["scheme"])
        return cls(scheme, _host_of(m), _port_of(m), transport)

    def to_text(self) -> str:
        text = f"{self.scheme}:{_host_text(self.host)}"
        if self.port is not None:
            text += f":{self.port}"
        if self.transport is not None:
            text += f";transport={self.transport}"
        return text


_WORKERS = "expected 0..16 worker processes (0 = diff in the server's process)"


@dataclass(frozen=True, slots=True)
class Settings:
    """Every ``[XCAPDiff]`` setting, typed; the defaults are the documented ones.

    Seconds are floats, sizes are bytes.  ``sip_password`` never appears in ``repr``.
    Invalid combinations raise ``ConfigError`` naming the key, also via ``replace``.
    """

    # Keys whose values are secrets: never logged, files holding them must not be
    # world-readable (checked by configfile.read_settings).
    secret_keys: ClassVar[tuple[str, ...]] = ("sip_password",)

    storage: str = "Database"
    transport: Transport = "mi"
    mi_url: MiUrl = field(default_factory=lambda: MiUrl("udp", "127.0.0.1", 8080))
    mi_protocol: MiProtocol = "jsonrpc"
    mi_timeout: float = 10.0
    mi_reply_dir: str = "/tmp"
    sip_proxy: SipProxy | None = None
    sip_username: str = ""
    sip_password: str = field(default="", repr=False)
    sip_extra_headers: tuple[tuple[str, str], ...] = ()
    sip_tls_ca_file: str = ""
    sip_tls_cert_file: str = ""
    sip_user_agent: str = "xcapdiff-ext"
    sip_local_address: str = ""
    publish_expires: int = 3600
    diff_processing: DiffProcessing = "aggregate"
    min_interval: float = 5.0
    max_body_bytes: int = 16384
    spool_dir: str = "/var/lib/openxcap-xcapdiff"
    max_pending_bytes: int = 64 * MiB
    max_document_bytes: int = 10 * MiB
    diff_workers: int = 1
    retry_initial: float = 1.0
    retry_max: float = 60.0
    retry_jitter: float = 0.1
    status_interval: float = 60.0
    xcap_root: str = DEFAULT_XCAP_ROOT

    def __post_init__(self) -> None:
        def need(ok: bool, key: str, expected: str) -> None:
            if not ok:
                value = _HIDDEN if key in self.secret_keys else getattr(self, key)
                raise ConfigError(key, value, expected)

        need(bool(_IDENT_RE.fullmatch(self.storage)), "storage", "expected a backend name")
        need(self.transport in get_args(Transport), "transport", "expected mi, sip or null")
        need(self.mi_protocol in get_args(MiProtocol), "mi_protocol", "expected jsonrpc or legacy")
        need(
            self.diff_processing in get_args(DiffProcessing),
            "diff_processing",
            "expected aggregate, xcap-patching or no-patching",
        )
        need(
            not self.sip_password or bool(self.sip_username),
            "sip_password",
            "set, but sip_username is empty: set both or neither",
        )
        need(
            not any(ord(c) < 32 or c == "\x7f" for c in self.sip_username),
            "sip_username",
            "expected no control characters",
        )
        need(
            all(
                _TOKEN_RE.fullmatch(n) and not _BAD_VALUE_RE.search(v)
                for n, v in self.sip_extra_headers
            ),
            "sip_extra_headers",
            "expected 'Name: value' lines (token names, no control characters)",
        )
        for key in ("sip_tls_ca_file", "sip_tls_cert_file"):
            path = getattr(self, key)
            need(not path or path.startswith("/"), key, "expected an absolute path or empty")
        need(
            not self.sip_local_address or _is_ip(self.sip_local_address),
            "sip_local_address",
            "expected an IP address of this host, or empty",
        )
        need(
            bool(self.sip_user_agent) and not _BAD_VALUE_RE.search(self.sip_user_agent),
            "sip_user_agent",
            "expected text without control characters",
        )
        need(self.publish_expires >= 0, "publish_expires", "expected seconds >= 0")
        need(
            self.publish_expires != 0 or self.transport != "mi",
            "publish_expires",
            "0 is not allowed with transport = mi: pua_publish treats expires 0 as removal",
        )
        need(
            math.isfinite(self.mi_timeout) and self.mi_timeout > 0,
            "mi_timeout",
            "expected seconds > 0",
        )
        need(
            self.mi_reply_dir.startswith("/") and "\0" not in self.mi_reply_dir,
            "mi_reply_dir",
            "expected an absolute path (mi_fifo's reply_dir)",
        )
        for key in ("min_interval", "status_interval", "retry_initial", "retry_max"):
            value = getattr(self, key)
            need(math.isfinite(value) and value >= 0, key, "expected seconds >= 0")
        need(self.retry_initial > 0, "retry_initial", "expected seconds > 0")
        need(
            self.retry_max >= self.retry_initial,
            "retry_max",
            f"expected seconds >= retry_initial ({self.retry_initial:g})",
        )
        need(0 <= self.retry_jitter <= 1, "retry_jitter", "expected a fraction 0..1")
        need(self.max_body_bytes >= 512, "max_body_bytes", "expected bytes >= 512")
        need(self.max_pending_bytes >= MiB, "max_pending_bytes", "expected bytes >= 1MiB")
        need(self.max_document_bytes >= KiB, "max_document_bytes", "expected bytes >= 1KiB")
        need(
            0 <= self.diff_workers <= 16,
            "diff_workers",
            _WORKERS,
        )
        need(
            self.spool_dir.startswith("/") and "\0" not in self.spool_dir,
            "spool_dir",
            "expected an absolute path",
        )
        need(_valid_root(self.xcap_root), "xcap_root", "expected http(s)://host[:port]/path/")

    def to_mapping(self, *, redact: bool = True) -> dict[str, str]:
        """The settings as ini strings (``parse_settings`` reads them back); secrets
        are shown as ``<hidden>`` unless ``redact`` is False.  For ``xcapdiff check``."""
        out: dict[str, str] = {}
        for key in KEYS:
            value = getattr(self, key)
            if isinstance(value, MiUrl | SipProxy):
                text = value.to_text()
            elif value is None:
                text = ""
            elif key == "sip_extra_headers":
                text = "\n".join(f"{name}: {v}" for name, v in value)
            elif isinstance(value, float):
                text = repr(value).removesuffix(".0")
            else:
                text = str(value)
            out[key] = _HIDDEN if redact and key in self.secret_keys and text else text
        return out


KEYS: tuple[str, ...] = tuple(f.name for f in fields(Settings))


def _valid_root(root: str) -> bool:
    m = _HTTP_RE.fullmatch(root)
    if m is None or not root.endswith("/"):
        return False
    try:
        _port_of(m)
    except ValueError:
        return False
    return True


def _normalise_root(text: str) -> str | None:
    root = text.strip()
    if not root.endswith("/"):
        root += "/"
    return root if _valid_root(root) else None


def parse_byte_size(text: str) -> int:
    """``16384``, ``16k``, ``16KiB``, ``1M``, ``64MiB``, ``1G`` → bytes.  Every multiple
    is binary (k = 1024) whatever the spelling; case does not matter.  ``ValueError``."""
    m = _SIZE_RE.fullmatch(text.strip())
    if m is None or m["unit"].lower() not in _SIZE_UNITS:
        raise ValueError(text)
    return int(m["n"]) * _SIZE_UNITS[m["unit"].lower()]


def _seconds(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(text)
    return value


def _integer(text: str) -> int:
    if not _INT_RE.fullmatch(text.strip()):
        raise ValueError(text)
    return int(text)


def _choice(*allowed: str) -> Callable[[str], str]:
    def convert(text: str) -> str:
        if text not in allowed:
            raise ValueError(text)
        return text

    return convert


_TOKEN_RE = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
_BAD_VALUE_RE = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")


def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def _header_lines(text: str) -> tuple[tuple[str, str], ...]:
    """``Name: value`` per line (ini continuation lines), e.g. ``Thor-Scope: publish-xcap``."""
    out = []
    for line in text.splitlines():
        if not line.strip():
            continue
        name, sep, value = line.partition(":")
        if not sep or not _TOKEN_RE.fullmatch(name.strip()):
            raise ValueError(f"expected 'Name: value' lines, got {line.strip()!r}")
        out.append((name.strip(), value.strip()))
    return tuple(out)


# key -> (converter from ini text, what a bad value should have been; "" = the
# converter's own ValueError message says it)
_CONVERTERS: dict[str, tuple[Callable[[str], object], str]] = {
    "storage": (str, "expected an OpenXCAP backend name such as Database or OpenSIPS"),
    "transport": (_choice(*get_args(Transport)), "expected mi, sip or null"),
    "mi_url": (MiUrl.from_text, ""),
    "mi_protocol": (_choice(*get_args(MiProtocol)), "expected jsonrpc or legacy"),
    "mi_timeout": (_seconds, "expected seconds > 0"),
    "mi_reply_dir": (str, ""),
    "sip_proxy": (SipProxy.from_text, ""),
    "sip_username": (str, ""),
    "sip_password": (str, ""),
    "sip_extra_headers": (_header_lines, ""),
    "sip_tls_ca_file": (str, ""),
    "sip_tls_cert_file": (str, ""),
    "sip_user_agent": (str, ""),
    "sip_local_address": (str, ""),
    "publish_expires": (_integer, "expected whole seconds >= 0"),
    "diff_processing": (
        _choice(*get_args(DiffProcessing)),
        "expected aggregate, xcap-patching or no-patching",
    ),
    "min_interval": (_seconds, "expected seconds >= 0"),
    "max_body_bytes": (parse_byte_size, "expected bytes >= 512 (suffixes k, KiB, M, MiB)"),
    "spool_dir": (str, ""),
    "max_pending_bytes": (parse_byte_size, "expected bytes >= 1MiB (suffixes k, KiB, M, MiB)"),
    "max_document_bytes": (parse_byte_size, "expected bytes (suffixes k, KiB, M, MiB)"),
    "diff_workers": (
        _integer,
        "expected 0..16 worker processes (0 = diff in the server's process)",
    ),
    "retry_initial": (_seconds, "expected seconds > 0"),
    "retry_max": (_seconds, "expected seconds > 0"),
    "retry_jitter": (_seconds, "expected a fraction 0..1"),
    "status_interval": (_seconds, "expected seconds >= 0 (0 = never)"),
    "xcap_root": (_normalise_root, "expected http(s)://host[:port]/path/"),
}
assert set(_CONVERTERS) == set(KEYS)  # every field has a converter, and only fields


def _unknown_key(key: str) -> ConfigError:
    if key.lower() in KEYS:
        hint = f"unknown key; keys are lower case: did you mean {key.lower()!r}?"
    else:
        close = difflib.get_close_matches(key.lower(), KEYS, n=1, cutoff=0.6)
        hint = f"unknown key; did you mean {close[0]!r}?" if close else "unknown key"
    # The value is irrelevant here and may be a mistyped secret: never show it.
    return ConfigError(key, _HIDDEN, hint)


def parse_settings(raw: Mapping[str, str], *, server: Mapping[str, str] | None = None) -> Settings:
    """Validate the ``[XCAPDiff]`` strings in ``raw`` into ``Settings``.

    ``server`` is OpenXCAP's ``[Server]`` section: its ``root`` (a comma-separated list,
    first = primary) is the default ``xcap_root``.  Missing keys take their defaults; an
    empty ``sip_proxy``/``xcap_root`` means "not set".  Raises ``ConfigError`` naming
    the first bad or unknown key.
    """
    values: dict[str, object] = {}
    for key, raw_text in raw.items():
        if key not in _CONVERTERS:
            raise _unknown_key(key)
        text = raw_text.strip()
        if key in ("sip_proxy", "xcap_root") and not text:
            continue
        convert, expected = _CONVERTERS[key]
        try:
            value = convert(text)
        except ValueError as err:
            shown = _HIDDEN if key in Settings.secret_keys else text
            raise ConfigError(key, shown, expected or str(err)) from err
        if value is None:  # xcap_root that does not normalise
            raise ConfigError(key, text, expected)
        values[key] = value
    if "xcap_root" not in values and server is not None:
        primary = (server.get("root") or "").split(",")[0].strip()
        if primary:
            root = _normalise_root(primary)
            if root is None:
                raise ConfigError("root", primary, _CONVERTERS["xcap_root"][1], section="Server")
            values["xcap_root"] = root
    return Settings(**values)  # type: ignore[arg-type]  # types checked by the converters
