"""The package layout of docs/architecture.md: file sizes and the import rules between parts."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SOURCES = {"invkit": "invkit", "adapters": "invkit.adapters", "editors": "invkit.editors", "recipes": "invkit.recipes"}
MAX_LINES = 500
#: Files still over the limit, each with the reason; the test fails once one of them is fixed, so
#: that its entry is removed.
OVER_LIMIT: dict[str, str] = {}

INTERFACES = {"generator", "encoder", "editor", "direction", "inversion", "plugins", "loading"}
PROCEDURES = {"fs_encoder", "editing", "inference", "losses", "metrics", "recipe", "data", "align", "video",
              "projection"}
FOUNDATION = {"ops", "io", "config", "registry", "hookspecs"}
BELOW_PROCEDURES = FOUNDATION | {"nets", "interfaces", "procedures"}
#: part -> the parts it may import (docs/architecture.md, "What each part may import").
ALLOWED = {
    **{p: {p} for p in FOUNDATION},
    "nets": {"nets", "io"},
    "interfaces": {"interfaces", "io", "registry", "hookspecs"},
    "procedures": BELOW_PROCEDURES,
    "training": BELOW_PROCEDURES | {"training"},
    "exporter": BELOW_PROCEDURES | {"exporter"},
    "ui": BELOW_PROCEDURES | {"training", "exporter", "ui", "api"},
    "cli": BELOW_PROCEDURES | {"training", "exporter", "ui", "cli", "api"},
    "plugin": BELOW_PROCEDURES | {"training", "plugin", "api"},
}


def _modules() -> dict[str, tuple[Path, bool]]:
    found = {}
    for folder, package in SOURCES.items():
        for path in (ROOT / folder).rglob("*.py"):
            parts = list(path.relative_to(ROOT / folder).with_suffix("").parts)
            is_package = parts[-1] == "__init__"
            found[".".join([package] + (parts[:-1] if is_package else parts))] = (path, is_package)
    return found


def _part(module: str) -> str:
    parts = module.split(".")
    if len(parts) == 1 or parts[1] in ("__main__", "testing"):
        return "api" if parts[-1] != "testing" else "testing"
    head = parts[1]
    if head in ("adapters", "editors", "recipes"):
        return "plugin"
    if head in ("io", "ops", "nets", "training", "exporter", "ui", "cli", "config", "registry", "hookspecs"):
        return head
    if head in INTERFACES:
        return "interfaces"
    if head in PROCEDURES:
        return "procedures"
    raise AssertionError(f"{module}: not placed in docs/architecture.md's map (add it to tests/test_layout.py)")


def _imports(module: str, path: Path, is_package: bool, known) -> set[str]:
    out = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level == 0:
                base = node.module or ""
            else:
                package = module.split(".") if is_package else module.split(".")[:-1]
                package = package[: len(package) - (node.level - 1)]
                base = ".".join(package + ([node.module] if node.module else []))
            for alias in node.names:
                out.add(f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else base)
    return {m for m in out if m == "invkit" or m.startswith("invkit.")}


def test_no_source_file_over_the_limit():
    sizes = {str(path.relative_to(ROOT)): len(path.read_text(encoding="utf-8").splitlines())
             for path, _ in _modules().values()}
    over = {name: n for name, n in sizes.items() if n > MAX_LINES and name not in OVER_LIMIT}
    assert not over, f"files over {MAX_LINES} lines (split them along a seam): {over}"
    fixed = [name for name in OVER_LIMIT if sizes.get(name, 0) <= MAX_LINES]
    assert not fixed, f"{fixed} are within the limit now: remove them from OVER_LIMIT"


def test_imports_follow_the_layering_rules():
    known = _modules()
    bad = []
    for module, (path, is_package) in known.items():
        part = _part(module)
        if part in ("api", "testing"):
            continue
        for target in _imports(module, path, is_package, known):
            if target == "invkit":
                target_part = "api"
            else:
                target_part = _part(target if target in known else target.rsplit(".", 1)[0])
            if target_part not in ALLOWED[part]:
                bad.append(f"{module} ({part}) imports {target} ({target_part})")
    assert not bad, "imports against docs/architecture.md:\n" + "\n".join(sorted(bad))


@pytest.mark.parametrize("module", ["invkit.adapters.stylegan2", "invkit.adapters.stylegan3"])
def test_adapter_modules_have_no_import_cycle(module):
    """Each adapter piece imports only the pieces below it (layers <- network <- formats <- plugin)."""
    known = _modules()
    graph = {m: {t for t in _imports(m, p, pkg, known) if t in known} for m, (p, pkg) in known.items()}

    def reaches(start: str, goal: str, seen: set[str]) -> bool:
        for nxt in graph[start]:
            if nxt == goal or (nxt not in seen and not seen.add(nxt) and reaches(nxt, goal, seen)):
                return True
        return False

    for piece in [m for m in known if m.startswith(module)]:
        assert not reaches(piece, piece, set()), f"{piece} imports itself through a cycle"


def test_every_package_is_listed_for_installation():
    """A package missing from pyproject's explicit list is left out of a built wheel (only an
    editable install from the source tree would still find it)."""
    tomllib = pytest.importorskip("tomllib")
    listed = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    found = {module for module, (_, is_package) in _modules().items() if is_package}
    assert found == listed, f"unlisted: {sorted(found - listed)}, listed but absent: {sorted(listed - found)}"
