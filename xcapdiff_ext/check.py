"""``xcapdiff check``: is this installation ready to publish?  One line per item.

What OpenSIPS's presence_xcapdiff does by looking at which modules are loaded, done
from the outside, with the fix for every problem:

1. the settings, read exactly as the backend reads them (OpenXCAP's ``config.ini`` +
   ``xcapdiff.ini``, same validation, same permission check);
2. the spool directory exists and is writable;
3. OpenXCAP is importable here, and its version;
4. ``[Server] backend`` names us, OpenXCAP can load ``xcap.backend.xcapdiff``, and
   which storage we wrap;
5. nothing publishes twice, and operators coming from ``backend = OpenSIPS`` keep their
   storage (serverconfig.review: the same refusals and warnings as at start-up);
6. the transport: for ``mi``, the MI answers, lists ``pua_publish`` (pua_mi is
   loaded), and OpenSIPS accepts an xcap-diff publication for a probe presentity,
   which is then removed (so pua and presence_xcapdiff are loaded); for ``sip``, the
   next hop answers OPTIONS and a probe PUBLISH with ``Expires: 0`` is not answered
   489 Bad Event.

``run_checks`` returns ``Item`` values; the CLI prints them and exits 0 when none
failed.  Network probes run on the reactor given.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import sys
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from twisted.internet.defer import inlineCallbacks

from .config import Settings
from .errors import ConfigError, PublishRejected, TransportError
from .openxcap.serverconfig import (
    BACKEND_NAME,
    StartupProblem,
    openxcap_config_path,
    read_openxcap_config,
    review,
)

__all__ = ["Item", "render", "run_checks"]

PASS, FAIL, WARN, SKIP = "pass", "fail", "warn", "skip"
_MARKS = {PASS: "✔", FAIL: "✘", WARN: "!", SKIP: "–"}
PROBE_USER = "xcapdiff-check"


@dataclass(frozen=True, slots=True)
class Item:
    status: str  # pass | fail | warn | skip
    what: str
    fix: str = ""


def render(items: list[Item], *, colour: bool = False) -> str:
    colours = {PASS: "\033[32m", FAIL: "\033[31m", WARN: "\033[33m", SKIP: "\033[2m"}
    lines = []
    for item in items:
        mark = _MARKS[item.status]
        if colour:
            mark = f"{colours[item.status]}{mark}\033[0m"
        line = f"{mark} {item.what}"
        if item.fix:
            line += f"\n    fix: {item.fix}"
        lines.append(line)
    failed = sum(i.status == FAIL for i in items)
    lines.append("all checks passed" if not failed else f"{failed} check(s) failed")
    return "\n".join(lines) + "\n"


def _static_checks(config: Path | None) -> tuple[list[Item], Settings | None]:
    from .configfile import OVERRIDE_NAME, read_settings

    items: list[Item] = []
    path = config if config is not None else openxcap_config_path()
    try:
        settings = read_settings(path if (config is not None or path.is_file()) else None)
    except ConfigError as err:
        items.append(Item(FAIL, f"settings: {err}", _config_fix(err)))
        return items, None
    files = [str(path)] if path.is_file() else []
    if path.with_name(OVERRIDE_NAME).is_file():
        files.append(str(path.with_name(OVERRIDE_NAME)))
    items.append(Item(PASS, f"settings valid ({' + '.join(files) or 'defaults: no file'})"))
    items.append(_spool(settings))
    openxcap = _openxcap()
    items.append(openxcap)
    server = read_openxcap_config(path)
    if server.path is None:
        items.append(
            Item(
                FAIL,
                f"{path}: no OpenXCAP config.ini here",
                "give --config /etc/openxcap/config.ini",
            )
        )
    elif server.backend_is_us:
        items.append(
            Item(
                PASS,
                f"[Server] backend = {server.backend} in {server.path}, wrapping storage "
                f"{settings.storage}",
            )
        )
        items.append(
            _loadable()
            if openxcap.status == PASS
            else Item(SKIP, "loading xcap.backend.xcapdiff: not checked without OpenXCAP")
        )
    else:
        items.append(
            Item(
                FAIL,
                f"[Server] backend = {server.backend or '(unset)'} in {server.path}: "
                "OpenXCAP does not load the extension",
                f"set 'backend = {BACKEND_NAME}' in [Server] (and 'storage = "
                f"{server.backend or 'Database'}' in [XCAPDiff] to keep the same storage)",
            )
        )
    try:
        warnings = review(settings, server)
    except StartupProblem as err:
        items.append(Item(FAIL, f"double publishing or storage: {err}"))
    else:
        items.append(Item(PASS, "no double publishing (OpenXCAP's own publish_xcapdiff is off)"))
        items.extend(Item(WARN, w) for w in warnings)
    return items, settings


def _config_fix(err: ConfigError) -> str:
    return f"edit key {err.key!r} in section [{err.section}] (docs/configuration.md)"


def _spool(settings: Settings) -> Item:
    spool = Path(settings.spool_dir)
    if not spool.is_dir():
        return Item(
            FAIL,
            f"spool directory {spool} does not exist",
            f"install -d -m 0750 -o <OpenXCAP's user> {spool} (the Debian package does this)",
        )
    if not os.access(spool, os.W_OK | os.X_OK):
        return Item(
            FAIL,
            f"spool directory {spool} is not writable by this user (uid {os.getuid()})",
            "chown it to the user OpenXCAP runs as, or run the check as that user",
        )
    return Item(PASS, f"spool directory {spool} writable")


def _openxcap() -> Item:
    try:
        xcap = importlib.import_module("xcap")
    except ImportError as err:
        return Item(
            FAIL,
            f"OpenXCAP is not importable by {sys.executable} ({err})",
            "install openxcap (AG Projects' Debian repository) or run this check with "
            "OpenXCAP's Python",
        )
    version = getattr(xcap, "__version__", "unknown version")
    major = str(version).split(".")[0]
    if major.isdigit() and int(major) < 3:
        return Item(FAIL, f"OpenXCAP {version}: this extension needs OpenXCAP 3.x")
    return Item(PASS, f"OpenXCAP {version} importable ({Path(xcap.__file__).parent})")


def _loadable() -> Item:
    name = "xcap.backend.xcapdiff"
    try:
        spec = importlib.util.find_spec(name)
    except ImportError as err:  # xcap.backend itself failed to import
        return Item(FAIL, f"OpenXCAP cannot look for {name}: {err}")
    if spec is None:
        return Item(
            FAIL,
            f"OpenXCAP cannot find {name}",
            "install the Debian package openxcap-xcapdiff, or 'pip install' xcapdiff_ext "
            "(not -e) into OpenXCAP's Python: it installs the import hook",
        )
    how = "module file" if spec.origin and spec.origin.endswith(".py") else "import hook"
    return Item(PASS, f"OpenXCAP finds {name} ({how}: {spec.origin})")


@inlineCallbacks
def _transport_checks(reactor: Any, settings: Settings, presentity: str | None) -> Any:
    if settings.transport == "null":
        return [Item(WARN, "transport = null: changes are published nowhere (for tests)")]
    from .transports import build_transport

    try:
        transport = build_transport(settings, reactor)
    except (ConfigError, TransportError, OSError) as err:
        return [Item(FAIL, f"transport {settings.transport}: cannot be built: {err}")]
    try:
        if settings.transport == "mi":
            items = yield _mi(transport, settings, presentity)
        else:
            items = yield _sip(reactor, transport, settings, presentity)
    finally:
        yield transport.stop()
    return items


def _root_host(settings: Settings) -> str:
    from urllib.parse import urlsplit

    return urlsplit(settings.xcap_root).hostname or "localhost"


def _probe_aor(settings: Settings, presentity: str | None, host: str) -> str:
    return presentity or f"sip:{PROBE_USER}@{host}"


def _probe_body(settings: Settings, aor: str) -> bytes:
    from .xcapdiff import DocumentEntry, XcapDiff, build_xcap_diff

    user = aor.split(":", 1)[1]
    sel = f"resource-lists/users/sip:{user}/{PROBE_USER}"
    return build_xcap_diff(XcapDiff(settings.xcap_root, (DocumentEntry(sel, None, "probe"),)))


@inlineCallbacks
def _mi(transport: Any, settings: Settings, presentity: str | None) -> Any:
    from .interfaces import Publication
    from .mi.codec import mi_command_names

    where = f"MI {settings.mi_url.to_text()}"
    try:
        result = yield transport.command("which")
        names = mi_command_names(result)
    except PublishRejected as err:
        return [Item(FAIL, f"{where} answers, but not 'which': {err}")]
    except TransportError as err:
        return [
            Item(
                FAIL,
                f"{where} does not answer: {err.detail}",
                "start OpenSIPS, or make mi_url match its MI module "
                "(mi_datagram socket_name, mi_fifo fifo_name, mi_http root); see docs/opensips.md",
            )
        ]
    items = [Item(PASS, f"{where} answers ({len(names)} commands)")]
    if "pua_publish" not in names:
        items.append(
            Item(FAIL, f"{where} has no pua_publish command", 'loadmodule "pua_mi.so" (and pua)')
        )
        return items
    items.append(Item(PASS, f"{where} lists pua_publish (pua_mi loaded)"))
    aor = _probe_aor(settings, presentity, _root_host(settings))
    try:
        outcome = yield transport.publish(Publication(aor, _probe_body(settings, aor)))
    except (PublishRejected, TransportError) as err:
        status = getattr(err, "status", None)
        fix = ""
        if status == 489 or (status == 400 and "unknown event" in str(err).lower()):
            fix = 'loadmodule "presence_xcapdiff.so" (with presence and pua)'
        elif status == 500:
            fix = (
                'loadmodule "presence_xcapdiff.so" if it is missing (OpenSIPS logs "event not '
                'found in list"); else modparam("pua_mi", "presence_server", '
                '"sip:<presence host>:<port>")'
            )
        return [
            *items,
            Item(FAIL, f"OpenSIPS refused an xcap-diff publication for {aor}: {err}", fix),
        ]
    try:
        yield transport.remove(aor, outcome.etag)
    except (PublishRejected, TransportError) as err:
        items.append(Item(WARN, f"the probe publication for {aor} was not removed: {err}"))
    items.append(
        Item(PASS, f"OpenSIPS accepted an xcap-diff publication for {aor} (presence_xcapdiff)")
    )
    return items


@inlineCallbacks
def _sip(reactor: Any, transport: Any, settings: Settings, presentity: str | None) -> Any:
    from .interfaces import Publication
    from .transports import build_transport

    items: list[Item] = []
    proxy = settings.sip_proxy
    if proxy is None:
        items.append(Item(SKIP, "OPTIONS: sip_proxy is empty (next hop by RFC 3263 per owner)"))
        host = _root_host(settings)
    else:
        host = proxy.host
        try:
            response = yield transport.options()
        except TransportError as err:
            return [
                Item(
                    FAIL,
                    f"next hop {proxy.to_text()} does not answer OPTIONS: {err.detail}",
                    "start the presence server or fix sip_proxy; see docs/opensips.md",
                )
            ]
        answer = f"{response.status} {response.reason}"
        items.append(Item(PASS, f"next hop {proxy.to_text()} answers OPTIONS ({answer})"))
    aor = _probe_aor(settings, presentity, host)
    once = build_transport(replace(settings, publish_expires=0), reactor)
    try:
        yield once.publish(Publication(aor, _probe_body(settings, aor)))
    except PublishRejected as err:
        if err.status == 489:
            return [
                *items,
                Item(
                    FAIL,
                    f"PUBLISH xcap-diff for {aor} answered 489 Bad Event",
                    'the presence server lacks the event: loadmodule "presence_xcapdiff.so" and '
                    "route PUBLISH with Event xcap-diff to handle_publish()",
                ),
            ]
        return [*items, Item(FAIL, f"PUBLISH xcap-diff for {aor} refused: {err}")]
    except TransportError as err:
        return [*items, Item(FAIL, f"PUBLISH xcap-diff for {aor}: {err.detail}")]
    finally:
        yield once.stop()
    items.append(Item(PASS, f"PUBLISH xcap-diff (Expires: 0) for {aor} accepted"))
    return items


@inlineCallbacks
def run_checks(reactor: Any, config: Path | None = None, *, presentity: str | None = None) -> Any:
    """Every check, in order; a Deferred firing with the list of ``Item``."""
    items, settings = _static_checks(config)
    if settings is None:
        items.append(Item(SKIP, "transport: not checked (the settings are not valid)"))
        return items
    transport_items = yield _transport_checks(reactor, settings, presentity)
    items.extend(transport_items)
    return items


def exit_status(items: list[Item]) -> int:
    return 1 if any(i.status == FAIL for i in items) else 0
