"""Reads the ``[XCAPDiff]`` settings from disk (shell side of ``config.py``).

Two files: OpenXCAP's ``config.ini`` (its ``[Server] root`` and our ``[XCAPDiff]``
section) and an optional ``xcapdiff.ini`` in the same directory whose ``[XCAPDiff]``
keys win (where packages put secrets with restrictive permissions).  Other sections
of OpenXCAP's file are not ours and are ignored.  Every problem is one ``ConfigError``
line naming the file or the key; see docs/configuration.md.
"""

from __future__ import annotations

import configparser
import logging
import os
import stat
from pathlib import Path

from .config import Settings, parse_settings
from .errors import ConfigError

__all__ = ["DEFAULT_CONFIG", "OVERRIDE_NAME", "SECTION", "ConfigFileError", "read_settings"]

DEFAULT_CONFIG = "/etc/openxcap/config.ini"
OVERRIDE_NAME = "xcapdiff.ini"
SECTION = "XCAPDiff"
SERVER_SECTION = "Server"

# configparser copies [DEFAULT] into every section; OpenXCAP's file is not ours, so
# we switch that off by naming a default section no file can contain.
_NO_DEFAULT_SECTION = "\0no default section"

log = logging.getLogger("xcapdiff.config")


class ConfigFileError(ConfigError):
    """A settings file cannot be used; the message starts with the file's path."""

    def __init__(self, path: str, detail: str, *, key: str = "--config", section: str = SECTION):
        super().__init__(key, path, detail, section)
        self.args = (f"{path}: {detail}",)
        self.path = path


def _parse(path: Path, *, explicit: bool) -> tuple[configparser.ConfigParser, int] | None:
    """The parsed file and its mode, or None when it does not exist (and may not)."""
    parser = configparser.ConfigParser(
        interpolation=None, strict=True, default_section=_NO_DEFAULT_SECTION
    )
    parser.optionxform = str  # type: ignore[assignment,method-assign]  # keep key case
    try:
        with path.open(encoding="utf-8") as handle:
            # fstat on the open file: the mode checked is the one of the bytes read.
            mode = os.fstat(handle.fileno()).st_mode
            if not stat.S_ISREG(mode):
                raise ConfigFileError(str(path), "not a regular file")
            parser.read_file(handle, source=str(path))
    except FileNotFoundError:
        if explicit:
            raise ConfigFileError(
                str(path),
                "no such file (give OpenXCAP's config.ini or an ini file with [XCAPDiff])",
            ) from None
        return None
    except (configparser.DuplicateOptionError, configparser.DuplicateSectionError) as err:
        where = f"line {err.lineno}: " if err.lineno is not None else ""
        if isinstance(err, configparser.DuplicateOptionError):
            detail = f"{where}key {err.option!r} appears twice in section [{err.section}]"
            raise ConfigFileError(str(path), detail, key=err.option, section=err.section) from err
        detail = f"{where}section [{err.section}] appears twice"
        raise ConfigFileError(str(path), detail, section=err.section) from err
    except configparser.Error as err:
        # MissingSectionHeaderError/ParsingError messages span lines: keep the first.
        first = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise ConfigFileError(str(path), f"not a valid ini file: {first}") from err
    except UnicodeDecodeError as err:
        raise ConfigFileError(str(path), f"not UTF-8 text ({err.reason})") from err
    except OSError as err:
        raise ConfigFileError(str(path), f"cannot read: {err.strerror or err}") from err
    return parser, mode


def _our_section(parser: configparser.ConfigParser, path: Path) -> dict[str, str]:
    for name in parser.sections():
        if name != SECTION and name.lower() == SECTION.lower():
            raise ConfigFileError(
                str(path), f"section [{name}] would be ignored: it is spelled [{SECTION}]"
            )
    return dict(parser[SECTION]) if parser.has_section(SECTION) else {}


def _check_secrets(path: Path, mode: int, section: dict[str, str]) -> None:
    for key in Settings.secret_keys:
        if section.get(key, "").strip() and mode & stat.S_IROTH:
            raise ConfigFileError(
                str(path),
                f"holds {key} but is readable by everyone (mode {stat.S_IMODE(mode):04o}); "
                f"run: chmod 640 {path}",
                key=key,
            )


def read_settings(config_path: str | os.PathLike[str] | None = None) -> Settings:
    """Read, merge and validate the settings; raises ``ConfigError`` (one line).

    ``config_path`` is OpenXCAP's ``config.ini`` (or any ini file with an ``[XCAPDiff]``
    section); it must exist when given.  Without it, ``DEFAULT_CONFIG`` is used if it
    exists, else the defaults (plus an ``xcapdiff.ini`` in its directory, if any).
    """
    explicit = config_path is not None
    main = Path(config_path if config_path is not None else DEFAULT_CONFIG)
    override = main.with_name(OVERRIDE_NAME)

    raw: dict[str, str] = {}
    server: dict[str, str] | None = None
    read: list[str] = []
    parsed = _parse(main, explicit=explicit)
    if parsed is not None:
        parser, mode = parsed
        ours = _our_section(parser, main)
        _check_secrets(main, mode, ours)
        raw.update(ours)
        if parser.has_section(SERVER_SECTION):
            server = dict(parser[SERVER_SECTION])
        read.append(str(main))
    else:
        log.warning("xcap-diff: %s not found; using the [XCAPDiff] defaults", main)

    same = parsed is not None and override.exists() and os.path.samefile(main, override)
    extra = None if same else _parse(override, explicit=False)
    if extra is not None:
        parser, mode = extra
        ours = _our_section(parser, override)
        _check_secrets(override, mode, ours)
        raw.update(ours)  # xcapdiff.ini wins, key by key
        read.append(str(override))

    log.debug("settings read from %s", ", ".join(read) or "nowhere (defaults)")
    return parse_settings(raw, server=server)
