"""Self-tests of the OpenXCAP stand-in (tests/openxcap_standin) against
shared/openxcap/CONTRACT.md, with ``[Server] backend = Database`` unless a test says.

Every test runs the stand-in in a fresh interpreter: ``PYTHONPATH`` = the stand-in
directory, ``OPENXCAP_STANDIN_CONFIG_DIR`` = a temporary directory holding the
``config.ini`` (OpenXCAP reads its configuration when its modules are imported).
The script prints one ``RESULT <json>`` line, which the test checks.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

STANDIN = Path(__file__).resolve().parents[1] / "openxcap_standin"
ROOT = "http://xcap.example.com/xcap-root"
ALIAS = "http://alias.example.org/xcap-root"
DOC = "/resource-lists/users/sip:alice@example.com/index"
LIST = DOC + '~~/resource-lists/list[@name="friends"]'

PRELUDE = f"""
import asyncio, json, sys, threading
ROOT = {ROOT!r}
ALIAS = {ALIAS!r}
DOC = {DOC!r}
LIST = {LIST!r}
INITIAL = (
    b'<?xml version="1.0" encoding="UTF-8"?>\\n'
    b'<resource-lists xmlns="urn:ietf:params:xml:ns:resource-lists">\\n'
    b'  <list name="friends">\\n'
    b'    <entry uri="sip:bob@example.com"/>\\n'
    b'  </list>\\n'
    b'</resource-lists>\\n'
)

def emit(value):
    print("RESULT " + json.dumps(value))

def entry(name):
    return (
        LIST + '/entry[@uri="sip:' + name + '@example.com"]',
        ('<entry uri="sip:' + name + '@example.com"/>').encode(),
    )

def stored(manager=None):
    from xcap.db.manager import connection_manager
    docs = connection_manager.database.documents()
    return {{"|".join(map(str, k)): [etag, doc.decode()] for k, (etag, doc) in docs.items()}}
"""


def config(tmp_path: Path, backend: str | None = "Database", extra: str = "") -> None:
    lines = ["[Server]", f"root = {ROOT}, {ALIAS}"]
    if backend is not None:
        lines.append(f"backend = {backend}")
    lines += [
        "",
        "[Database]",
        f"authentication_db_uri = sqlite:///{tmp_path}/auth.sqlite",
        f"storage_db_uri = sqlite:///{tmp_path}/storage.sqlite",
        "",
        extra,
    ]
    (tmp_path / "config.ini").write_text("\n".join(lines) + "\n")


def run(tmp_path: Path, script: str, **options: Any) -> subprocess.CompletedProcess[str]:
    if not (tmp_path / "config.ini").exists() or options:
        config(tmp_path, **options)
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(STANDIN), os.environ.get("PYTHONPATH")])),
        "OPENXCAP_STANDIN_CONFIG_DIR": str(tmp_path),
    }
    return subprocess.run(
        [sys.executable, "-c", PRELUDE + textwrap.dedent(script)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def result(tmp_path: Path, script: str, **options: Any) -> Any:
    proc = run(tmp_path, script, **options)
    assert proc.returncode == 0, proc.stderr
    lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
    assert len(lines) == 1, proc.stdout + proc.stderr
    return json.loads(lines[0][len("RESULT ") :])


# ------------------------------------------------------------ the storage contract
def test_database_result_table(tmp_path: Path) -> None:
    out = result(
        tmp_path,
        """
        async def main():
            from xcap.appusage import storage, namespaces
            from xcap.uri import XCAPUri
            checks = []
            def check(etag, exists=True):
                checks.append([etag, exists])
            def uri():
                return XCAPUri(ROOT, DOC, namespaces)
            def row(r):
                return [r.code, r.etag, r.old_etag, r.data is not None, r.succeed]
            out = {}
            out["create"] = row(await storage.put_document(uri(), INITIAL, check)); out["create_checks"] = checks[:]; checks.clear()
            first = out["create"][1]
            out["get"] = row(await storage.get_document(uri(), check)); out["get_checks"] = checks[:]; checks.clear()
            out["noop"] = row(await storage.put_document(uri(), INITIAL, check)); out["noop_checks"] = checks[:]; checks.clear()
            out["replace"] = row(await storage.put_document(uri(), INITIAL.replace(b"bob", b"bub"), check)); out["replace_checks"] = checks[:]; checks.clear()
            second = out["replace"][1]
            out["delete"] = row(await storage.delete_document(uri(), check)); out["delete_checks"] = checks[:]; checks.clear()
            out["get_missing"] = row(await storage.get_document(uri(), check))
            out["delete_missing"] = row(await storage.delete_document(uri(), check))
            out["checks_for_missing"] = checks[:]
            rows = await storage.fetch_document(uri())
            out["fetch_missing"] = rows
            await storage.put_document(uri(), INITIAL, check)
            rows = await storage.fetch_document(uri())
            out["fetch_shape"] = [len(rows), len(rows[0]), type(rows[0][0]).__name__]
            out["first"], out["second"] = first, second
            storage.stop()
            from xcap.db.manager import connection_manager
            out["shutdown_calls"] = connection_manager.shutdown_calls
            emit(out)
        asyncio.run(main())
        """,
    )
    first, second = out["first"], out["second"]
    assert out["create"] == [201, first, None, False, True]
    assert out["create_checks"] == [[None, False]]
    assert out["get"] == [200, first, None, True, True] and out["get_checks"] == [[first, True]]
    # identical bytes: 200, the current etag, old_etag None, and no precondition check
    assert out["noop"] == [200, first, None, True, True] and out["noop_checks"] == []
    assert out["replace"][:3] == [200, second, first] and second != first
    assert out["replace_checks"] == [[first, True]]
    assert out["delete"] == [200, None, second, False, True]
    assert out["delete_checks"] == [[second, True]]
    assert out["get_missing"][0] == out["delete_missing"][0] == 404
    assert out["checks_for_missing"] == [] and out["fetch_missing"] == []
    assert out["fetch_shape"] == [1, 1, "XCAP"]
    assert out["shutdown_calls"] == 1


def test_put_mutates_the_row_fetch_document_returned(tmp_path: Path) -> None:
    """CONTRACT §3: copy the values, the row object changes under a put."""
    out = result(
        tmp_path,
        """
        async def main():
            from xcap.appusage import storage, namespaces
            from xcap.uri import XCAPUri
            uri = XCAPUri(ROOT, DOC, namespaces)
            await storage.put_document(uri, INITIAL, lambda *a: None)
            rows = await storage.fetch_document(uri)
            row = rows[0][0]
            before = row.etag
            original = storage.fetch_document
            async def served(u):
                return rows
            storage.fetch_document = served  # as a wrapper serving its own read
            res = await storage.put_document(uri, INITIAL.replace(b"bob", b"bub"), lambda *a: None)
            emit([before, row.etag, res.etag, res.old_etag, b"bub" in row.doc])
        asyncio.run(main())
        """,
    )
    before, row_etag, new, old, mutated = out
    assert old == before and row_etag == new != before and mutated


def test_element_and_attribute_operations_arrive_as_put_document(tmp_path: Path) -> None:
    out = result(
        tmp_path,
        """
        async def main():
            from xcap.server import XCAPApp
            app = XCAPApp()
            await app.startup()
            storage = app.storage
            calls = []
            for name in ("get_document", "put_document", "delete_document"):
                original = getattr(storage, name)
                def wrap(original=original, name=name):
                    async def recorded(uri, *args):
                        calls.append([name, str(uri.node_selector) if uri.node_selector else None, id(uri)])
                        return await original(uri, *args)
                    return recorded
                setattr(storage, name, wrap())
            out = {}
            out["doc"] = (await app.request("PUT", DOC, INITIAL))[0]
            calls.clear()
            sel, body = entry("carol")
            out["element_put_new"] = (await app.request("PUT", sel, body))[0]
            out["element_put_same"] = (await app.request("PUT", sel, body.replace(b"/>", b"></entry>")))[0]
            out["attribute_put"] = (await app.request("PUT", LIST + "/@name", b"pals"))[0]
            pals = LIST.replace("friends", "pals")
            out["element_delete"] = (await app.request("DELETE", pals + "/entry[2]"))[0]
            out["attribute_delete"] = (await app.request("DELETE", pals + '/entry[@uri="sip:bob@example.com"]/@uri'))[0]
            out["calls"] = calls[:]
            out["final"] = (await app.request("GET", DOC))[2].decode()
            emit(out)
        asyncio.run(main())
        """,
    )
    assert out["doc"] == 201
    assert out["element_put_new"] == 201  # inserted: 201 although the storage replaced
    assert out["element_put_same"] == 200
    assert out["attribute_put"] == out["element_delete"] == out["attribute_delete"] == 200
    calls = out["calls"]
    assert [c[0] for c in calls] == ["get_document", "put_document"] * 5
    for get, put in zip(calls[::2], calls[1::2], strict=True):
        assert get[2] == put[2]  # the same uri object
        assert put[1] is not None and put[1].startswith("/resource-lists/list")
    assert not any(c[0] == "delete_document" for c in calls)
    assert calls[-1][1].endswith("/@uri") and calls[5][1].endswith("/@name")
    final = out["final"]
    assert '<list name="pals">' in final and "carol" not in final
    assert "<entry/>" in final  # the attribute DELETE removed uri="..."


def test_element_put_splices_bytes_and_attribute_put_reserialises(tmp_path: Path) -> None:
    out = result(
        tmp_path,
        """
        async def main():
            from xcap.server import XCAPApp
            app = XCAPApp()
            await app.request("PUT", DOC, INITIAL)
            sel, body = entry("carol")
            await app.request("PUT", sel, body)
            after_element = (await app.request("GET", DOC))[2].decode()
            await app.request("PUT", LIST + "/@name", b"pals")
            after_attribute = (await app.request("GET", DOC))[2].decode()
            got = await app.request("GET", LIST.replace("friends", "pals") + "/entry[2]")
            emit([after_element, after_attribute, got[0], got[2].decode()])
        asyncio.run(main())
        """,
    )
    after_element, after_attribute, code, element = out
    assert after_element.startswith('<?xml version="1.0" encoding="UTF-8"?>\n')
    assert (
        '<entry uri="sip:bob@example.com"/><entry uri="sip:carol@example.com"/>\n' in after_element
    )
    assert after_attribute.startswith("<?xml version='1.0' encoding='UTF-8'?>\n")
    assert (code, element) == (200, '<entry uri="sip:carol@example.com"/>')


def test_preconditions_fail_with_412_and_leave_the_storage_untouched(tmp_path: Path) -> None:
    out = result(
        tmp_path,
        """
        async def main():
            from xcap.server import XCAPApp
            app = XCAPApp()
            code, etag, _ = await app.request("PUT", DOC, INITIAL)
            before = stored()
            out = {"etag": etag}
            changed = INITIAL.replace(b"bob", b"bub")
            sel, body = entry("carol")
            out["doc_if_match"] = (await app.request("PUT", DOC, changed, if_match='"wrong"'))[0]
            out["element_if_match"] = (await app.request("PUT", sel, body, if_match='"wrong"'))[0]
            out["attribute_if_match"] = (await app.request("PUT", LIST + "/@name", b"x", if_match='"wrong"'))[0]
            out["delete_if_match"] = (await app.request("DELETE", DOC, if_match='"wrong"'))[0]
            out["if_none_match_star"] = (await app.request("PUT", DOC, changed, if_none_match="*"))[0]
            out["get_if_none_match"] = (await app.request("GET", DOC, if_none_match='"' + etag + '"'))[0]
            out["unchanged"] = stored() == before
            out["if_match_ok"] = (await app.request("PUT", sel, body, if_match='"' + etag + '"'))[0]
            out["changed"] = stored() != before
            emit(out)
        asyncio.run(main())
        """,
    )
    for key in (
        "doc_if_match",
        "element_if_match",
        "attribute_if_match",
        "delete_if_match",
        "if_none_match_star",
    ):
        assert out[key] == 412, key
    assert out["get_if_none_match"] == 304
    assert out["unchanged"]
    assert out["if_match_ok"] == 201 and out["changed"]


def test_concurrent_element_puts_lose_updates(tmp_path: Path) -> None:
    """CONTRACT §4: no locking in the Database backend; 20 concurrent element PUTs of
    distinct entries all succeed, most of them are lost, and the etag chain forks."""
    out = result(
        tmp_path,
        """
        async def main():
            from xcap.server import XCAPApp
            from lxml import etree
            app = XCAPApp()
            await app.startup()
            await app.request("PUT", DOC, INITIAL.replace(b'    <entry uri="sip:bob@example.com"/>\\n', b""))
            storage = app.storage
            results = []
            original = storage.put_document
            async def recorded(uri, document, check_etag):
                res = await original(uri, document, check_etag)
                results.append([res.old_etag, res.etag])
                return res
            storage.put_document = recorded
            replies = await asyncio.gather(*(app.request("PUT", *entry("u%d" % i)) for i in range(20)))
            doc = (await app.request("GET", DOC))[2]
            entries = etree.fromstring(doc).findall(".//{urn:ietf:params:xml:ns:resource-lists}entry")
            emit({"codes": [r[0] for r in replies], "entries": len(entries), "pairs": results})
        asyncio.run(main())
        """,
    )
    assert out["codes"] == [201] * 20
    assert out["entries"] < 20
    previous = [old for old, _new in out["pairs"]]
    assert len(set(previous)) < len(previous)  # several PUTs replaced the same version


# ------------------------------------------------------------ loading and start-up
def test_backend_name_is_lowercased_to_the_module(tmp_path: Path) -> None:
    out = result(
        tmp_path,
        """
        import xcap.configuration as configuration
        import xcap.appusage as appusage
        from xcap.db.manager import connection_manager
        emit({
            "raw": configuration.ServerConfig.backend,
            "module": appusage.ServerConfig.backend.__name__,
            "storage": type(appusage.storage).__name__,
            "root": [configuration.ServerConfig.root, list(configuration.ServerConfig.root.aliases)],
            "port": configuration.ServerConfig.port,
            "configured": connection_manager.configure_calls,
        })
        """,
    )
    assert out["raw"] == "Database"
    assert out["module"] == "xcap.backend.database"
    assert out["storage"] == "DatabaseStorage"
    assert out["root"] == [ROOT, [ALIAS]]
    assert out["port"] == 80
    assert out["configured"] == 1


def test_other_spellings_load_the_module_but_not_the_database(tmp_path: Path) -> None:
    """The raw name is compared case-sensitively (CONTRACT §1): ``DATABASE`` loads
    xcap.backend.database, yet gets no engine and no migrations."""
    out = result(
        tmp_path,
        """
        async def main():
            from xcap.server import XCAPApp
            from xcap.db.manager import connection_manager
            from xcap.db.initialize import runs
            app = XCAPApp()
            await app.startup()
            put = await app.request("PUT", DOC, INITIAL)
            emit({
                "module": app.appusage.ServerConfig.backend.__name__,
                "configured": connection_manager.configure_calls,
                "session": connection_manager.AsyncSessionLocal is None,
                "runs": runs,
                "put": put[0],
            })
        asyncio.run(main())
        """,
        backend="DATABASE",
    )
    assert out["module"] == "xcap.backend.database"
    assert out["configured"] == 0 and out["session"] and out["runs"] == []
    assert out["put"] == 404  # NoDatabase is a ResourceNotFound, as in OpenXCAP


@pytest.mark.parametrize(
    ("backend", "expected"),
    [
        (
            "NoSuchThing",
            "Cannot load 'nosuchthing' backend module: No module named 'xcap.backend.nosuchthing'",
        ),
        (None, "OpenXCAP needs a backend to be specified in order to run"),
    ],
)
def test_unloadable_backend_exits_1(tmp_path: Path, backend: str | None, expected: str) -> None:
    proc = run(tmp_path, "import xcap.appusage\nemit('not reached')", backend=backend)
    assert proc.returncode == 1
    assert expected in proc.stderr
    assert "RESULT" not in proc.stdout


def test_database_backend_without_uris_exits_1(tmp_path: Path) -> None:
    (tmp_path / "config.ini").write_text(f"[Server]\nroot = {ROOT}\nbackend = Database\n")
    proc = run(tmp_path, "import xcap.appusage\nemit('not reached')")
    assert proc.returncode == 1
    assert "Authentication DB URI and Storage DB URI must be provided" in proc.stderr


@pytest.mark.parametrize(
    ("backend", "runs", "configured"),
    [("Database", 1, 1), ("OpenSIPS", 1, 1), ("database", 0, 0), ("DeferredDB", 0, 0)],
)
def test_init_db_runs_only_for_database_and_opensips(
    tmp_path: Path, backend: str, runs: int, configured: int
) -> None:
    out = result(
        tmp_path,
        """
        async def main():
            from xcap.server import XCAPApp
            from xcap.db.initialize import runs
            from xcap.db.manager import connection_manager
            app = XCAPApp()
            await app.startup()
            await app.shutdown()
            emit([len(runs), connection_manager.configure_calls])
        asyncio.run(main())
        """,
        backend=backend,
    )
    assert out == [runs, configured]


def test_reactor_thread_and_shutdown_order(tmp_path: Path) -> None:
    """OpenSIPS: a daemon thread TwistedReactor runs the reactor; shutdown asks it to
    stop BEFORE storage.stop() is called (CONTRACT §5)."""
    out = result(
        tmp_path,
        """
        async def main():
            from xcap.server import XCAPApp
            from twisted.internet import reactor
            app = XCAPApp()
            running_at_init = reactor.running
            await app.startup()
            for _ in range(200):
                if reactor.running:
                    break
                await asyncio.sleep(0.01)
            events = []
            original_call = reactor.callFromThread
            def call_from_thread(f, *a, **kw):
                events.append("callFromThread(" + getattr(f, "__name__", "?") + ")")
                return original_call(f, *a, **kw)
            reactor.callFromThread = call_from_thread
            original_stop = app.storage.stop
            def stop():
                events.append("storage.stop")
                return original_stop()
            app.storage.stop = stop
            thread = app.reactor_thread
            out = {
                "init": running_at_init,
                "thread": [thread.name, thread.daemon, reactor.running],
                "threads": sorted(t.name for t in threading.enumerate()),
            }
            await app.shutdown()
            thread.join(5)
            out["events"] = events
            out["stopped"] = [thread.is_alive(), reactor.running]
            emit(out)
        asyncio.run(main())
        """,
        backend="OpenSIPS",
    )
    assert out["init"] is False
    assert out["thread"] == ["TwistedReactor", True, True]
    assert out["events"] == ["callFromThread(stop)", "storage.stop"]
    assert out["stopped"] == [False, False]


@pytest.mark.parametrize("backend", ["Database", "opensips"])
def test_no_reactor_thread_for_other_backends(tmp_path: Path, backend: str) -> None:
    out = result(
        tmp_path,
        """
        async def main():
            from xcap.server import XCAPApp
            from twisted.internet import reactor
            app = XCAPApp()
            await app.startup()
            await asyncio.sleep(0.05)
            names = [t.name for t in threading.enumerate()]
            events = []
            app.storage.stop = lambda: events.append("storage.stop")
            await app.shutdown()
            emit([app.reactor_thread is None, "TwistedReactor" in names, reactor.running, events])
        asyncio.run(main())
        """,
        backend=backend,
    )
    assert out == [True, False, False, ["storage.stop"]]


def test_backend_modules_do_not_import_the_reactor(tmp_path: Path) -> None:
    out = result(
        tmp_path,
        """
        import xcap.backend.database, xcap.appusage, xcap.backend.opensips, xcap.backend.deferreddb
        before = "twisted.internet.reactor" in sys.modules
        import xcap.server
        emit([before, "twisted.internet.reactor" in sys.modules])
        """,
    )
    assert out == [False, True]


def test_opensips_publish_xcapdiff_publishes_in_the_background(tmp_path: Path) -> None:
    out = result(
        tmp_path,
        """
        async def main():
            from xcap.server import XCAPApp
            from xcap.backend.opensips import published
            app = XCAPApp()
            await app.startup()
            out = {"storage": type(app.storage).__name__}
            create = await app.request("PUT", DOC, INITIAL)
            noop = await app.request("PUT", DOC, INITIAL)
            sel, body = entry("carol")
            element = await app.request("PUT", sel, body)
            deleted = await app.request("DELETE", DOC)
            out["etags"] = [create[1], noop[1], element[1]]
            out["published"] = published
            await app.shutdown()
            emit(out)
        asyncio.run(main())
        """,
        backend="OpenSIPS",
        extra="[OpenSIPS]\npublish_xcapdiff = yes\n",
    )
    first, noop, second = out["etags"]
    assert out["storage"] == "NotifyingStorage"
    assert noop == first
    sel = '/resource-lists/list[@name="friends"]/entry[@uri="sip:carol@example.com"]'
    assert out["published"] == [
        [ROOT + DOC, None, first],
        [ROOT + DOC, None, first],  # the no-op re-PUT, reported like a creation
        [ROOT + DOC + "~~" + sel, first, second],
        [ROOT + DOC, second, None],
    ]


# ---------------------------------------------------------------------- the uri
def test_xcap_uri_parts(tmp_path: Path) -> None:
    out = result(
        tmp_path,
        """
        from xcap.appusage import namespaces, storage
        from xcap.uri import XCAPUri
        from xcap.xpath import AttributeSelector, NamespaceSelector
        rs = "/resource-lists/users/sip:alice@example.com/index~~/resource-lists/list%5B@name=%22friends%22%5D/entry%5B@uri=%22sip:carol@example.com%22%5D"
        u = XCAPUri(ALIAS, rs, namespaces)
        a = XCAPUri(ROOT, DOC + "~~/resource-lists/list/@name", namespaces)
        n = XCAPUri(ROOT, DOC + "~~/resource-lists/namespace::*", namespaces)
        g = XCAPUri(ROOT, "/rls-services/global/index", namespaces)
        p = XCAPUri(ROOT, "/pres-rules/users/sip:alice@example.com/presrules", namespaces)
        storage._normalize_document_path(p)
        emit({
            "root": u.xcap_root,
            "rs": u.resource_selector,
            "doc": [str(u.doc_selector), u.doc_selector.context, u.doc_selector.user_id, u.doc_selector.document_path],
            "app": u.application_id,
            "node": [str(u.node_selector), str(u.node_selector.element_selector), u.node_selector.terminal_selector],
            "user": [u.user.username, u.user.domain, u.user.uri],
            "str": str(u),
            "attr": [type(a.node_selector.terminal_selector).__name__, a.node_selector.terminal_selector.attribute],
            "ns": isinstance(n.node_selector.terminal_selector, NamespaceSelector),
            "global": [g.doc_selector.context, g.doc_selector.user_id, g.user.username, g.node_selector],
            "pres": [p.doc_selector.document_path, str(p)],
        })
        """,
    )
    node = '/resource-lists/list[@name="friends"]/entry[@uri="sip:carol@example.com"]'
    assert out["root"] == ALIAS
    assert out["rs"] == DOC + "~~" + node
    assert out["doc"] == [DOC, "users", "sip:alice@example.com", "index"]
    assert out["app"] == "resource-lists"
    assert out["node"] == [node, node, None]
    assert out["user"] == ["alice", "example.com", "sip:alice@example.com"]
    assert out["str"] == ALIAS + DOC + "~~" + node
    assert out["attr"] == ["AttributeSelector", "name"]
    assert out["ns"] is True
    assert out["global"] == ["global", None, None, None]
    # the backend mutates the uri's document path, not its text
    assert out["pres"] == ["index.xml", ROOT + "/pres-rules/users/sip:alice@example.com/presrules"]


def test_config_lookup_and_assignable_settings(tmp_path: Path) -> None:
    out = result(
        tmp_path,
        """
        import os
        from application.process import process
        found = process.configuration.file("config.ini")
        missing = process.configuration.file("nothing.ini")
        from xcap.configuration import ServerConfig, OpensipsConfig
        ServerConfig.backend = "OpenSIPS"
        ServerConfig.port = "8080"
        emit([found, missing, process.configuration.system_directory, ServerConfig.backend,
              ServerConfig.port, OpensipsConfig.publish_xcapdiff])
        """,
        extra="[OpenSIPS]\npublish_xcapdiff = On\n",
    )
    assert out == [
        str((tmp_path / "config.ini").resolve()),
        None,
        "/etc/openxcap",
        "OpenSIPS",
        8080,
        True,
    ]


# ------------------------------------------------------- the Twisted generation
def test_deferred_storage_of_the_twisted_generation(tmp_path: Path) -> None:
    """2.x: Deferreds, GET checks the etag, no identical-bytes shortcut, and the
    conditional UPDATE keeps concurrent whole-document PUTs from being lost."""
    out = result(
        tmp_path,
        """
        from twisted.internet import defer, task
        from xcap.uri import XCAPUri
        from xcap.appusage import namespaces
        import xcap.backend.deferreddb as deferreddb

        async def body(reactor):
            storage = deferreddb.Storage()
            assert storage is deferreddb.Storage()
            uri = lambda: XCAPUri(ROOT, DOC, namespaces)
            checks = []
            check = lambda etag, exists=True: checks.append([etag, exists])
            out = {}
            d = storage.put_document(uri(), INITIAL, check)
            out["deferred"] = isinstance(d, defer.Deferred)
            r = await d
            out["create"] = [r.code, r.old_etag]
            g = await storage.get_document(uri(), check)
            out["get"] = [g.code, g.etag == r.etag, g.data == INITIAL]
            again = await storage.put_document(uri(), INITIAL, check)
            out["same_bytes"] = [again.code, again.old_etag == r.etag, again.etag != r.etag]
            out["checks"] = [c[1] for c in checks]
            results = await defer.gatherResults([
                storage.put_document(uri(), INITIAL.replace(b"bob", b"u%d" % i), lambda *a: None)
                for i in range(5)
            ])
            chain = [(x.old_etag, x.etag) for x in results]
            out["linear"] = len({old for old, _ in chain}) == 5
            dl = await storage.delete_document(uri(), check)
            out["delete"] = [dl.code, dl.old_etag is not None]
            out["missing"] = (await storage.get_document(uri(), check)).code
            out["watchers"] = await storage.get_watchers(uri())
            emit(out)

        task.react(lambda reactor: defer.Deferred.fromCoroutine(body(reactor)))
        """,
        backend="DeferredDB",
    )
    assert out["deferred"] is True
    assert out["create"] == [201, None]
    assert out["get"] == [200, True, True]
    assert out["same_bytes"] == [200, True, True]
    assert out["checks"] == [False, True, True]
    assert out["linear"] is True
    assert out["delete"] == [200, True]
    assert out["missing"] == 404
    assert out["watchers"] == []
