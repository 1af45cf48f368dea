"""DESIGN.md's layers, checked on the source.

Every module of ``pyro_nf/`` is parsed with :mod:`ast`. A module belongs to the layer named by its
subpackage (``pyro_nf/guides/flows.py`` -> ``guides``); the root helpers (``_registry``, ``_sites``,
``_util``) may be imported by every layer and import no layer themselves. Each layer may import only
the layers :data:`ALLOWED` lists for it, the arrows of DESIGN.md's table:

========== ===============================================
layer      may import
========== ===============================================
transforms (root helpers only)
guides     transforms
training   guides, transforms
evaluation guides, transforms
comparison evaluation, training, guides, transforms
cli        comparison, examples (and what they re-export)
examples   (root helpers only)
========== ===============================================

and the never-rules follow: nothing imports a layer above it, ``examples`` never imports ``guides``,
``guides`` never import ``training`` (a guide does not know how it is trained), nothing below the
command line imports it. Also: imports of pyro_nf sit at module top (lazy only in the command line and
for the matplotlib-backed plotting modules), there is no import cycle, no module is shadowed by an
attribute of its package, and ``ls pyro_nf`` stays the architecture diagram.
"""

from __future__ import annotations

import ast
import importlib
import pkgutil
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "pyro_nf"

ROOT_HELPERS = frozenset({"_registry", "_sites", "_util"})
LAYERS = ("transforms", "guides", "training", "evaluation", "comparison", "cli", "examples")
ALLOWED: dict[str, frozenset[str]] = {
    "transforms": frozenset(),
    "guides": frozenset({"transforms"}),
    "training": frozenset({"guides", "transforms"}),
    "evaluation": frozenset({"guides", "transforms"}),
    "comparison": frozenset({"evaluation", "training", "guides", "transforms"}),
    "cli": frozenset({"comparison", "examples"}),
    "examples": frozenset(),
    # the package's own entry points
    "__init__": frozenset(LAYERS) - {"cli", "examples"},
    "__main__": frozenset({"cli"}),
}
#: Modules (dotted) that may be imported inside a function: they pull in matplotlib.
LAZY_OK = frozenset({"pyro_nf.comparison.plots", "pyro_nf.comparison.report"})
MAX_LINES = 450
MAX_ENTRIES = 13


def _modules() -> list[Path]:
    return sorted(PACKAGE.rglob("*.py"))


def _rel(path: Path) -> str:
    return path.relative_to(PACKAGE).as_posix()


def _dotted(path: Path) -> list[str]:
    parts = ["pyro_nf", *path.relative_to(PACKAGE).with_suffix("").parts]
    return parts[:-1] if parts[-1] == "__init__" else parts


def layer_of(dotted: list[str]) -> str:
    """Layer of a module given as dotted parts (``["pyro_nf"]`` is the package's ``__init__``)."""
    if len(dotted) == 1:
        return "__init__"
    return dotted[1]


def _is_submodule(dotted: list[str]) -> bool:
    base = PACKAGE.joinpath(*dotted[1:])
    return base.with_suffix(".py").is_file() or (base / "__init__.py").is_file()


def imports_of(source: str, module: list[str], is_package: bool) -> list[tuple[list[str], int, bool]]:
    """``(imported pyro_nf module, line, at module top)`` for every pyro_nf import in ``source``."""
    tree = ast.parse(source)
    package = module if is_package else module[:-1]
    top = {id(node) for node in tree.body}
    top |= {id(n) for node in tree.body if isinstance(node, ast.If) for n in node.body}  # TYPE_CHECKING
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [
                (a.name.split("."), node.lineno, id(node) in top)
                for a in node.names
                if a.name.split(".")[0] == "pyro_nf"
            ]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - (node.level - 1)]
                target = base + (node.module.split(".") if node.module else [])
            elif node.module and node.module.split(".")[0] == "pyro_nf":
                target = node.module.split(".")
            else:
                continue
            for alias in node.names:  # `from pyro_nf.comparison import plots` imports a module
                sub = [*target, alias.name]
                found.append((sub if _is_submodule(sub) else target, node.lineno, id(node) in top))
    return found


def violation(source_layer: str, target_layer: str) -> str | None:
    """Why an import from ``source_layer`` of ``target_layer`` breaks the layers, or ``None``."""
    if target_layer == source_layer or target_layer in ROOT_HELPERS:
        return None
    if source_layer in ROOT_HELPERS:
        return f"root helper {source_layer!r} imports layer {target_layer!r}"
    if target_layer not in ALLOWED.get(source_layer, frozenset()):
        return (
            f"layer {source_layer!r} may not import {target_layer!r} (allowed: "
            f"{', '.join(sorted(ALLOWED.get(source_layer, ()))) or 'root helpers only'})"
        )
    return None


def _all_imports() -> list[tuple[str, list[str], int, bool]]:
    out = []
    for path in _modules():
        for target, line, at_top in imports_of(
            path.read_text(encoding="utf-8"), _dotted(path), path.name == "__init__.py"
        ):
            out.append((_rel(path), target, line, at_top))
    return out


IMPORTS = _all_imports()


def test_imports_are_found() -> None:
    # Guards the parser: imports known to exist must be seen (else every check is vacuous).
    seen = {(src, layer_of(t)) for src, t, _, _ in IMPORTS}
    assert ("guides/flows.py", "transforms") in seen
    assert ("comparison/pipeline.py", "training") in seen
    assert ("cli/command.py", "comparison") in seen  # lazy, inside a function
    assert ("comparison/report.py", "comparison") in seen


def test_every_module_is_in_a_layer() -> None:
    unplaced = [
        _rel(p)
        for p in _modules()
        if layer_of(_dotted(p)) not in ALLOWED and layer_of(_dotted(p)) not in ROOT_HELPERS
    ]
    assert not unplaced, f"modules outside the layers of DESIGN.md: {unplaced}"


@pytest.mark.parametrize("src", sorted({src for src, *_ in IMPORTS}))
def test_imports_follow_the_arrows(src: str) -> None:
    source_layer = layer_of(_dotted(PACKAGE / src))
    bad = [
        f"line {line}: {'.'.join(t)}: {why}"
        for s, t, line, _ in IMPORTS
        if s == src
        if (why := violation(source_layer, layer_of(t)))
    ]
    assert not bad, f"pyro_nf/{src}: " + "; ".join(bad)


@pytest.mark.parametrize(
    ("source_layer", "target_layer"),
    [
        ("examples", "guides"),
        ("guides", "training"),
        ("transforms", "guides"),
        ("evaluation", "training"),
        ("training", "comparison"),
        ("comparison", "cli"),
        ("_sites", "guides"),
        ("guides", "examples"),
    ],
)
def test_forbidden_arrows_are_refused(source_layer: str, target_layer: str) -> None:
    assert violation(source_layer, target_layer) is not None


def test_the_check_catches_a_bad_import() -> None:
    # a test of the test: a module of examples that imports a guide, run through the same parser
    source = "import torch\n\nfrom pyro_nf.guides import AutoIAF\n"
    found = imports_of(source, ["pyro_nf", "examples", "_bad"], is_package=False)
    assert [(t, line) for t, line, _ in found] == [(["pyro_nf", "guides"], 3)]
    assert "may not import 'guides'" in violation("examples", layer_of(found[0][0]))
    relative = imports_of("from ..training import fit\n", ["pyro_nf", "guides", "_bad"], is_package=False)
    assert violation("guides", layer_of(relative[0][0])) is not None


def test_imports_sit_at_module_top() -> None:
    lazy = [
        f"{src}:{line} imports {'.'.join(t)}"
        for src, t, line, at_top in IMPORTS
        if not at_top and not src.startswith("cli/") and ".".join(t) not in LAZY_OK
    ]
    assert not lazy, f"imports inside functions (move them to the top): {lazy}"


def test_no_import_cycle() -> None:
    graph: dict[str, set[str]] = {}
    for src, target, _, at_top in IMPORTS:
        if at_top:
            graph.setdefault(".".join(_dotted(PACKAGE / src)), set()).add(".".join(target))
    state: dict[str, int] = {}

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph.get(node, ())):
            # importing a package's own __init__ from inside it is how Python packages work
            if node.startswith(nxt + "."):
                continue
            if state.get(nxt) == 1:
                pytest.fail(f"import cycle: {' -> '.join([*path, node, nxt])}")
            if nxt not in state:
                visit(nxt, [*path, node])
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node, [])


def _packages() -> list[str]:
    return sorted(".".join(_dotted(p)) for p in PACKAGE.rglob("__init__.py"))


@pytest.mark.parametrize("package", _packages())
def test_no_module_is_shadowed(package: str) -> None:
    pkg = importlib.import_module(package)
    for info in pkgutil.iter_modules(pkg.__path__):
        module = importlib.import_module(f"{package}.{info.name}")
        attr = getattr(pkg, info.name, module)
        assert attr is module, f"{package}.{info.name} is {attr!r}, which shadows the module"


def test_package_listing_is_the_architecture() -> None:
    entries = sorted(p.name for p in PACKAGE.iterdir() if p.name != "__pycache__")
    folders = [e for e in entries if (PACKAGE / e).is_dir()]
    assert set(LAYERS) <= set(folders), f"one folder per layer expected, got {folders}"
    assert len(entries) <= MAX_ENTRIES, f"ls pyro_nf has {len(entries)} entries: {entries}"


@pytest.mark.parametrize("path", _modules(), ids=_rel)
def test_module_size(path: Path) -> None:
    n = len(path.read_text(encoding="utf-8").splitlines())
    assert n < MAX_LINES, f"pyro_nf/{_rel(path)} has {n} lines; split it (limit {MAX_LINES})"
