"""clipsearch's import graph, read from the source with `ast` (nothing is imported): no cycle
among its modules, no import across the rooms' walls, Ray imported only in clipsearch/tune/.

The rooms (see clipsearch/__init__.py and docs): tune, report and bench are applications of the
library and never import each other except bench -> tune; the core (every other module, the
results room included) imports none of them nor the CLI. Function-level imports count (they
run when the function does); imports under `if TYPE_CHECKING:` never run and do not count.
"""

from __future__ import annotations

import ast
import textwrap
from dataclasses import dataclass
from pathlib import Path

import pytest

import clipsearch

PACKAGE_ROOT = Path(clipsearch.__file__).parent

#: the applications: tune, report, bench (folders), the CLI and the terminal UI (modules)
APPLICATION_ROOMS = {"tune", "report", "bench", "cli", "ui", "__main__"}
#: what the core must not import
CORE_MUST_NOT_IMPORT = {"tune", "report", "bench", "cli"}
#: (importer, imported) pairs forbidden between applications; bench -> tune is allowed
FORBIDDEN_BETWEEN_ROOMS = {("report", "tune"), ("tune", "report"), ("tune", "bench")}
#: third-party packages only one room may import
ONLY_IMPORTED_BY = {"ray": "tune"}


@dataclass(frozen=True)
class Import:
    """One import statement's dependency: `source` (a module of the package) imports `target`
    (a module of the package, or a third-party top-level name when `external`)."""

    source: str
    target: str
    path: Path
    line: int
    external: bool = False
    #: target is a package whose __init__ runs first because the statement imports a module
    #: inside it (`from clipsearch.data.batches import X` in clipsearch.train runs data/__init__)
    implicit: bool = False

    def __str__(self) -> str:
        return f"{self.path}:{self.line}: {self.source} -> {self.target}" + (" (its __init__)" if self.implicit else "")


def package_modules(root: Path) -> dict[str, Path]:
    """Dotted module name -> file, for every .py file under the package folder `root`."""
    modules = {}
    for path in sorted(root.rglob("*.py")):
        parts = list(path.relative_to(root.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        modules[".".join(parts)] = path
    return modules


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _run_time_imports(tree: ast.AST):
    """Every Import / ImportFrom node that can run: all of them, at any depth, except those in
    the body of an `if TYPE_CHECKING:` (its `else:` does run)."""
    stack = [tree]
    while stack:
        node = stack.pop()
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            yield node
        elif isinstance(node, ast.If) and _is_type_checking(node.test):
            stack.extend(node.orelse)
        else:
            stack.extend(ast.iter_child_nodes(node))


def _absolute_names(module: str, is_package: bool, node: ast.Import | ast.ImportFrom) -> list[str]:
    """The dotted names an import statement asks for: `from .x import y` in a.b.c gives a.b.x.y
    (a submodule if there is one, else a name inside a.b.x)."""
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    if node.level:
        base = module.split(".") if is_package else module.split(".")[:-1]
        base = base[:len(base) - (node.level - 1)]
        origin = ".".join(base + ([node.module] if node.module else []))
    else:
        origin = node.module or ""
    return [f"{origin}.{alias.name}" for alias in node.names]


def _deepest_module(name: str, modules: dict[str, Path]) -> str | None:
    """The longest prefix of `name` that is a module of the package (`a.b.func` -> a.b)."""
    while name not in modules and "." in name:
        name = name.rsplit(".", 1)[0]
    return name if name in modules else None


def _packages_run_first(importer: str, target: str) -> list[str]:
    """The packages above `target` whose __init__ an import of it runs: all but the top-level
    package and those `importer` is inside of (they are already being imported)."""
    parts = target.split(".")
    above = [".".join(parts[:k]) for k in range(2, len(parts))]
    return [p for p in above if importer != p and not importer.startswith(p + ".")]


def package_imports(root: Path) -> list[Import]:
    """Each run-time import of each module of the package at `root`: one Import per
    (statement, target), targets in the package resolved to the deepest module they name (plus,
    implicit, the subpackages whose __init__ runs on the way), other targets as their top-level
    package (external)."""
    modules = package_modules(root)
    package = root.name
    found: set[Import] = set()
    for module, path in modules.items():
        tree = ast.parse(path.read_text(), filename=str(path))
        for node in _run_time_imports(tree):
            for name in _absolute_names(module, path.name == "__init__.py", node):
                if name == package or name.startswith(package + "."):
                    target = _deepest_module(name, modules)
                    if target is not None and target != module:
                        found.add(Import(module, target, path, node.lineno))
                        found.update(Import(module, parent, path, node.lineno, implicit=True)
                                     for parent in _packages_run_first(module, target))
                else:
                    found.add(Import(module, name.split(".")[0], path, node.lineno, external=True))
    return sorted(found, key=lambda i: (str(i.path), i.line, i.target))


def import_cycles(imports: list[Import]) -> list[list[Import]]:
    """The strongly connected components of the package's module graph with more than one
    module, each as the imports that join its modules (Tarjan's algorithm, iterative)."""
    graph: dict[str, set[str]] = {}
    for edge in imports:
        if not edge.external:
            graph.setdefault(edge.source, set()).add(edge.target)
            graph.setdefault(edge.target, set())
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    components: list[set[str]] = []
    for start in sorted(graph):
        if start in index:
            continue
        work = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            node, successors = work[-1]
            for successor in successors:
                if successor not in index:
                    index[successor] = low[successor] = len(index)
                    stack.append(successor)
                    on_stack.add(successor)
                    work.append((successor, iter(sorted(graph[successor]))))
                    break
                if successor in on_stack:
                    low[node] = min(low[node], index[successor])
            else:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[node])
                if low[node] == index[node]:
                    component = set()
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        component.add(member)
                        if member == node:
                            break
                    if len(component) > 1:
                        components.append(component)
    return [[e for e in imports if not e.external and e.source in c and e.target in c] for c in components]


def room(module: str) -> str:
    """clipsearch.tune.runner -> tune, clipsearch.cli -> cli, clipsearch.train -> core."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[1] in APPLICATION_ROOMS else "core"


def forbidden_imports(imports: list[Import]) -> list[tuple[Import, str]]:
    """Each import across a wall, with the rule it breaks."""
    broken = []
    for edge in imports:
        if edge.implicit:  # the same statement's explicit target is in the same room
            continue
        source = room(edge.source)
        if edge.external:
            owner = ONLY_IMPORTED_BY.get(edge.target)
            if owner is not None and source != owner:
                broken.append((edge, f"only clipsearch/{owner}/ imports {edge.target}"))
            continue
        target = room(edge.target)
        if (source, target) in FORBIDDEN_BETWEEN_ROOMS:
            broken.append((edge, f"{source} never imports {target}"))
        elif source == "core" and target in CORE_MUST_NOT_IMPORT:
            broken.append((edge, f"the core (outside tune, report, bench, cli, ui) never imports {target}"))
    return broken


def import_problems(root: Path) -> list[str]:
    """Every cycle and forbidden import of the package at `root`, one readable line each."""
    imports = package_imports(root)
    problems = []
    for cycle in import_cycles(imports):
        modules = sorted({e.source for e in cycle})
        problems.append(f"import cycle among {', '.join(modules)}:\n" + "\n".join(f"    {e}" for e in cycle))
    problems += [f"{edge}  ({rule})" for edge, rule in forbidden_imports(imports)]
    return problems


# ------------------------------------------------------------------------------------- the package


def test_clipsearch_has_no_import_cycle_and_no_import_across_the_rooms_walls():
    problems = import_problems(PACKAGE_ROOT)
    assert not problems, "\n".join(problems)


def test_the_scan_sees_the_packages_real_imports():
    """A scan that resolved nothing would pass the test above: it must find imports we know of."""
    edges = {(e.source, e.target) for e in package_imports(PACKAGE_ROOT)}
    assert ("clipsearch.data.batches", "clipsearch.errors") in edges  # from ..errors import InputError
    assert ("clipsearch.data.batches", "clipsearch.data.imageset") in edges  # from .imageset import ...
    assert any(source.startswith("clipsearch.tune.") and target == "ray" for source, target in edges)


# ------------------------------------------------------------------------ a synthetic package


def write_package(root: Path, files: dict[str, str]) -> Path:
    """A package `clipsearch` under root/ with the given files (relative path -> source)."""
    package = root / "clipsearch"
    for name, source in {"__init__.py": "", **files}.items():
        path = package / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(source))
    return package


def test_a_cycle_through_a_function_level_import_is_found_with_file_and_line(tmp_path):
    package = write_package(tmp_path, {
        "config.py": "from .imagetask import run\n",
        "imagetask.py": "import os\n\n\ndef run():\n    from clipsearch import retrieval\n",
        "retrieval.py": "from . import config\n",
        "metrics.py": "from .config import X\n",  # imports the cycle but is not in it
    })
    problems = import_problems(package)
    assert len(problems) == 1
    assert "clipsearch.config, clipsearch.imagetask, clipsearch.retrieval" in problems[0]
    assert f"{package / 'imagetask.py'}:5: clipsearch.imagetask -> clipsearch.retrieval" in problems[0]
    assert f"{package / 'retrieval.py'}:1: clipsearch.retrieval -> clipsearch.config" in problems[0]
    assert "metrics" not in problems[0]


def test_a_cycle_through_a_packages_init_is_found(tmp_path):
    """Importing clipsearch.data.batches runs clipsearch/data/__init__.py first, which here
    imports the half-initialised clipsearch.train: an ImportError at run time."""
    package = write_package(tmp_path, {
        "train.py": "from .data.batches import PairBatches\n",
        "data/__init__.py": "from ..train import train\n",
        "data/batches.py": "from .imageset import X\n",  # inside data/: its __init__ is already running
        "data/imageset.py": "",
    })
    problems = import_problems(package)
    assert len(problems) == 1 and "import cycle among clipsearch.data, clipsearch.train:" in problems[0]
    assert f"{package / 'train.py'}:1: clipsearch.train -> clipsearch.data (its __init__)" in problems[0]


def test_imports_under_type_checking_do_not_count_but_its_else_does(tmp_path):
    package = write_package(tmp_path, {
        "a.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from .b import B\n",
        "b.py": "import typing\nif typing.TYPE_CHECKING:\n    import ray\nelse:\n    from . import a\n",
    })
    assert import_problems(package) == []
    assert [(e.source, e.target, e.line) for e in package_imports(package) if e.target != "typing"] == [
        ("clipsearch.b", "clipsearch.a", 5)]


@pytest.mark.parametrize("importer, source, rule", [
    ("report/pages.py", "from ..tune.results import read\n", "report never imports tune"),
    ("tune/runner.py", "from clipsearch.report import write\n", "tune never imports report"),
    ("tune/runner.py", "def f():\n    from ..bench import common\n", "tune never imports bench"),
    ("train.py", "from .tune import space\n", "never imports tune"),
    ("data/batches.py", "import clipsearch.report.html\n", "never imports report"),
    ("results/layout.py", "from ..bench.common import X\n", "never imports bench"),
    ("results/__init__.py", "from ..cli import app\n", "never imports cli"),
    ("train.py", "import ray.tune\n", "only clipsearch/tune/ imports ray"),
    ("report/data.py", "from ray import tune\n", "only clipsearch/tune/ imports ray"),
])
def test_each_forbidden_import_is_named_with_its_file_line_and_rule(tmp_path, importer, source, rule):
    package = write_package(tmp_path, {
        "tune/__init__.py": "", "tune/results.py": "", "tune/space.py": "", "report/__init__.py": "",
        "report/html.py": "", "bench/__init__.py": "", "bench/common.py": "", "cli.py": "",
        "results/__init__.py": "", importer: "import os\n" + source,
    })
    problems = import_problems(package)
    assert len(problems) == 1 and problems[0].startswith(f"{package / importer}:") and rule in problems[0]
    assert f":{source.count(chr(10)) + 1}: " in problems[0]  # the import's own line, after `import os`


def test_allowed_imports_are_not_reported(tmp_path):
    package = write_package(tmp_path, {
        "train.py": "from .results import layout\n", "results/__init__.py": "", "results/layout.py": "",
        "tune/__init__.py": "import ray\nfrom ..results import layout\nfrom .. import train\n",
        "bench/__init__.py": "from ..tune import space\n", "tune/space.py": "",
        "report/__init__.py": "from ..results.layout import X\n",
        "cli.py": "from . import tune, report, bench, ui\n", "ui.py": "",
    })
    assert import_problems(package) == []
