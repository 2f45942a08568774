"""No import circle runs through the verification core, the trust-anchor service or the tax-CRL
code: counting every import, also those made lazily inside functions (read from the source
with ``ast``, so an import a test never reaches still counts)."""

from __future__ import annotations

import ast
import importlib.util
from collections import deque
from pathlib import Path

import ca_service

_ROOT = Path(ca_service.__file__).resolve().parent
_CHECKED = (
    "ca_service.auth.verification",
    "ca_service.auth.trust_cache",
    "ca_service.binding.service",
    "ca_service.binding.tax_crls",
    "ca_service.binding.models",
)


def _modules() -> dict[str, Path]:
    modules = {}
    for path in _ROOT.rglob("*.py"):
        parts = ["ca_service", *path.relative_to(_ROOT).with_suffix("").parts]
        if parts[-1] == "__init__":
            parts.pop()
        modules[".".join(parts)] = path
    return modules


def _imports(path: Path, modules: dict[str, Path]) -> set[str]:
    """The ca_service modules ``path`` imports anywhere in it (``from package import module``
    counts as importing the module, ``from module import name`` as importing the module)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            submodules = {f"{node.module}.{alias.name}" for alias in node.names} & modules.keys()
            found.update(submodules)
            if len(submodules) < len(node.names):
                found.add(node.module)
    return found & modules.keys()


def _cycle_through(start: str, graph: dict[str, set[str]]) -> list[str] | None:
    """The shortest import path from ``start`` back to itself, or None."""
    came_from: dict[str, str] = {}
    queue = deque([start])
    while queue:
        module = queue.popleft()
        for imported in sorted(graph[module]):
            if imported == start:
                path = [module]
                while path[-1] != start:
                    path.append(came_from[path[-1]])
                return [*reversed(path), start]
            if imported not in came_from:
                came_from[imported] = module
                queue.append(imported)
    return None


def test_no_import_circle_runs_through_the_trust_code() -> None:
    modules = _modules()
    graph = {name: _imports(path, modules) - {name} for name, path in modules.items()}
    circles = {name: _cycle_through(name, graph) for name in _CHECKED}
    assert circles == dict.fromkeys(_CHECKED), circles


def test_tax_crls_are_named_so() -> None:
    # Our own CRLs are ca_service.revocation's; the tax CAs' live in binding/ under a name
    # that says so.
    assert importlib.util.find_spec("ca_service.binding.tax_crls") is not None
    assert importlib.util.find_spec("ca_service.binding.crls") is None
