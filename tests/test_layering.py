"""The pure core does no I/O and knows no clock (STYLE §2), checked on the source by AST.

A pure module may import the standard library's pure parts, lxml, and other pure
modules of the package; never the Twisted shell, sockets, time, randomness, the
environment, threads, logging, asyncio or processes.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "xcapdiff_ext"

FORBIDDEN = frozenset(
    {
        "twisted",
        "socket",
        "time",
        "random",
        "os",
        "threading",
        "logging",
        "asyncio",
        "subprocess",
    }
)

# Dotted names relative to the package; a trailing ".*" takes a whole subpackage.
PURE = (
    "errors",
    "xmlsafe",
    "diff.*",
    "xcapdiff",
    "config",
    "change",
    "changes",
    "sip.message",
    "sip.digest",
    "sip.transaction",
    "sip.publication",
    "mi.codec",
    "mi.fairqueue",
)


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def is_pure(name: str) -> bool:
    for pattern in PURE:
        if pattern.endswith(".*"):
            base = pattern[:-2]
            if name == base or name.startswith(base + "."):
                return True
        elif name == pattern:
            return True
    return False


def all_modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted(PACKAGE.rglob("*.py")) if module_name(p)}


def pure_modules() -> dict[str, Path]:
    return {name: path for name, path in all_modules().items() if is_pure(name)}


def imports(path: Path, name: str) -> list[tuple[int, str]]:
    """(line, absolute dotted name) of every import; relative ones resolved in the package."""
    is_package = path.name == "__init__.py"
    here = ["xcapdiff_ext", *name.split(".")] if name else ["xcapdiff_ext"]
    if not is_package:
        here = here[:-1]
    found: list[tuple[int, str]] = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            found.extend((node.lineno, alias.name) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level == 0:
                base = node.module or ""
            else:
                anchor = here[: len(here) - (node.level - 1)]
                base = ".".join([*anchor, *([node.module] if node.module else [])])
            found.append((node.lineno, base))
            # `from . import x` may name a submodule: check it too.
            found.extend((node.lineno, f"{base}.{alias.name}") for alias in node.names)
    return found


def test_pure_modules_exist() -> None:
    # An empty list would make the checks below pass vacuously.
    assert pure_modules(), f"no pure modules found under {PACKAGE}"
    assert "errors" in pure_modules()


@pytest.mark.parametrize("name", sorted(pure_modules()))
def test_pure_module_imports(name: str) -> None:
    path = pure_modules()[name]
    known = all_modules()
    bad = []
    for line, target in imports(path, name):
        top = target.split(".")[0]
        if top in FORBIDDEN:
            bad.append(f"{path.name}:{line} imports {target}")
        elif top == "xcapdiff_ext":
            inner = target.removeprefix("xcapdiff_ext").lstrip(".")
            if inner in known and inner and not is_pure(inner):
                bad.append(f"{path.name}:{line} imports the shell module {target}")
    assert not bad, f"pure module xcapdiff_ext.{name}: " + "; ".join(bad)
