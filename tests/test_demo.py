"""``make demo`` (python -m xcapdiff_ext.demo): the output shows every publication.

The demo is the product end to end (storage hook, publisher, spool, diff worker, SIP
transport, monitor); this runs it as ``make demo`` does and checks what it printed.
"""

from __future__ import annotations

import re
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_the_demo_shows_each_step_and_publication() -> None:
    t0 = time.monotonic()
    proc = subprocess.run(
        [sys.executable, "-m", "xcapdiff_ext.demo", "--no-colour"],
        cwd=REPO, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    elapsed = time.monotonic() - t0
    assert proc.returncode == 0, proc.stdout + proc.stderr
    out = proc.stdout
    assert "\033[" not in out  # --no-colour
    steps = re.split(r"^── \d\. ", out, flags=re.M)[1:]
    assert len(steps) == 6, out
    create, add, rename, remove, reput, delete = steps

    assert "→ 201 Created" in create
    assert re.search(r'<d:document sel="resource-lists/users/sip:alice@example.com/index" '
                     r'new-etag="\w+"/>', create)  # fmt: skip
    assert "→ 201 Created" in add
    assert '<d:add sel="rl:resource-lists/rl:list/rl:entry" pos="after"><entry uri="sip:bob@' in add
    assert "→ 200 OK" in rename
    assert '<d:replace sel="rl:resource-lists/rl:list/@name">buddies</d:replace>' in rename
    assert (
        "<d:remove sel=\"rl:resource-lists/rl:list/rl:entry[@uri='sip:carol@example.com']\"/>"
        in remove
    )
    assert "(nothing published: the document did not change)" in reput
    assert "monitor received" not in reput
    assert re.search(r'<d:document sel="[^"]+" previous-etag="\w+"/>', delete)

    # each publication continues the previous one's etag chain
    etags = re.findall(r'ETag "(\w+)"', out)
    previous = re.findall(r'previous-etag="(\w+)"', out)
    assert previous == [etags[0], etags[1], etags[2], etags[3]]
    assert out.count("(initial, valid)") == 1 and out.count("(modify, valid)") == 4
    assert "changes accepted 5, publications 5, retried 0, failed 0, dropped 0" in out
    assert "monitor: 5 xcap-diff bodies, all valid: True" in out
    assert elapsed < 20
