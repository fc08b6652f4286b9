"""Import hook of the xcapdiff_ext distribution (pip installs).

``xcapdiff_ext.pth`` imports this module at interpreter start-up.  It adds one finder
at the end of ``sys.meta_path`` that answers only for ``xcap.backend.xcapdiff`` — the
module OpenXCAP imports for ``[Server] backend = XCAPDiff`` — and imports nothing at
start-up: neither OpenXCAP (whose config classes read ``config.ini`` when they are
created) nor xcapdiff_ext.  A module file at ``xcap/backend/xcapdiff.py`` (the
Debian package's route) is found first and wins.
"""

import importlib.abc
import importlib.util
import sys

NAME = "xcap.backend.xcapdiff"
TARGET = "xcapdiff_ext.openxcap.backend"


class _Loader(importlib.abc.Loader):
    def create_module(self, spec):
        return None

    def exec_module(self, module):
        backend = importlib.import_module(TARGET)
        module.__doc__ = backend.__doc__
        for name in backend.__all__:
            setattr(module, name, getattr(backend, name))
        module.__all__ = list(backend.__all__)


class XcapDiffBackendFinder(importlib.abc.MetaPathFinder):
    def find_spec(self, fullname, path=None, target=None):
        if fullname != NAME:
            return None
        return importlib.util.spec_from_loader(fullname, _Loader(), origin=TARGET)


def install():
    if not any(isinstance(f, XcapDiffBackendFinder) for f in sys.meta_path):
        sys.meta_path.append(XcapDiffBackendFinder())


install()
