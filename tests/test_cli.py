"""The ``xcapdiff`` command: exit codes, outputs, one line of stderr on errors."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from lxml import etree

from xcapdiff_ext.cli import content_etag, guess_auid, main

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
OLD = EXAMPLES / "resource-lists-old.xml"
NEW = EXAMPLES / "resource-lists-new.xml"
PRES_RULES = EXAMPLES / "pres-rules.xml"

XD = "urn:ietf:params:xml:ns:xcap-diff"
RL_SEL = "resource-lists/users/sip:user@localhost/index"
RL_NS = "urn:ietf:params:xml:ns:resource-lists"


def c14n(data: bytes) -> bytes:
    tree = etree.fromstring(data).getroottree()
    return bytes(etree.tostring(tree, method="c14n", with_comments=True))


def run(capsysbinary: pytest.CaptureFixture[bytes], *argv: object) -> tuple[int, bytes, str]:
    status = main([str(a) for a in argv])
    captured = capsysbinary.readouterr()
    return status, captured.out, captured.err.decode()


def one_error_line(err: str) -> str:
    lines = err.splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("xcapdiff: error: "), err
    assert "Traceback" not in err
    return lines[0]


def documents(out: bytes) -> list[etree._Element]:
    root = etree.fromstring(out)
    assert root.tag == f"{{{XD}}}xcap-diff"
    return list(root.findall(f"{{{XD}}}document"))


# --- diff -------------------------------------------------------------------


def test_diff_modified(capsysbinary: pytest.CaptureFixture[bytes]) -> None:
    status, out, _ = run(
        capsysbinary, "diff", OLD, NEW, "--previous-etag", "e1", "--new-etag", "e2"
    )
    assert status == 0
    root = etree.fromstring(out)
    assert root.get("xcap-root") == "http://localhost/xcap-root/"
    (doc,) = documents(out)
    assert doc.get("sel") == RL_SEL
    assert doc.get("previous-etag") == "e1"
    assert doc.get("new-etag") == "e2"


def test_diff_default_etags_are_stable(
    capsysbinary: pytest.CaptureFixture[bytes],
) -> None:
    first = run(capsysbinary, "diff", OLD, NEW)
    second = run(capsysbinary, "diff", OLD, NEW)
    assert first[0] == 0 and first[1] == second[1]
    (doc,) = documents(first[1])
    assert doc.get("previous-etag") == content_etag(OLD.read_bytes())
    assert doc.get("new-etag") == content_etag(NEW.read_bytes())


def test_diff_created(capsysbinary: pytest.CaptureFixture[bytes]) -> None:
    status, out, _ = run(capsysbinary, "diff", "none", NEW, "--xcap-root", "https://x.test/xcap/")
    assert status == 0
    assert etree.fromstring(out).get("xcap-root") == "https://x.test/xcap/"
    (doc,) = documents(out)
    assert doc.get("sel") == RL_SEL
    assert doc.get("previous-etag") is None
    assert doc.get("new-etag") == content_etag(NEW.read_bytes())


def test_diff_deleted(capsysbinary: pytest.CaptureFixture[bytes]) -> None:
    status, out, _ = run(capsysbinary, "diff", OLD, "none", "--previous-etag", "e1")
    assert status == 0
    (doc,) = documents(out)
    assert doc.get("sel") == RL_SEL
    assert doc.get("previous-etag") == "e1"
    assert doc.get("new-etag") is None


def test_diff_guesses_pres_rules_from_common_policy_ruleset(
    capsysbinary: pytest.CaptureFixture[bytes],
) -> None:
    status, out, _ = run(capsysbinary, "diff", "none", PRES_RULES)
    assert status == 0
    (doc,) = documents(out)
    assert doc.get("sel") == "pres-rules/users/sip:user@localhost/index"


def test_diff_explicit_sel(capsysbinary: pytest.CaptureFixture[bytes]) -> None:
    sel = "resource-lists/users/sip:alice@example.com/index"
    status, out, _ = run(capsysbinary, "diff", OLD, NEW, "--sel", sel)
    assert status == 0
    assert documents(out)[0].get("sel") == sel


def test_guess_auid() -> None:
    assert guess_auid(RL_NS, "resource-lists") == "resource-lists"
    assert guess_auid("urn:ietf:params:xml:ns:common-policy", "ruleset") == "pres-rules"
    assert guess_auid("urn:ietf:params:xml:ns:rls-services", "rls-services") == "rls-services"
    assert guess_auid("urn:ietf:params:xml:ns:pidf", "presence") == "pidf-manipulation"
    assert guess_auid("urn:example:unknown", "root") is None
    assert guess_auid(None, "root") is None


def test_diff_none_none_is_usage_error(
    capsysbinary: pytest.CaptureFixture[bytes],
) -> None:
    status, out, err = run(capsysbinary, "diff", "none", "none")
    assert status == 2 and out == b""
    one_error_line(err)


def test_diff_missing_file(capsysbinary: pytest.CaptureFixture[bytes], tmp_path: Path) -> None:
    missing = tmp_path / "nope.xml"
    status, out, err = run(capsysbinary, "diff", missing, NEW)
    assert status == 2 and out == b""
    assert str(missing) in one_error_line(err)


def test_diff_malformed_xml(capsysbinary: pytest.CaptureFixture[bytes], tmp_path: Path) -> None:
    bad = tmp_path / "bad.xml"
    bad.write_bytes(b'<resource-lists xmlns="urn:ietf:params:xml:ns:resource-lists">\n<list>\n')
    status, out, err = run(capsysbinary, "diff", OLD, bad)
    assert status == 2 and out == b""
    assert "bad.xml" in one_error_line(err)


def test_diff_unsafe_xml(capsysbinary: pytest.CaptureFixture[bytes], tmp_path: Path) -> None:
    bomb = tmp_path / "bomb.xml"
    bomb.write_bytes(
        b'<?xml version="1.0"?>\n<!DOCTYPE r [<!ENTITY a "aaaaaaaaaa">'
        b'<!ENTITY b "&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;">]>\n<r>&b;</r>\n'
    )
    status, out, err = run(capsysbinary, "diff", "none", bomb, "--sel", "x/global/index")
    assert status == 2 and out == b""
    one_error_line(err)


def test_diff_unknown_auid_needs_sel(
    capsysbinary: pytest.CaptureFixture[bytes], tmp_path: Path
) -> None:
    doc = tmp_path / "doc.xml"
    doc.write_bytes(b'<root xmlns="urn:example:unknown"><a/></root>')
    status, out, err = run(capsysbinary, "diff", "none", doc)
    assert status == 2 and out == b""
    assert "--sel" in one_error_line(err)


def test_bad_usage(capsysbinary: pytest.CaptureFixture[bytes]) -> None:
    for argv in (
        [],
        ["frobnicate"],
        ["diff", str(OLD)],
        ["diff", str(OLD), str(NEW), "--bogus"],
    ):
        status, out, err = run(capsysbinary, *argv)
        assert status == 2 and out == b"", argv
        one_error_line(err)


@pytest.mark.parametrize("argv", [["--help"], ["diff", "--help"], ["apply", "--help"]])
def test_help(capsys: pytest.CaptureFixture[str], argv: list[str]) -> None:
    assert main(argv) == 0
    assert "usage: xcapdiff" in capsys.readouterr().out


# --- apply ------------------------------------------------------------------


def test_apply_roundtrip(capsysbinary: pytest.CaptureFixture[bytes], tmp_path: Path) -> None:
    status, xcap_diff, _ = run(capsysbinary, "diff", OLD, NEW)
    assert status == 0
    patch = tmp_path / "change.xml"
    patch.write_bytes(xcap_diff)
    status, out, err = run(capsysbinary, "apply", OLD, patch)
    assert (status, err) == (0, "")
    assert c14n(out) == c14n(NEW.read_bytes())
    status, out, _ = run(capsysbinary, "apply", OLD, patch, "--sel", RL_SEL)
    assert status == 0 and c14n(out) == c14n(NEW.read_bytes())


def test_apply_rfc5261_diff_container(
    capsysbinary: pytest.CaptureFixture[bytes], tmp_path: Path
) -> None:
    patch = tmp_path / "diff.xml"
    patch.write_bytes(
        f'<diff xmlns:rl="{RL_NS}">'
        '<remove sel="rl:resource-lists/rl:list[@name=\'work\']" ws="before"/>'
        "</diff>".encode()
    )
    status, out, err = run(capsysbinary, "apply", OLD, patch)
    assert (status, err) == (0, "")
    lists = etree.fromstring(out).findall(f"{{{RL_NS}}}list")
    assert [x.get("name") for x in lists] == ["friends"]


def test_apply_failure_names_rfc5261_error(
    capsysbinary: pytest.CaptureFixture[bytes], tmp_path: Path
) -> None:
    patch = tmp_path / "diff.xml"
    patch.write_bytes(
        f'<diff xmlns:rl="{RL_NS}">'
        "<remove sel=\"rl:resource-lists/rl:list[@name='nope']\"/>"
        "</diff>".encode()
    )
    status, out, err = run(capsysbinary, "apply", OLD, patch)
    assert status == 1 and out == b""
    (line,) = err.splitlines()
    assert line.startswith("xcapdiff: unlocated-node: "), err


def test_apply_missing_and_malformed(
    capsysbinary: pytest.CaptureFixture[bytes], tmp_path: Path
) -> None:
    bad = tmp_path / "bad.xml"
    bad.write_bytes(b"<diff><remove sel='x'></diff>")
    for argv in (
        ["apply", OLD, tmp_path / "nope.xml"],
        ["apply", OLD, bad],
        ["apply", bad, OLD],
    ):
        status, out, err = run(capsysbinary, *argv)
        assert status == 2 and out == b"", argv
        one_error_line(err)


# --- the installed command ----------------------------------------------------


def test_console_script_runs_the_main_job() -> None:
    script = Path(sys.executable).with_name("xcapdiff")
    if script.exists():
        command = [str(script)]
    elif shutil.which("xcapdiff"):
        command = [shutil.which("xcapdiff") or "xcapdiff"]
    else:
        command = [sys.executable, "-m", "xcapdiff_ext.cli"]
    result = subprocess.run(
        [
            *command,
            "diff",
            str(OLD),
            str(NEW),
            "--previous-etag",
            "a1",
            "--new-etag",
            "b2",
        ],
        capture_output=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr.decode()
    (doc,) = documents(result.stdout)
    assert (doc.get("sel"), doc.get("previous-etag"), doc.get("new-etag")) == (
        RL_SEL,
        "a1",
        "b2",
    )
