"""The import graph of ca_service, hsm and ca_client has no circles, and only a package's own
``__init__`` (its ``init_app``) or the app factory imports a views module.

Every ``import`` counts, at module level and inside functions (a lazy import hides a circle
from the interpreter, not from the design). ``from package import name`` is an edge to the
submodule ``package.name`` when there is one, else to the package; a second reading also
counts the package there (Python runs ``package/__init__.py`` first), which is why no package
``__init__`` imports its views: each feature package registers itself in ``blueprints.py``.
The implicit import of a module's parent package is not counted otherwise: it would make every
package with a re-export (``hsm``, ``ca_service``'s ``create_app``) a circle with its modules.
"""

from __future__ import annotations

import ast
from collections import deque
from collections.abc import Iterable, Mapping
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("ca_service", "hsm", "ca_client")

# Module -> {imported module: line of the first import}.
Graph = dict[str, dict[str, int]]

# Modules allowed in an import circle: none. (A set, so that a circle that cannot be broken
# at once is named here with its reason instead of switching the test off.)
ALLOWED_IN_CYCLES: frozenset[str] = frozenset()

# Imports of a views module by another module, left in place with the reason. Each should move
# to a service or helper module in time; no new entries.
VIEW_IMPORTS_LEFT = {
    # ``error_response`` renders the one error format of the HTML and the JSON side.
    ("ca_service.api.http", "ca_service.errors_views"),
    # Both continue the sign-in session the password pages keep (``advance_login``,
    # ``_sign_in``); that state machine lives in auth/views.py.
    ("ca_service.auth.certificate_views", "ca_service.auth.views"),
    ("ca_service.employers.views", "ca_service.auth.views"),
}


def modules(root: Path, packages: Iterable[str]) -> dict[str, Path]:
    """The importable modules of ``packages`` under ``root`` (folders without an ``__init__``,
    such as the migrations, are not packages)."""
    found: dict[str, Path] = {}
    for package in packages:
        for path in sorted((root / package).rglob("*.py")):
            relative = path.relative_to(root)
            folders = [parent for parent in relative.parents if parent != Path()]
            if not all((root / folder / "__init__.py").is_file() for folder in folders):
                continue
            parts = list(relative.with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            found[".".join(parts)] = path
    return found


def _known(name: str, known: Mapping[str, Path]) -> str | None:
    # ``import a.b.c`` of one of ours, or of something outside (None).
    while name and name not in known:
        name = name.rpartition(".")[0]
    return name or None


def _base(module: str, is_package: bool, node: ast.ImportFrom) -> str:
    if not node.level:
        return node.module or ""
    parts = module.split(".") if is_package else module.split(".")[:-1]
    parts = parts[: len(parts) - (node.level - 1)]
    return ".".join([*parts, node.module] if node.module else parts)


def import_graph(root: Path, packages: Iterable[str], *, with_packages: bool = False) -> Graph:
    """Who imports whom among the modules of ``packages``, anywhere in the module's code;
    ``with_packages`` also makes ``from package import submodule`` an edge to the package."""
    known = modules(root, packages)
    graph: Graph = {name: {} for name in known}
    for module, path in known.items():
        is_package = path.name == "__init__.py"
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = _base(module, is_package, node)
                targets = [
                    f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else base
                    for alias in node.names
                ]
                if with_packages:
                    targets.append(base)
            for target in targets:
                imported = _known(target, known)
                if imported is not None and imported != module:
                    graph[module].setdefault(imported, node.lineno)
    return graph


def strongly_connected(graph: Graph) -> list[list[str]]:
    """The graph's circles: its strongly connected components of more than one module.

    Tarjan's algorithm, written out: graphlib only reports one circle at a time (CycleError)
    and no graph library is a dependency of the project.
    """
    index: dict[str, int] = {}
    lowlink: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = lowlink[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for successor in graph.get(node, {}):
            if successor not in graph:
                continue
            if successor not in index:
                visit(successor)
                lowlink[node] = min(lowlink[node], lowlink[successor])
            elif successor in on_stack:
                lowlink[node] = min(lowlink[node], index[successor])
        if lowlink[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                components.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return sorted(components)


def one_circle(graph: Graph, component: list[str]) -> str:
    """A shortest circle through the component's first module, with the import lines."""
    start, members = component[0], set(component)
    came_from: dict[str, str] = {}
    queue = deque([start])
    while queue:
        node = queue.popleft()
        for successor in graph[node]:
            if successor not in members:
                continue
            if successor == start:
                path = [node]
                while path[-1] != start:
                    path.append(came_from[path[-1]])
                path.reverse()
                path.append(start)
                steps = [
                    f"{path[i + 1]} (line {graph[path[i]][path[i + 1]]})"
                    for i in range(len(path) - 1)
                ]
                return " -> ".join([start, *steps])
            if successor not in came_from:
                came_from[successor] = node
                queue.append(successor)
    raise AssertionError(f"{component} is not a circle")  # pragma: no cover


def without(graph: Graph, removed: Iterable[str]) -> Graph:
    gone = set(removed)
    return {
        module: {target: line for target, line in targets.items() if target not in gone}
        for module, targets in graph.items()
        if module not in gone
    }


def describe(graph: Graph, components: list[list[str]]) -> str:
    return "\n".join(
        f"- {len(component)} modules: {', '.join(component)}\n  e.g. {one_circle(graph, component)}"
        for component in components
    )


@pytest.fixture(scope="module")
def graph() -> Graph:
    return import_graph(ROOT, PACKAGES)


def test_no_import_circles(graph: Graph) -> None:
    remaining = without(graph, ALLOWED_IN_CYCLES)
    circles = strongly_connected(remaining)
    assert not circles, "import circles:\n" + describe(remaining, circles)


def test_allowed_circles_still_exist(graph: Graph) -> None:
    # The allow-list only shrinks: a module that left every circle (or no longer exists) is
    # taken off it.
    in_circles = {module for component in strongly_connected(graph) for module in component}
    stale = sorted(ALLOWED_IN_CYCLES - in_circles)
    assert not stale, f"no longer in an import circle, remove from ALLOWED_IN_CYCLES: {stale}"


def test_no_import_circles_through_package_inits() -> None:
    graph = without(import_graph(ROOT, PACKAGES, with_packages=True), ALLOWED_IN_CYCLES)
    circles = strongly_connected(graph)
    assert not circles, "import circles through a package __init__:\n" + describe(graph, circles)


def _is_views(module: str) -> bool:
    return module.rpartition(".")[2].endswith("views")


def test_only_registration_imports_views(graph: Graph) -> None:
    found = {
        (module, target)
        for module, targets in graph.items()
        for target in targets
        if _is_views(target)
        # A package's init_app registers its blueprints; the factory calls the init_apps.
        and module not in {f"{target.rpartition('.')[0]}.blueprints", "ca_service.app"}
    }
    assert found <= VIEW_IMPORTS_LEFT, (
        f"imports of a views module: {sorted(found - VIEW_IMPORTS_LEFT)}"
    )
    assert found >= VIEW_IMPORTS_LEFT, f"gone, remove: {sorted(VIEW_IMPORTS_LEFT - found)}"


def _write(root: Path, files: Mapping[str, str]) -> None:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)


def test_graph_finds_circles_at_any_depth(tmp_path: Path) -> None:
    # The checker itself: a circle through a function-level import, relative imports and
    # ``from package import submodule``, and a package that only looks like one's parent.
    _write(
        tmp_path,
        {
            "pkg/__init__.py": "def init_app():\n    from pkg.sub import views\n",
            "pkg/sub/__init__.py": "",
            "pkg/sub/views.py": "from .. import service\n",
            "pkg/service.py": "import os\nfrom pkg.sub import helpers\n",
            "pkg/sub/helpers.py": "def late():\n    from pkg.sub.views import x\n",
            "pkg/leaf.py": "from pkg import service\n",
            "pkg/migrations/env.py": "from pkg import leaf\n",
        },
    )
    graph = import_graph(tmp_path, ["pkg"])
    assert "pkg.migrations.env" not in graph
    assert graph["pkg.leaf"] == {"pkg.service": 1}
    assert graph["pkg"] == {"pkg.sub.views": 2}
    circles = strongly_connected(graph)
    assert circles == [["pkg.service", "pkg.sub.helpers", "pkg.sub.views"]]
    assert one_circle(graph, circles[0]) == (
        "pkg.service -> pkg.sub.helpers (line 2) -> pkg.sub.views (line 2) -> pkg.service (line 1)"
    )
    assert strongly_connected(without(graph, ["pkg.sub.helpers"])) == []
    # Read with the packages, pkg/__init__.py importing its views (which import "the package"
    # back with ``from .. import service``) is a circle of its own.
    with_packages = import_graph(tmp_path, ["pkg"], with_packages=True)
    assert with_packages["pkg.leaf"] == {"pkg.service": 1, "pkg": 1}
    assert strongly_connected(without(with_packages, ["pkg.sub.helpers"])) == [
        ["pkg", "pkg.sub.views"]
    ]
