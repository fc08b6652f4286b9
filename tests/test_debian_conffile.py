"""The Debian conffile /etc/openxcap/xcapdiff.ini (debian/xcapdiff.ini) cannot rot.

It lists every ``[XCAPDiff]`` key commented out as ``# key = value`` with its default.
These tests read that file and check, against ``xcapdiff_ext.config``:
- each key of ``KEYS`` has exactly one such line, and no line names an unknown key;
- each value parses (``parse_settings``) to the key's real ``Settings`` default;
- the file as shipped parses with configparser (the same options as ``configfile``) and
  sets nothing, and with every key line uncommented it still reads as the defaults.
"""

from __future__ import annotations

import configparser
import re
from pathlib import Path

import pytest

from xcapdiff_ext.config import KEYS, Settings, parse_settings
from xcapdiff_ext.configfile import SECTION, read_settings

CONFFILE = Path(__file__).resolve().parent.parent / "debian" / "xcapdiff.ini"

# "# key = value" (one space each side of "="; the value may be empty).  Prose comment
# lines never have this shape: examples inside prose are indented further.
KEY_LINE = re.compile(r"^# (?P<key>[A-Za-z_][A-Za-z0-9_]*) =(?: (?P<value>.*))?$")


def key_lines() -> list[tuple[int, str, str]]:
    """(line number, key, value) of every commented ``# key = value`` line."""
    out = []
    for number, line in enumerate(CONFFILE.read_text(encoding="utf-8").splitlines(), 1):
        m = KEY_LINE.match(line)
        if m:
            out.append((number, m["key"], (m["value"] or "").strip()))
    return out


def commented_values() -> dict[str, str]:
    return {key: value for _, key, value in key_lines()}


def parser() -> configparser.ConfigParser:
    # As configfile._parse: strict, no interpolation, keys keep their case.
    p = configparser.ConfigParser(interpolation=None, strict=True)
    p.optionxform = str  # type: ignore[assignment,method-assign]
    return p


def test_every_key_listed_exactly_once() -> None:
    seen = [key for _, key, _ in key_lines()]
    unknown = sorted(set(seen) - set(KEYS))
    missing = [key for key in KEYS if key not in seen]
    twice = sorted({key for key in seen if seen.count(key) > 1})
    assert not unknown, f"{CONFFILE} lists keys that do not exist: {unknown}"
    assert not missing, f"{CONFFILE} lacks '# key = default' lines for: {missing}"
    assert not twice, f"{CONFFILE} lists these keys more than once: {twice}"


@pytest.mark.parametrize("key", KEYS)
def test_listed_value_is_the_real_default(key: str) -> None:
    values = commented_values()
    assert key in values, f"{key} is not listed"
    parsed = parse_settings({key: values[key]})
    assert getattr(parsed, key) == getattr(Settings(), key), (
        f"'# {key} = {values[key]}' in {CONFFILE.name} is not the default "
        f"{Settings().to_mapping()[key]!r}"
    )


def test_all_listed_values_together_are_the_defaults() -> None:
    assert parse_settings(commented_values()) == Settings()


def test_shipped_file_parses_and_sets_nothing() -> None:
    p = parser()
    p.read_string(CONFFILE.read_text(encoding="utf-8"), source=str(CONFFILE))
    assert p.sections() == [SECTION]
    assert dict(p[SECTION]) == {}


def test_uncommented_file_parses_to_the_defaults() -> None:
    text = CONFFILE.read_text(encoding="utf-8")
    uncommented = "\n".join(
        line[2:] if KEY_LINE.match(line) else line for line in text.splitlines()
    )
    p = parser()
    p.read_string(uncommented, source=f"{CONFFILE} (uncommented)")
    assert sorted(p[SECTION]) == sorted(KEYS)
    assert parse_settings(dict(p[SECTION])) == Settings()


@pytest.mark.parametrize("uncomment", [False, True])
def test_read_settings_accepts_the_file(tmp_path: Path, uncomment: bool) -> None:
    # As installed: xcapdiff.ini (mode 0640) beside a config.ini that loads us.
    text = CONFFILE.read_text(encoding="utf-8")
    if uncomment:
        text = "\n".join(line[2:] if KEY_LINE.match(line) else line for line in text.splitlines())
    config = tmp_path / "config.ini"
    config.write_text("[Server]\nbackend = XCAPDiff\n", encoding="utf-8")
    override = tmp_path / "xcapdiff.ini"
    override.write_text(text, encoding="utf-8")
    override.chmod(0o640)
    assert read_settings(config) == Settings()
