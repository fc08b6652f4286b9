"""read_settings: config.ini + xcapdiff.ini on disk, permissions, one-line errors."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from xcapdiff_ext import configfile
from xcapdiff_ext.configfile import ConfigFileError, read_settings
from xcapdiff_ext.errors import ConfigError

# What OpenXCAP's config.ini looks like: sections we do not know must not bother us.
OPENXCAP_INI = """\
[Server]
; comment lines like OpenXCAP's sample
backend = XCAPDiff
root = http://xcap.example.com/, http://alias.example.com/

[Authentication]
type = digest
cleartext_passwords = yes

[Database]
authentication_db_uri = sqlite:///var/lib/openxcap/openxcap.db

[Logging]
log_xcap_requests = %(log_dir)s/xcap.log
"""


def write(path: Path, text: str, mode: int = 0o644) -> Path:
    path.write_text(text, encoding="utf-8")
    path.chmod(mode)
    return path


def test_config_ini_only(tmp_path: Path) -> None:
    config = write(
        tmp_path / "config.ini",
        OPENXCAP_INI + "\n[XCAPDiff]\nmin_interval = 2\nmax_body_bytes = 32k\n",
    )
    settings = read_settings(config)
    assert settings.min_interval == 2.0
    assert settings.max_body_bytes == 32 * 1024
    assert settings.transport == "mi"
    assert settings.xcap_root == "http://xcap.example.com/"


def test_config_without_our_section_gives_defaults(tmp_path: Path) -> None:
    settings = read_settings(write(tmp_path / "config.ini", OPENXCAP_INI))
    assert settings.min_interval == 5.0
    assert settings.xcap_root == "http://xcap.example.com/"


def test_accepts_str_path(tmp_path: Path) -> None:
    config = write(tmp_path / "config.ini", "[XCAPDiff]\nstorage = OpenSIPS\n")
    assert read_settings(str(config)).storage == "OpenSIPS"


def test_xcapdiff_ini_overrides(tmp_path: Path) -> None:
    config = write(
        tmp_path / "config.ini",
        OPENXCAP_INI + "[XCAPDiff]\nmin_interval = 2\ntransport = mi\nstatus_interval = 7\n",
    )
    write(
        tmp_path / "xcapdiff.ini",
        "[XCAPDiff]\ntransport = sip\nsip_proxy = sip:p.example.com;transport=tcp\n"
        "min_interval = 9\n",
    )
    settings = read_settings(config)
    assert settings.transport == "sip"
    assert settings.min_interval == 9.0
    assert settings.status_interval == 7.0  # kept from config.ini
    assert settings.sip_proxy is not None and settings.sip_proxy.host == "p.example.com"


def test_xcapdiff_ini_other_sections_ignored(tmp_path: Path) -> None:
    config = write(tmp_path / "config.ini", OPENXCAP_INI)
    write(tmp_path / "xcapdiff.ini", "[Server]\nroot = http://other.example.com/\n")
    assert read_settings(config).xcap_root == "http://xcap.example.com/"


def test_own_xcap_root_beats_server_root(tmp_path: Path) -> None:
    config = write(tmp_path / "config.ini", OPENXCAP_INI)
    write(tmp_path / "xcapdiff.ini", "[XCAPDiff]\nxcap_root = https://mine.example.com/root\n")
    assert read_settings(config).xcap_root == "https://mine.example.com/root/"


def test_no_server_root_gives_default(tmp_path: Path) -> None:
    config = write(tmp_path / "config.ini", "[XCAPDiff]\n")
    assert read_settings(config).xcap_root == "http://127.0.0.1/xcap-root/"


def test_config_path_may_be_xcapdiff_ini_itself(tmp_path: Path) -> None:
    config = write(tmp_path / "xcapdiff.ini", "[XCAPDiff]\nmin_interval = 3\n")
    assert read_settings(config).min_interval == 3.0


def test_bad_value_names_key(tmp_path: Path) -> None:
    write(tmp_path / "config.ini", "[XCAPDiff]\n")
    write(tmp_path / "xcapdiff.ini", "[XCAPDiff]\nmin_interval = abc\n")
    with pytest.raises(ConfigError) as info:
        read_settings(tmp_path / "config.ini")
    assert info.value.key == "min_interval"
    assert str(info.value) == "[XCAPDiff] min_interval = 'abc': expected seconds >= 0"


def test_unknown_key_in_file(tmp_path: Path) -> None:
    config = write(tmp_path / "config.ini", "[XCAPDiff]\nmax_body_byte = 1k\n")
    with pytest.raises(ConfigError, match="did you mean 'max_body_bytes'"):
        read_settings(config)


def test_default_section_does_not_leak_into_ours(tmp_path: Path) -> None:
    config = write(tmp_path / "config.ini", "[DEFAULT]\nlog_dir = /var/log\n[XCAPDiff]\n")
    assert read_settings(config).min_interval == 5.0


def test_misspelled_section_refused(tmp_path: Path) -> None:
    config = write(tmp_path / "config.ini", "[xcapdiff]\nmin_interval = 1\n")
    with pytest.raises(ConfigFileError, match=r"\[xcapdiff\] would be ignored"):
        read_settings(config)


def test_secret_in_world_readable_file_refused(tmp_path: Path) -> None:
    write(tmp_path / "config.ini", OPENXCAP_INI)
    secrets = write(
        tmp_path / "xcapdiff.ini",
        "[XCAPDiff]\ntransport = sip\nsip_username = u\nsip_password = hunter2-zz\n",
        0o644,
    )
    with pytest.raises(ConfigError) as info:
        read_settings(tmp_path / "config.ini")
    message = str(info.value)
    assert str(secrets) in message
    assert f"chmod 640 {secrets}" in message
    assert "hunter2-zz" not in message
    assert "\n" not in message
    assert info.value.key == "sip_password"


def test_secret_in_world_readable_config_ini_refused(tmp_path: Path) -> None:
    config = write(
        tmp_path / "config.ini", "[XCAPDiff]\nsip_username = u\nsip_password = p\n", 0o604
    )
    with pytest.raises(ConfigError, match="chmod 640"):
        read_settings(config)


@pytest.mark.parametrize("mode", [0o640, 0o600, 0o400])
def test_secret_in_private_file_accepted(tmp_path: Path, mode: int) -> None:
    write(tmp_path / "config.ini", OPENXCAP_INI)
    write(
        tmp_path / "xcapdiff.ini",
        "[XCAPDiff]\ntransport = sip\nsip_username = u\nsip_password = hunter2-zz\n",
        mode,
    )
    settings = read_settings(tmp_path / "config.ini")
    assert settings.sip_password == "hunter2-zz"


def test_empty_secret_in_world_readable_file_accepted(tmp_path: Path) -> None:
    config = write(tmp_path / "config.ini", "[XCAPDiff]\nsip_password =\n", 0o644)
    assert read_settings(config).sip_password == ""


def test_missing_explicit_file(tmp_path: Path) -> None:
    missing = tmp_path / "nope.ini"
    with pytest.raises(ConfigError) as info:
        read_settings(missing)
    assert str(info.value).startswith(f"{missing}: no such file")
    assert info.value.key == "--config"


def test_missing_default_file_gives_defaults(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(configfile, "DEFAULT_CONFIG", str(tmp_path / "config.ini"))
    with caplog.at_level(logging.WARNING, logger="xcapdiff.config"):
        settings = read_settings()
    assert settings.min_interval == 5.0
    assert "not found" in caplog.text


def test_default_location_with_only_xcapdiff_ini(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(configfile, "DEFAULT_CONFIG", str(tmp_path / "config.ini"))
    write(tmp_path / "xcapdiff.ini", "[XCAPDiff]\nmin_interval = 0\n")
    assert read_settings().min_interval == 0.0


def test_duplicate_key(tmp_path: Path) -> None:
    config = write(tmp_path / "config.ini", "[XCAPDiff]\nmin_interval = 1\nmin_interval = 2\n")
    with pytest.raises(ConfigError) as info:
        read_settings(config)
    assert str(info.value).startswith(f"{config}: line 3: key 'min_interval' appears twice")
    assert info.value.key == "min_interval"


def test_duplicate_section(tmp_path: Path) -> None:
    write(tmp_path / "config.ini", "[XCAPDiff]\n")
    override = write(tmp_path / "xcapdiff.ini", "[XCAPDiff]\n[XCAPDiff]\n")
    with pytest.raises(ConfigError, match=r"section \[XCAPDiff\] appears twice") as info:
        read_settings(tmp_path / "config.ini")
    assert str(info.value).startswith(str(override))


def test_not_an_ini_file(tmp_path: Path) -> None:
    config = write(tmp_path / "config.ini", "min_interval = 1\n")
    with pytest.raises(ConfigError) as info:
        read_settings(config)
    assert str(info.value).startswith(f"{config}: not a valid ini file")
    assert "\n" not in str(info.value)


def test_not_utf8(tmp_path: Path) -> None:
    config = tmp_path / "config.ini"
    config.write_bytes(b"[XCAPDiff]\nsip_username = \xff\n")
    with pytest.raises(ConfigError, match="not UTF-8"):
        read_settings(config)


def test_directory_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"cannot read|not a regular file"):
        read_settings(tmp_path)
