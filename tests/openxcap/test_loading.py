"""How OpenXCAP finds ``xcap.backend.xcapdiff``: the pip route (``xcapdiff_ext.pth`` →
import hook) and the Debian route (a module file in ``xcap/backend/``).

Each case runs a fresh interpreter over a minimal ``xcap`` package (two empty
``__init__.py``, what the Debian package test's dummy openxcap provides), so the
interpreter start-up is the real one.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

CHECK = textwrap.dedent(
    """
    import site, sys
    for d in sys.argv[1:]:
        site.addsitedir(d)
    started = sorted(m for m in sys.modules if m.split('.')[0] in ('xcap', 'xcapdiff_ext'))
    hooks = [type(f).__name__ for f in sys.meta_path]
    import xcap.backend.xcapdiff as backend
    print('at-start', started)
    print('finder', 'XcapDiffBackendFinder' in hooks)
    print('storage', backend.Storage.__module__, backend.installSignalHandlers)
    print('file', getattr(backend, '__file__', None))
    """
)


def empty_xcap(where: Path) -> Path:
    (where / "xcap" / "backend").mkdir(parents=True)
    (where / "xcap" / "__init__.py").write_text("")
    (where / "xcap" / "backend" / "__init__.py").write_text("")
    return where


def run(tmp_path: Path, *site_dirs: Path) -> list[str]:
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}  # no PYTHONPATH: only site dirs
    proc = subprocess.run(
        [sys.executable, "-S", "-c", CHECK, *map(str, site_dirs)],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.splitlines()


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """What ``pip install`` puts into site-packages: setup.py's build_py output."""
    out = tmp_path_factory.mktemp("build") / "lib"
    subprocess.run(
        [sys.executable, "setup.py", "-q", "build_py", "--build-lib", str(out)],
        cwd=ROOT,
        check=True,
        capture_output=True,
        timeout=120,
    )
    shutil.rmtree(ROOT / "build", ignore_errors=True)
    return out


def test_build_installs_the_pth_and_the_hook(built: Path) -> None:
    assert (built / "xcapdiff_ext.pth").read_text() == "import _xcapdiff_ext_hook\n"
    assert (built / "_xcapdiff_ext_hook.py").is_file()
    assert (built / "xcapdiff_ext" / "openxcap" / "backend.py").is_file()


def test_pth_route_answers_for_our_backend_and_imports_nothing_at_start(
    built: Path, tmp_path: Path
) -> None:
    xcap = empty_xcap(tmp_path / "openxcap")
    deps = Path(__import__("lxml").__file__).parents[1]  # twisted, lxml of this venv
    lines = run(tmp_path, xcap, built, deps)
    assert lines[0] == "at-start []", lines  # neither xcap nor xcapdiff_ext at start-up
    assert lines[1] == "finder True"
    assert lines[2] == "storage xcapdiff_ext.openxcap.backend False"
    assert lines[3] == "file None"  # provided by the hook, no file of ours in xcap/


def test_without_the_pth_there_is_no_backend(built: Path, tmp_path: Path) -> None:
    xcap = empty_xcap(tmp_path / "openxcap")
    (built.parent / "nopth").mkdir(exist_ok=True)
    shutil.copytree(
        built / "xcapdiff_ext", built.parent / "nopth" / "xcapdiff_ext", dirs_exist_ok=True
    )
    proc = subprocess.run(
        [sys.executable, "-S", "-c", CHECK, str(xcap), str(built.parent / "nopth")],
        capture_output=True, text=True, cwd=tmp_path, timeout=60, check=False,
    )  # fmt: skip
    assert proc.returncode != 0
    assert "No module named 'xcap.backend.xcapdiff'" in proc.stderr


def test_module_file_route_wins_over_the_hook(built: Path, tmp_path: Path) -> None:
    xcap = empty_xcap(tmp_path / "openxcap")
    shutil.copy(ROOT / "contrib" / "xcap" / "backend" / "xcapdiff.py", xcap / "xcap" / "backend")
    deps = Path(__import__("lxml").__file__).parents[1]
    lines = run(tmp_path, xcap, built, deps)
    assert lines[2] == "storage xcapdiff_ext.openxcap.backend False"
    assert lines[3] == f"file {xcap / 'xcap' / 'backend' / 'xcapdiff.py'}"


def test_the_hook_answers_only_for_its_name() -> None:
    sys.path.insert(0, str(ROOT))
    try:
        import _xcapdiff_ext_hook as hook
    finally:
        sys.path.remove(str(ROOT))
    finder = hook.XcapDiffBackendFinder()
    assert finder.find_spec("xcap.backend.xcapdiff") is not None
    for name in ("xcap", "xcap.backend", "xcap.backend.database", "xcapdiff", "xcapdiff_ext"):
        assert finder.find_spec(name) is None
