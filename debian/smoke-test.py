#!/usr/bin/python3
"""Build-time smoke test (debian/rules, override_dh_auto_test).

Run from pybuild's build directory with the interpreter under test: imports every
module of xcapdiff_ext except __main__ and openxcap.backend, then runs
``python3 -m xcapdiff_ext diff`` on the two example resource lists (no warning: a real
patch, not the etag-only fallback) and ``apply`` on
the result, which must give the new list back (compared as canonical XML).
Argument: the examples directory.
"""

import importlib
import pkgutil
import subprocess
import sys
import tempfile
from pathlib import Path

from lxml import etree

import xcapdiff_ext

SKIP = {"xcapdiff_ext.__main__", "xcapdiff_ext.openxcap.backend"}


def xcapdiff(*args: str, stdin: bytes = b"") -> bytes:
    cmd = [sys.executable, "-B", "-m", "xcapdiff_ext", *args]
    run = subprocess.run(cmd, input=stdin, capture_output=True, check=False)
    if run.returncode or run.stderr:
        sys.exit(
            f"smoke test: xcapdiff {args[0]} with lxml {etree.__version__}: exit status "
            f"{run.returncode}, stderr (must be empty):\n{run.stderr.decode(errors='replace')}"
        )
    return run.stdout


examples = Path(sys.argv[1])
names = [m.name for m in pkgutil.walk_packages(xcapdiff_ext.__path__, "xcapdiff_ext.")]
for name in names:
    if name not in SKIP:
        importlib.import_module(name)

old = examples / "resource-lists-old.xml"
new = examples / "resource-lists-new.xml"
diff = xcapdiff("diff", str(old), str(new))
assert b"xcap-diff" in diff, diff[:300]
with tempfile.NamedTemporaryFile(suffix=".xml") as patch:
    patch.write(diff)
    patch.flush()
    patched = xcapdiff("apply", "-", patch.name, stdin=old.read_bytes())


def c14n(data: bytes) -> bytes:
    return etree.tostring(etree.fromstring(data), method="c14n")


assert c14n(patched) == c14n(new.read_bytes()), "apply(old, diff(old, new)) != new"
print(f"smoke test: {len(names) - len(SKIP)} modules import; diff and apply agree")
