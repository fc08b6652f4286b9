"""The XCAPDiff backend inside the OpenXCAP stand-in (tests/openxcap_standin).

Each test runs a fresh interpreter, as OpenXCAP would: ``[Server] backend = XCAPDiff``
in the stand-in's config.ini, our backend found through the pip route's import hook
(``_xcapdiff_ext_hook``), requests made through the stand-in's ``XCAPApp.request``
(application usages, ``check_etag``, element operations as whole-document
``put_document`` calls).  Publications go to a ``RecordingTransport`` through the real
publisher and spool (the transport builder is swapped in the script); what was
published is checked here, by applying every patch in order to the first document.
"""

from __future__ import annotations

import itertools
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

from xcapdiff_ext.diff.apply import apply_patch
from xcapdiff_ext.spool import replay
from xcapdiff_ext.xcapdiff import DocumentEntry, parse_xcap_diff
from xcapdiff_ext.xmlsafe import c14n, parse_document

REPO = Path(__file__).resolve().parents[2]
STANDIN = REPO / "tests" / "openxcap_standin"
ROOT = "http://xcap.example.com/xcap-root"
ALIAS = "http://alias.example.org/xcap-root"
SEL = "resource-lists/users/sip:alice@example.com/index"
DOC = "/" + SEL
LIST = DOC + '~~/resource-lists/list[@name="friends"]'

PRELUDE = f"""
import _xcapdiff_ext_hook  # what xcapdiff_ext.pth does at start-up
import asyncio, json, logging, os, sys, threading
logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(levelname)s %(name)s %(message)s")
ROOT, ALIAS, DOC, LIST = {ROOT!r}, {ALIAS!r}, {DOC!r}, {LIST!r}
INITIAL = (
    b'<?xml version="1.0" encoding="UTF-8"?>\\n'
    b'<resource-lists xmlns="urn:ietf:params:xml:ns:resource-lists">'
    b'<list name="friends"><entry uri="sip:bob@example.com"/></list>'
    b'</resource-lists>'
)

from xcapdiff_ext.openxcap import runtime as _runtime
from xcapdiff_ext.publisher import Publisher
from xcapdiff_ext import testing

TRANSPORT = getattr(testing, os.environ.get("FAKE_TRANSPORT", "RecordingTransport"))()
ACCEPTED = []

def _fake_publisher(reactor, settings):
    publisher = Publisher.from_settings(reactor, TRANSPORT, settings)
    accept = publisher.accept
    def recorded(change):
        ACCEPTED.append([change.old_etag, change.new_etag, change.kind.value, change.sel])
        if os.environ.get("ACCEPT_RAISES"):
            raise RuntimeError("publisher exploded")
        accept(change)
    publisher.accept = recorded
    return TRANSPORT, publisher

_runtime._production_publisher = _fake_publisher

def emit(value):
    print("RESULT " + json.dumps(value))

def entry(name, where=LIST):
    return (where + '/entry[@uri="sip:' + name + '@example.com"]',
            ('<entry uri="sip:' + name + '@example.com"/>').encode())

def stored():
    from xcap.db.manager import connection_manager
    found = connection_manager.database.document("alice", "example.com", "index")
    return None if found is None else [found[0], found[1].decode()]

async def settle(count, timeout=15):
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while len(getattr(TRANSPORT, "published", ())) < count:
        if loop.time() > deadline:
            raise TimeoutError(f"{{len(TRANSPORT.published)}} of {{count}} publications")
        await asyncio.sleep(0.01)

def bodies():
    return [p.body.decode() for p in TRANSPORT.published]

async def started_app():
    from xcap.server import XCAPApp
    app = XCAPApp()
    await app.startup()
    return app
"""


def config(tmp_path: Path, xcapdiff: str = "", backend: str = "XCAPDiff", extra: str = "") -> None:
    spool = tmp_path / "spool"
    spool.mkdir(exist_ok=True)
    ours = {
        "transport": "null",
        "min_interval": "0",
        "status_interval": "0",
        "diff_workers": "0",
        "spool_dir": str(spool),
    }
    for line in filter(None, xcapdiff.splitlines()):
        key, _, value = line.partition("=")
        ours[key.strip()] = value.strip()
    (tmp_path / "config.ini").write_text(
        textwrap.dedent(
            f"""
            [Server]
            root = {ROOT}, {ALIAS}
            backend = {backend}

            [Database]
            authentication_db_uri = sqlite:///{tmp_path}/auth.sqlite
            storage_db_uri = sqlite:///{tmp_path}/storage.sqlite

            [XCAPDiff]
            """
        )
        + "".join(f"{k} = {v}\n" for k, v in ours.items())
        + textwrap.dedent(extra)
    )


def run(
    tmp_path: Path, script: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    if not (tmp_path / "config.ini").exists():
        config(tmp_path)
    environment = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(STANDIN), str(REPO)]),
        "OPENXCAP_STANDIN_CONFIG_DIR": str(tmp_path),
        **(env or {}),
    }
    return subprocess.run(
        [sys.executable, "-c", PRELUDE + textwrap.dedent(script)],
        cwd=tmp_path, env=environment, capture_output=True, text=True, timeout=90, check=False,
    )  # fmt: skip


def result(tmp_path: Path, script: str, env: dict[str, str] | None = None) -> Any:
    proc = run(tmp_path, script, env)
    assert proc.returncode == 0, proc.stderr[-4000:]
    lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
    assert len(lines) == 1, proc.stdout + proc.stderr[-4000:]
    value = json.loads(lines[0][len("RESULT ") :])
    value["stderr"] = proc.stderr
    return value


def documents(body: str) -> list[DocumentEntry]:
    diff = parse_xcap_diff(body.encode())
    assert diff.xcap_root == ROOT + "/"
    return [e for e in diff.entries if isinstance(e, DocumentEntry)]


def same(a: bytes, b: bytes) -> bool:
    return c14n(parse_document(a, where="a")) == c14n(parse_document(b, where="b"))


SESSION = """
async def main():
    app = await started_app()
    steps, versions = [], []
    async def step(name, method, path, body=b"", **kw):
        status, etag, _ = await app.request(method, path, body, **kw)
        steps.append([name, status, etag])
        if status < 300:
            await settle_after(name)
        versions.append(stored())
    async def settle_after(name):
        await asyncio.sleep(0.05)
    await step("create", "PUT", DOC, INITIAL)
    await step("add carol", "PUT", *entry("carol"))
    await step("rename", "PUT", LIST + "/@name", b"buddies")
    await step("drop bob", "DELETE", entry("bob", DOC + '~~/resource-lists/list[@name="buddies"]')[0])
    await step("re-PUT", "PUT", DOC, stored()[1].encode())
    await step("doc via alias", "PUT", DOC, stored()[1].replace("carol", "dave").encode(), xcap_root=ALIAS)
    await step("delete", "DELETE", DOC)
    await asyncio.sleep(0.3)
    threads = sorted(t.name for t in threading.enumerate())
    from xcapdiff_ext.openxcap.backend import SETTINGS
    from xcapdiff_ext.statusfile import read_status
    app.storage.runtime.status_file.write()
    running = read_status(SETTINGS.spool_dir)
    await app.shutdown()
    stopped = read_status(SETTINGS.spool_dir)
    from xcap.db.initialize import runs
    from xcap.db.manager import connection_manager
    emit({"steps": steps, "versions": versions, "bodies": bodies(), "accepted": ACCEPTED,
          "threads": threads, "migrations": len(runs), "configured": connection_manager.configure_calls,
          "app_thread": app.reactor_thread is not None,
          "status": [running["running"], running["published"], stopped["running"],
                     stopped["published"], running["target"]]})
asyncio.run(main())
"""


@pytest.fixture(scope="module")
def session(tmp_path_factory: pytest.TempPathFactory) -> Any:
    tmp = tmp_path_factory.mktemp("session")
    config(tmp, "transport = null\n")
    return result(tmp, SESSION)


def test_every_kind_of_operation_is_published(session: Any) -> None:
    statuses = {name: status for name, status, _ in session["steps"]}
    assert statuses == {
        "create": 201, "add carol": 201, "rename": 200, "drop bob": 200,
        "re-PUT": 200, "doc via alias": 200, "delete": 200,
    }  # fmt: skip
    kinds = [(kind, sel) for _, _, kind, sel in session["accepted"]]
    assert [k for k, _ in kinds] == [
        "document",
        "element",
        "attribute",
        "element",
        "document",
        "document",
    ]  # fmt: skip  (nothing for the identical re-PUT)
    assert {sel for _, sel in kinds} == {SEL}  # relative to the primary root, also via the alias

    entries = [e for body in session["bodies"] for e in documents(body)]
    assert all(e.sel == SEL for e in entries)
    etags = [etag for _, _, etag in session["steps"]]
    created, carol, renamed, dropped, _, dave, _ = etags
    assert [(e.previous_etag, e.new_etag) for e in entries] == [
        (None, created), (created, carol), (carol, renamed), (renamed, dropped),
        (dropped, dave), (dave, None),
    ]  # fmt: skip
    ops = [[type(op).__name__ for op in (e.patch or ())] for e in entries]
    assert ops[1] == ["Add"] and ops[2] == ["Replace"] and ops[3] == ["Remove"]


def test_patches_applied_in_order_reproduce_each_stored_version(session: Any) -> None:
    versions = [v for v in session["versions"]]
    entries = [e for body in session["bodies"] for e in documents(body)]
    current = versions[0][1].encode()
    changed = [v for i, v in enumerate(versions[1:5]) if i != 3]  # carol, rename, drop
    for entry, version in zip(entries[1:4], changed[:3], strict=True):
        assert entry.patch is not None
        current = apply_patch(current, entry.patch)
        assert entry.new_etag == version[0]
        assert same(current, version[1].encode())


def test_takeover_happens_once_and_only_what_is_missing(session: Any) -> None:
    assert session["migrations"] == 1  # run by us: OpenXCAP skipped them for XCAPDiff
    assert session["configured"] == 1  # the SQL engine, configured by us
    assert not session["app_thread"]  # OpenXCAP started no reactor thread for XCAPDiff...
    assert session["threads"].count("xcapdiff-reactor") == 1  # ...we started one
    assert "xcap-diff publishing on: storage Database, transport null" in session["stderr"]


def test_the_status_file_follows_the_extension(session: Any) -> None:
    # refreshed while it runs (xcapdiff status reads it), a last word at shutdown
    assert session["status"] == [True, 6, False, 6, "nowhere"]


def test_a_failed_precondition_publishes_nothing(tmp_path: Path) -> None:
    out = result(
        tmp_path,
        """
        async def main():
            app = await started_app()
            codes = []
            status, etag, _ = await app.request("PUT", DOC, INITIAL); codes.append(status)
            await settle(1)
            codes.append((await app.request("PUT", *entry("carol"), if_match="nope"))[0])
            codes.append((await app.request("PUT", DOC, INITIAL.replace(b"bob", b"bub"), if_match="nope"))[0])
            codes.append((await app.request("DELETE", DOC, if_match="nope"))[0])
            codes.append((await app.request("PUT", DOC, INITIAL + b" ", if_none_match="*"))[0])
            await asyncio.sleep(0.3)
            await app.shutdown()
            emit({"codes": codes, "accepted": len(ACCEPTED), "published": len(TRANSPORT.published)})
        asyncio.run(main())
        """,
    )
    assert out["codes"] == [201, 412, 412, 412, 412]
    assert out["accepted"] == out["published"] == 1  # the creation only


@pytest.mark.parametrize("where", ["ACCEPT_RAISES", "CHANGE_RAISES"])
def test_an_exception_of_ours_does_not_change_the_response(tmp_path: Path, where: str) -> None:
    script = """
        async def main():
            app = await started_app()
            if os.environ.get("CHANGE_RAISES"):
                from xcapdiff_ext.openxcap.storage import PublishingStorage
                def broken(self, *args):
                    raise RuntimeError("wrapper exploded")
                PublishingStorage._change = broken
            out = []
            for method, path, body in [("PUT", DOC, INITIAL), ("PUT", *entry("carol")),
                                       ("DELETE", entry("carol")[0], b""), ("DELETE", DOC, b"")]:
                status, etag, _ = await app.request(method, path, body)
                out.append([status, etag is not None, stored() is not None])
            await asyncio.sleep(0.2)
            await app.shutdown()
            emit({"out": out})
        asyncio.run(main())
        """
    out = result(tmp_path, script, env={where: "1"})
    assert out["out"] == [
        [201, True, True],
        [201, True, True],
        [200, True, True],
        [200, False, False],
    ]
    exploded = "publisher exploded" if where == "ACCEPT_RAISES" else "wrapper exploded"
    assert out["stderr"].count(exploded) >= 3  # logged with its traceback, every time


CONCURRENT = """
async def main():
    app = await started_app()
    await app.request("PUT", DOC, INITIAL)
    await settle(1)
    results = await asyncio.gather(*(app.request("PUT", *entry(f"c{n:02d}")) for n in range(20)))
    gets = []
    async def reader():  # GETs keep answering while the writes queue
        for _ in range(20):
            gets.append((await app.request("GET", DOC))[0])
    await asyncio.gather(reader(), asyncio.sleep(0))
    await asyncio.sleep(0.5)
    await app.shutdown()
    import gc
    gc.collect()
    emit({"codes": [r[0] for r in results], "doc": stored()[1], "accepted": ACCEPTED,
          "bodies": bodies(), "gets": gets, "rebased": app.storage.rebased,
          "left": [len(app.storage._locks), len(app.storage._reads)]})
asyncio.run(main())
"""


def test_twenty_concurrent_element_puts_keep_twenty_entries_and_a_chain(tmp_path: Path) -> None:
    config(tmp_path, "diff_processing = xcap-patching\n")
    out = result(tmp_path, CONCURRENT)
    assert out["codes"] == [201] * 20
    assert out["doc"].count("<entry ") == 21  # bob and the 20 new ones (OpenXCAP 3.x: 2)
    assert out["rebased"] >= 1
    assert out["left"] == [0, 0]  # no lock or read note outlives its request
    assert set(out["gets"]) == {200}
    links = [(old, new) for old, new, kind, _ in out["accepted"] if kind == "element"]
    assert len(links) == 20
    for (_, new), (old, _) in itertools.pairwise(links):
        assert old == new  # each write builds on the one before: one chain, no fork
    published = [(e.previous_etag, e.new_etag) for b in out["bodies"] for e in documents(b)]
    assert published[1:] == links  # xcap-patching: every link is published, in order


def test_a_rebase_that_cannot_apply_is_a_409_and_changes_nothing(tmp_path: Path) -> None:
    out = result(
        tmp_path,
        """
        async def main():
            app = await started_app()
            await app.request("PUT", DOC, INITIAL)
            # both read the same version; the rename wins the lock, the delete of an
            # entry in the list by its old name no longer applies
            bob = entry("bob")[0]
            rename, drop = await asyncio.gather(
                app.request("PUT", LIST + "/@name", b"buddies"),
                app.request("DELETE", bob),
            )
            await asyncio.sleep(0.3)
            await app.shutdown()
            emit({"codes": [rename[0], drop[0]], "body": drop[2].decode(), "doc": stored()[1],
                  "accepted": len(ACCEPTED), "prefetched": len(app.storage._prefetched)})
        asyncio.run(main())
        """,
    )
    assert out["codes"] == [200, 409]
    assert "cannot-delete" in out["body"]
    assert 'name="buddies"' in out["doc"] and "sip:bob@example.com" in out["doc"]
    assert out["accepted"] == 2  # the creation and the rename
    assert out["prefetched"] == 0  # the 409 left no pre-read behind


def test_shutdown_persists_pending_changes_without_hanging(tmp_path: Path) -> None:
    out = result(
        tmp_path,
        """
        async def main():
            import time
            app = await started_app()
            await app.request("PUT", DOC, INITIAL)
            await app.request("PUT", *entry("carol"))
            await asyncio.sleep(0.2)  # the transport never answers: both stay pending
            t0 = time.monotonic()
            await app.shutdown()
            emit({"shutdown": time.monotonic() - t0, "sent": len(TRANSPORT.calls)})
        asyncio.run(main())
        """,
        env={"FAKE_TRANSPORT": "ManualTransport"},
    )
    assert out["sent"] == 1  # the first publication, never answered
    assert 3.0 <= out["shutdown"] < 6.0  # the 3 s delivery grace, then the thread is joined
    state = replay(tmp_path / "spool")
    assert len(state.pending) == 2  # nothing lost: replayed at the next start


def test_a_restart_publishes_what_the_spool_kept(tmp_path: Path) -> None:
    test_shutdown_persists_pending_changes_without_hanging(tmp_path)
    out = result(
        tmp_path,
        """
        async def main():
            app = await started_app()
            await settle(1)
            await app.shutdown()
            emit({"bodies": bodies()})
        asyncio.run(main())
        """,
    )
    entries = [e for b in out["bodies"] for e in documents(b)]
    assert entries[0].previous_etag is None and entries[0].new_etag  # created, then carol
    assert "replayed 2 pending changes from the spool" in out["stderr"]


def test_a_running_reactor_is_not_started_again(tmp_path: Path) -> None:
    out = result(
        tmp_path,
        """
        from twisted.internet import reactor
        started = threading.Thread(target=reactor.run, kwargs={"installSignalHandlers": False},
                                   name="TwistedReactor", daemon=True)
        started.start()
        async def main():
            while not reactor.running:
                await asyncio.sleep(0.01)
            app = await started_app()
            status = (await app.request("PUT", DOC, INITIAL))[0]
            await settle(1)
            names = [t.name for t in threading.enumerate()]
            await app.shutdown()
            emit({"status": status, "names": names})
        asyncio.run(main())
        """,
    )
    assert out["status"] == 201
    assert out["names"].count("TwistedReactor") == 1 and "xcapdiff-reactor" not in out["names"]


def test_storage_opensips_takes_over_its_database_too(tmp_path: Path) -> None:
    config(tmp_path, "storage = OpenSIPS\n")
    out = result(tmp_path, SESSION)
    assert out["migrations"] == 1 and out["configured"] == 1
    assert len(out["bodies"]) == 6


# ------------------------------------------------------------------ refusals
def refused(tmp_path: Path) -> str:
    proc = run(tmp_path, "from xcap.server import XCAPApp\nXCAPApp()\nemit('started')\n")
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "RESULT" not in proc.stdout
    return proc.stderr


def test_storage_opensips_with_publish_xcapdiff_is_refused(tmp_path: Path) -> None:
    config(tmp_path, "storage = OpenSIPS\n", extra="\n[OpenSIPS]\npublish_xcapdiff = yes\n")
    err = refused(tmp_path)
    assert "publish_xcapdiff" in err and "twice" in err
    assert "Cannot load 'xcapdiff' backend module" in err


def test_a_bad_value_stops_the_server_with_one_line_naming_the_key(tmp_path: Path) -> None:
    config(tmp_path, "min_interval = soon\n")
    err = refused(tmp_path)
    lines = [line for line in err.splitlines() if "min_interval" in line]
    assert len(lines) == 1 and "expected seconds" in lines[0]


def test_an_unwritable_spool_stops_the_server_at_start(tmp_path: Path) -> None:
    config(tmp_path, f"spool_dir = {tmp_path}/no/such/dir\n")
    err = refused(tmp_path)
    assert "xcap-diff cannot start" in err and "spool_dir" in err


def test_coming_from_backend_opensips_is_warned(tmp_path: Path) -> None:
    config(tmp_path, extra="\n[OpenSIPS]\noutbound_sip_proxy = 127.0.0.1\n")
    out = result(tmp_path, "import xcap.appusage\nemit({'loaded': True})\n")
    assert "has an [OpenSIPS] section but [XCAPDiff] storage = Database" in out["stderr"]
