"""End to end: OpenXCAP (stand-in) + the XCAPDiff backend + publisher + SIP transport
→ Kamailio as the xcap-diff presence server → a SIPp subscriber.

The stand-in server runs in a fresh interpreter with ``[Server] backend = XCAPDiff``,
``transport = sip`` to Kamailio (shared ``peers/kamailio``, 127.0.0.1:5062) and
``min_interval = 0``; it makes a session of XCAP requests for ``sip:carol@127.0.0.1``
(document, element, attribute PUTs, an element DELETE, an identical re-PUT, a document
PUT, a document DELETE), waiting after each change until it is published.  The NOTIFY
bodies the subscriber received, applied in order to the first document, must
reproduce every stored version; the last one must report the deletion.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.peers.conftest import free_port, require_binary
from tests.shared import shared_path
from xcapdiff_ext.diff.apply import apply_patch
from xcapdiff_ext.xcapdiff import DocumentEntry, parse_xcap_diff
from xcapdiff_ext.xmlsafe import c14n, parse_document

REPO = Path(__file__).resolve().parents[2]
STANDIN = REPO / "tests" / "openxcap_standin"
OWNER = "sip:carol@127.0.0.1"
KAMAILIO = "127.0.0.1:5062"
ROOT = "http://xcap.example.com/xcap-root"

SCRIPT = """
import _xcapdiff_ext_hook
import asyncio, json, logging, sys
logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(levelname)s %(name)s %(message)s")
DOC = "/resource-lists/users/sip:carol@127.0.0.1/index"
LIST = DOC + '~~/resource-lists/list[@name="friends"]'
INITIAL = (b'<?xml version="1.0" encoding="UTF-8"?>\\n'
           b'<resource-lists xmlns="urn:ietf:params:xml:ns:resource-lists">\\n'
           b'  <list name="friends">\\n    <entry uri="sip:bob@example.com"/>\\n  </list>\\n'
           b'</resource-lists>\\n')

async def main():
    from xcap.server import XCAPApp
    from xcap.db.manager import connection_manager
    app = XCAPApp()
    await app.startup()
    counters = app.storage.runtime.publisher.counters
    steps, versions = [], []

    async def step(name, method, path, body=b""):
        before = counters.published
        status, etag, _ = await app.request(method, path, body)
        found = connection_manager.database.document("carol", "127.0.0.1", "index")
        steps.append([name, status, etag])
        versions.append(None if found is None else [found[0], found[1].decode()])
        if name == "re-PUT":
            await asyncio.sleep(0.3)
            return
        for _ in range(500):
            if counters.published > before:
                return
            await asyncio.sleep(0.01)
        raise TimeoutError(name + ": not published")

    carol = '/entry[@uri="sip:dave@example.com"]'
    await step("create", "PUT", DOC, INITIAL)
    await step("element PUT", "PUT", LIST + carol, b'<entry uri="sip:dave@example.com"/>')
    await step("attribute PUT", "PUT", LIST + "/@name", b"buddies")
    await step("element DELETE", "DELETE", DOC + '~~/resource-lists/list[@name="buddies"]'
               '/entry[@uri="sip:bob@example.com"]')
    await step("re-PUT", "PUT", DOC, versions[-1][1].encode())
    await step("document PUT", "PUT", DOC, versions[-1][1].replace("dave", "erin").encode())
    await step("document DELETE", "DELETE", DOC)
    await asyncio.sleep(0.5)  # the last NOTIFY
    await app.shutdown()
    print("RESULT " + json.dumps({"steps": steps, "versions": versions,
                                  "counters": counters.snapshot()}))

asyncio.run(main())
"""


def run(args: list[str], what: str, timeout: float = 30) -> str:
    proc = subprocess.run(args, capture_output=True, text=True, timeout=timeout, check=False)
    if proc.returncode != 0:
        raise AssertionError(f"{what} failed (rc {proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return proc.stdout


@pytest.fixture(scope="module")
def kamailio() -> Iterator[None]:
    require_binary("kamailio", "/usr/sbin")
    require_binary("sipp")
    run(["bash", str(shared_path("peers", "kamailio", "start.sh"))], "kamailio start.sh")
    yield
    run(["bash", str(shared_path("peers", "kamailio", "stop.sh"))], "kamailio stop.sh")


@pytest.fixture
def subscriber(kamailio: None) -> Iterator[Path]:
    script = str(shared_path("peers", "sipp", "subscriber.sh"))
    out = Path(tempfile.mkdtemp(prefix="openxcap-kamailio-"))
    port = str(free_port())
    run(["bash", script, "-u", OWNER[4:], "-d", "40", "-p", port, "-o", str(out),
         "-s", KAMAILIO], "subscriber.sh")  # fmt: skip
    try:
        deadline = time.monotonic() + 5
        actions = out / "actions.log"
        while "SUBSCRIBE answered" not in (actions.read_text() if actions.exists() else ""):
            if time.monotonic() > deadline:
                raise AssertionError(f"the SIPp subscriber got no answer from Kamailio; {out}")
            time.sleep(0.05)
        yield out
    finally:
        run(["bash", script, "-k", "-p", port, "-o", str(out)], "subscriber.sh -k")


def canonical(data: bytes) -> bytes:
    return c14n(parse_document(data, where="document"))


def test_notify_bodies_reproduce_every_stored_version(subscriber: Path, tmp_path: Path) -> None:
    spool = tmp_path / "spool"
    spool.mkdir()
    (tmp_path / "config.ini").write_text(
        textwrap.dedent(
            f"""
            [Server]
            root = {ROOT}
            backend = XCAPDiff
            [Database]
            authentication_db_uri = sqlite:///{tmp_path}/auth.sqlite
            storage_db_uri = sqlite:///{tmp_path}/storage.sqlite
            [XCAPDiff]
            transport = sip
            sip_proxy = sip:{KAMAILIO}
            min_interval = 0
            status_interval = 0
            spool_dir = {spool}
            """
        )
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(STANDIN), str(REPO)]),
           "OPENXCAP_STANDIN_CONFIG_DIR": str(tmp_path)}  # fmt: skip
    proc = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(SCRIPT)],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-4000:]
    line = next(x for x in proc.stdout.splitlines() if x.startswith("RESULT "))
    out: dict[str, Any] = json.loads(line[len("RESULT ") :])
    assert [s[1] for s in out["steps"]] == [201, 201, 200, 200, 200, 200, 200]
    assert out["counters"]["published"] == 6 and out["counters"]["failed"] == 0

    time.sleep(0.3)
    extract = str(shared_path("peers", "sipp", "extract-notify-bodies.py"))
    text = run([sys.executable, extract, "--json", str(subscriber / "messages.log")], "extract")
    notifies = [json.loads(x) for x in text.splitlines() if x.strip()]
    bodies = [n["body"].encode() for n in notifies if n["body"]]
    assert len(bodies) == 6, notifies  # one per change; nothing for the identical re-PUT

    versions = [v for v, s in zip(out["versions"], out["steps"], strict=True) if s[0] != "re-PUT"]
    entries: list[DocumentEntry] = []
    for body in bodies:
        diff = parse_xcap_diff(body)
        assert diff.xcap_root == ROOT + "/"
        (entry,) = (e for e in diff.entries if isinstance(e, DocumentEntry))
        assert entry.sel == "resource-lists/users/sip:carol@127.0.0.1/index"
        entries.append(entry)

    first = versions[0]
    assert entries[0].previous_etag is None and entries[0].new_etag == first[0]
    document = first[1].encode()
    for entry, version in zip(entries[1:-1], versions[1:-1], strict=True):
        assert entry.previous_etag is not None and entry.new_etag == version[0]
        assert entry.patch is not None, entry
        document = apply_patch(document, entry.patch)
        assert canonical(document) == canonical(version[1].encode())
    assert versions[-1] is None
    assert entries[-1].new_etag is None and entries[-1].previous_etag == versions[-2][0]
