"""PublishingStorage over a storage of the Twisted generation (methods returning
Deferreds: the stand-in's ``xcap.backend.deferreddb``, OpenXCAP 2.x's contract).

The wrapper must hand back Deferreds too, lock with ``DeferredLock``, read the current
version with one ``get_document`` (no ``fetch_document`` there) and still rebase
concurrent element edits.  Runs in a fresh interpreter driven by ``task.react``.
"""

from __future__ import annotations

import itertools
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
STANDIN = REPO / "tests" / "openxcap_standin"

SCRIPT = """
import itertools
import json
from twisted.internet import defer, task
from xcap.appusage import namespaces
from xcap.backend.deferreddb import Storage
from xcap.uri import XCAPUri
from xcapdiff_ext.openxcap.storage import PublishingStorage

ROOT = "http://xcap.example.com/xcap-root"
DOC = "/resource-lists/users/sip:alice@example.com/index"
INITIAL = (b'<?xml version="1.0" encoding="UTF-8"?>\\n'
           b'<resource-lists xmlns="urn:ietf:params:xml:ns:resource-lists">'
           b'<list name="friends"><entry uri="sip:bob@example.com"/></list></resource-lists>')

def nocheck(*args):
    pass

@defer.inlineCallbacks
def main(reactor):
    changes = []
    storage = PublishingStorage(Storage(), changes.append, xcap_root=ROOT)
    d = storage.put_document(XCAPUri(ROOT, DOC, namespaces), INITIAL, nocheck)
    kinds = [type(d).__name__]
    created = yield d

    @defer.inlineCallbacks
    def add(name):  # an element PUT as the application does it: read, edit, write
        node = '~~/resource-lists/list[@name="friends"]/entry[@uri="sip:%s@example.com"]' % name
        uri = XCAPUri(ROOT, DOC + node, namespaces)
        got = yield storage.get_document(uri, nocheck)
        new = got.data.replace(b"</list>", b'<entry uri="sip:%s@example.com"/></list>' % name.encode())
        result = yield storage.put_document(uri, new, nocheck)
        return result.code

    codes = yield defer.gatherResults([add("c%d" % n) for n in range(10)])
    final = yield storage.get_document(XCAPUri(ROOT, DOC, namespaces), nocheck)
    d = storage.delete_document(XCAPUri(ROOT, DOC, namespaces), nocheck)
    kinds.append(type(d).__name__)
    yield d
    print("RESULT " + json.dumps({
        "kinds": kinds, "created": created.code, "codes": codes,
        "entries": final.data.count(b"<entry "), "rebased": storage.rebased,
        "changes": [[c.kind.value, c.old_etag, c.new_etag, c.sel, c.owner] for c in changes],
    }))

task.react(main)
"""


def test_deferred_storage_is_wrapped_with_deferreds_and_rebases(tmp_path: Path) -> None:
    (tmp_path / "config.ini").write_text(
        "[Server]\nroot = http://xcap.example.com/xcap-root\nbackend = DeferredDB\n"
        f"[Database]\nauthentication_db_uri = sqlite:///{tmp_path}/a\n"
        f"storage_db_uri = sqlite:///{tmp_path}/s\n"
    )
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(STANDIN), str(REPO)]),
        "OPENXCAP_STANDIN_CONFIG_DIR": str(tmp_path),
    }
    proc = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(SCRIPT)],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    line = next(x for x in proc.stdout.splitlines() if x.startswith("RESULT "))
    out = json.loads(line[len("RESULT ") :])
    assert out["kinds"] == ["Deferred", "Deferred"]
    assert out["created"] == 201 and set(out["codes"]) == {200}
    assert out["entries"] == 11  # bob and the ten concurrent ones
    assert out["rebased"] >= 1
    changes = out["changes"]
    assert [c[0] for c in changes] == ["document"] + ["element"] * 10 + ["document"]
    chain = [(c[1], c[2]) for c in changes]
    assert chain[0][0] is None and chain[-1][1] is None
    for (_, new), (old, _) in itertools.pairwise(chain):
        assert old == new  # one linear chain
    assert {c[3] for c in changes} == {"resource-lists/users/sip:alice@example.com/index"}
    assert {c[4] for c in changes} == {"sip:alice@example.com"}
