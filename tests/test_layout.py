"""The layout ../shared/DESIGN.md asks for, checked from the source (nothing is imported):

- no import cycle among the modules of ``flask_klaviyo``, nor among those of ``example_store``
  (module-level and function-level imports count; imports under ``if TYPE_CHECKING:`` do not);
- every module of ``flask_klaviyo`` is under 400 lines;
- every module that logs does it through ``logging.getLogger(__name__)``, so a merchant can
  quiet one part (``flask_klaviyo.delivery`` say) and keep the rest.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("flask_klaviyo", "example_store")
MAX_LINES = 400  # a module is "under 400 lines"
LOG_CALLS = frozenset({"debug", "info", "warning", "warn", "error", "exception", "critical", "log"})


@dataclass(frozen=True)
class Module:
    name: str  # dotted: flask_klaviyo.identity.visitor; a package is its __init__
    path: Path

    @property
    def is_package(self) -> bool:
        return self.path.name == "__init__.py"

    @property
    def package(self) -> str:
        """The package a relative import in this module starts from."""
        return self.name if self.is_package else self.name.rpartition(".")[0]

    def tree(self) -> ast.Module:
        return ast.parse(self.path.read_text(encoding="utf-8"), filename=str(self.path))

    def __str__(self) -> str:
        return self.name


def modules(package: str) -> dict[str, Module]:
    """Every module of ``package`` (a folder under the project root), by dotted name."""
    found = {}
    for path in sorted((ROOT / package).rglob("*.py")):
        parts = path.relative_to(ROOT).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        name = ".".join(parts)
        found[name] = Module(name, path)
    return found


# -- imports ----------------------------------------------------------------------------------


def _is_type_checking(test: ast.expr) -> bool:
    """``if TYPE_CHECKING:`` or ``if typing.TYPE_CHECKING:``."""
    if isinstance(test, ast.Name):
        return test.id == "TYPE_CHECKING"
    return isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"


def _imports(node: ast.AST) -> Iterator[ast.Import | ast.ImportFrom]:
    """Every import statement below ``node``, at any depth (functions, classes, try blocks),
    except the bodies of ``if TYPE_CHECKING:`` (their ``else:`` runs, so it counts)."""
    for child in ast.iter_child_nodes(node):
        if isinstance(child, ast.Import | ast.ImportFrom):
            yield child
        elif isinstance(child, ast.If) and _is_type_checking(child.test):
            for statement in child.orelse:
                if isinstance(statement, ast.Import | ast.ImportFrom):
                    yield statement
                else:
                    yield from _imports(statement)
        else:
            yield from _imports(child)


def _resolve(name: str, known: dict[str, Module]) -> str | None:
    """The known module ``name`` denotes: itself, or the nearest known package above it."""
    while name:
        if name in known:
            return name
        name = name.rpartition(".")[0]
    return None


def imported(module: Module, known: dict[str, Module]) -> set[str]:
    """The modules of ``known`` that ``module`` imports (relative imports resolved)."""
    targets: set[str] = set()
    for statement in _imports(module.tree()):
        if isinstance(statement, ast.Import):
            for alias in statement.names:
                targets.add(_resolve(alias.name, known) or "")
            continue
        if statement.level:
            base = module.package
            for _ in range(statement.level - 1):
                base = base.rpartition(".")[0]
            source = f"{base}.{statement.module}" if statement.module else base
        else:
            source = statement.module or ""
        for alias in statement.names:
            # ``from . import carts``: the submodule when there is one, else the package's name
            submodule = f"{source}.{alias.name}"
            targets.add(submodule if submodule in known else _resolve(source, known) or "")
    targets.discard("")
    targets.discard(module.name)
    return targets


def import_graph(package: str) -> dict[str, set[str]]:
    known = modules(package)
    return {name: imported(module, known) for name, module in known.items()}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One concrete cycle per strongly connected component of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[set[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in sorted(graph.get(node, ())):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
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

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return [_cycle_in(component, graph) for component in components]


def _cycle_in(component: set[str], graph: dict[str, set[str]]) -> list[str]:
    """A shortest path from the component's first module back to itself, inside it."""
    start = min(component)
    paths = {start: [start]}
    frontier = [start]
    while frontier:
        following = []
        for node in frontier:
            for target in sorted(graph[node] & component):
                if target == start:
                    return [*paths[node], start]
                if target not in paths:
                    paths[target] = [*paths[node], target]
                    following.append(target)
        frontier = following
    raise AssertionError(f"no cycle through {start} in {sorted(component)}")  # pragma: no cover


def test_the_cycle_finder_names_a_cycle() -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a", "d"}, "d": set(), "e": {"e"}}
    assert cycles(graph) == [["a", "b", "c", "a"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_relative_imports_resolve_and_type_checking_imports_do_not_count(tmp_path: Path) -> None:
    source = (
        "from typing import TYPE_CHECKING\n"
        "from . import sibling, NAME\n"
        "from .sub import thing\n"
        "from ..up import x\n"
        "if TYPE_CHECKING:\n"
        "    from .hidden import H\n"
        "def later():\n"
        "    import pkg.inner.late\n"
    )
    path = tmp_path / "mod.py"
    path.write_text(source)
    known = {
        name: Module(name, tmp_path / "x.py")
        for name in ("pkg", "pkg.inner", "pkg.inner.sibling", "pkg.inner.sub", "pkg.up")
    }
    known["pkg.inner.hidden"] = Module("pkg.inner.hidden", tmp_path / "x.py")
    known["pkg.inner.late"] = Module("pkg.inner.late", tmp_path / "x.py")
    module = Module("pkg.inner.mod", path)
    assert imported(module, known) == {
        "pkg.inner.sibling",
        "pkg.inner",  # NAME is a name in the package, not a module
        "pkg.inner.sub",
        "pkg.up",
        "pkg.inner.late",
    }


@pytest.mark.parametrize("package", PACKAGES)
def test_no_import_cycle(package: str) -> None:
    found = cycles(import_graph(package))
    assert not found, f"import cycles in {package}:\n" + "\n".join(
        "  " + " -> ".join(cycle) for cycle in found
    )


# -- size -------------------------------------------------------------------------------------


@pytest.mark.parametrize("module", modules("flask_klaviyo").values(), ids=str)
def test_every_module_is_under_400_lines(module: Module) -> None:
    lines = len(module.path.read_text(encoding="utf-8").splitlines())
    assert lines < MAX_LINES, f"{module} has {lines} lines (split it by concern)"


# -- logging ----------------------------------------------------------------------------------


def logging_problems(module: Module) -> list[str]:
    """What keeps ``module`` from logging through its own ``logging.getLogger(__name__)``."""
    tree = module.tree()
    problems = []
    named = False
    logs = False
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module == "logging":
            for alias in node.names:
                if alias.name == "getLogger" or alias.name in LOG_CALLS:
                    problems.append(f"line {node.lineno}: use logging.getLogger(__name__)")
        if not isinstance(node, ast.Call) or not isinstance(node.func, ast.Attribute):
            continue
        owner, attr = node.func.value, node.func.attr
        if isinstance(owner, ast.Name) and owner.id == "logging":
            if attr == "getLogger":
                logs = True
                if (
                    len(node.args) == 1
                    and not node.keywords
                    and isinstance(node.args[0], ast.Name)
                    and node.args[0].id == "__name__"
                ):
                    named = True
                else:
                    given = ", ".join(ast.unparse(arg) for arg in node.args)
                    problems.append(
                        f"line {node.lineno}: logging.getLogger({given}) "
                        "instead of logging.getLogger(__name__)"
                    )
            elif attr in LOG_CALLS:
                logs = True
                problems.append(f"line {node.lineno}: logging.{attr}() logs on the root logger")
    if logs and not named and not problems:
        problems.append("logs without logging.getLogger(__name__)")
    return problems


def test_the_logging_check_names_what_is_wrong(tmp_path: Path) -> None:
    def check(source: str) -> list[str]:
        path = tmp_path / "m.py"
        path.write_text(source)
        return logging_problems(Module("pkg.m", path))

    assert check("import logging\nlog = logging.getLogger(__name__)\nlog.info('x')\n") == []
    assert check("import logging\nLEVEL = logging.WARNING\n") == []
    assert check("import logging\nlog = logging.getLogger('pkg')\n") == [
        "line 2: logging.getLogger('pkg') instead of logging.getLogger(__name__)"
    ]
    assert check("import logging\nlogging.warning('x')\n") == [
        "line 2: logging.warning() logs on the root logger"
    ]


@pytest.mark.parametrize(
    "module",
    [m for package in PACKAGES for m in modules(package).values()],
    ids=str,
)
def test_every_module_that_logs_uses_its_own_logger(module: Module) -> None:
    problems = logging_problems(module)
    assert not problems, f"{module}: " + "; ".join(problems)


def test_the_readme_layout_names_every_module_once() -> None:
    """README's Layout block lists each module of flask_klaviyo (package __init__s aside)."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    block = readme.split("<!-- layout:start -->", 1)[1].split("<!-- layout:end -->", 1)[0]
    listed = [line.split()[0] for line in block.splitlines() if re.match(r"  \S", line)]
    package = ROOT / "flask_klaviyo"
    expected = sorted(
        str(path.relative_to(package))
        for path in package.rglob("*.py")
        if path.name not in ("__init__.py", "__main__.py") or path.parent == package
    )
    assert sorted(listed) == expected


def test_names_the_readme_documented_before_the_packages_still_import() -> None:
    from flask_klaviyo.client import KlaviyoClient
    from flask_klaviyo.delivery.parking import Parking
    from flask_klaviyo.identity import Parking as documented
    from flask_klaviyo.jobs import deliver_events, drain, follow_up
    from flask_klaviyo.models import Product
    from flask_klaviyo.testing import FakeKlaviyo, main

    assert documented is Parking
    assert callable(Product.coerce) and callable(main) and FakeKlaviyo and KlaviyoClient
    assert [f.__module__ for f in (drain, deliver_events, follow_up)] == ["flask_klaviyo.jobs"] * 3
