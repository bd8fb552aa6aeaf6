"""The package's shape, checked: the pure core has no I/O, no import circle, modules stay
small, and a command imports only what it uses."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "ovsvnet"

#: Modules whose logic is unit-tested without root: they may import only each other and
#: the standard library's non-I/O parts.
PURE = {
    "ovsvnet.errors", "ovsvnet.model", "ovsvnet.vnetid", "ovsvnet.sxp", "ovsvnet.config",
    "ovsvnet.flows", "ovsvnet.ipsec", "ovsvnet.announce", "ovsvnet.peertable",
    "ovsvnet.desired", "ovsvnet.rules", "ovsvnet.libvirt", "ovsvnet.addresses",
    "ovsvnet.registry.model", "ovsvnet.doctor.findings", "ovsvnet.owners",
    "ovsvnet.metrics", "ovsvnet.map.model", "ovsvnet.map.dot", "ovsvnet.map.html",
}
#: What "I/O" means for the pure core: processes, sockets, netlink, the OVSDB IDL.
FORBIDDEN = {"subprocess", "socket", "select", "pyroute2", "ovs", "fcntl", "urllib", "http"}
MAX_LINES = 500
LONG_REASON = "Long on purpose:"


def module_name(path: Path) -> str:
    rel = path.relative_to(PACKAGE.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


MODULES = {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def imports(path: Path) -> set[str]:
    """Every module ``path`` imports (module level and inside functions), except imports
    under ``if TYPE_CHECKING:``; ``from a import b`` counts as ``a.b`` when that is a module."""
    tree = ast.parse(path.read_text())
    skip: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            skip |= {id(n) for n in ast.walk(node)}
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1]
                                + ([node.module] if node.module else []))
            for alias in node.names:
                sub = f"{base}.{alias.name}"
                found.add(sub if sub in MODULES else base)
    return found


GRAPH = {name: {m for m in imports(path) if m in MODULES and m != name}
         for name, path in MODULES.items()}


def test_every_pure_module_exists():
    assert set(MODULES) >= PURE, PURE - set(MODULES)


@pytest.mark.parametrize("name", sorted(PURE))
def test_the_pure_core_does_no_io(name):
    for imported in imports(MODULES[name]):
        top = imported.split(".")[0]
        if top == "ovsvnet":
            assert imported in PURE, f"{name} imports {imported}, which is not pure"
        else:
            assert top not in FORBIDDEN, f"{name} imports {imported}"


def test_no_import_circle():
    """Tarjan's strongly connected components: every component is a single module."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    circles: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in GRAPH[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                circles.append(sorted(component))

    for v in GRAPH:
        if v not in index:
            visit(v)
    assert circles == []


def test_layers_point_one_way():
    """Only the CLI imports the lab; nothing below the CLI imports the CLI; the pure core
    and the system layer know nothing of vnets' storage, the agent or the registry."""
    for name, deps in GRAPH.items():
        for dep in deps:
            if not name.startswith(("ovsvnet.cli", "ovsvnet.__main__")):
                assert not dep.startswith("ovsvnet.cli"), f"{name} imports {dep}"
            if not name.startswith(("ovsvnet.cli", "ovsvnet.lab")):
                assert not dep.startswith("ovsvnet.lab"), f"{name} imports {dep}"
            if name.startswith("ovsvnet.system"):
                assert dep in PURE or dep.startswith("ovsvnet.system"), f"{name} -> {dep}"
            if name.startswith(("ovsvnet.ops", "ovsvnet.system")):
                assert not dep.startswith(("ovsvnet.agent", "ovsvnet.registry")), \
                    f"{name} imports {dep}"


@pytest.mark.parametrize("name", sorted(MODULES))
def test_modules_stay_small(name):
    text = MODULES[name].read_text()
    lines = text.count("\n")
    if lines > MAX_LINES:
        doc = ast.get_docstring(ast.parse(text)) or ""
        assert LONG_REASON in doc, f"{name} has {lines} lines and no reason at its top"


def test_command_line_imports_only_what_a_command_uses():
    code = ("import sys, ovsvnet.cli; "
            "print('\\n'.join(sorted(m for m in sys.modules if m.startswith(('ovsvnet', "
            "'pyroute2')))))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, timeout=60).stdout.split()
    for heavy in ("ovsvnet.lab", "ovsvnet.registry", "ovsvnet.doctor", "pyroute2",
                  "ovsvnet.agent"):
        assert not [m for m in out if m == heavy or m.startswith(heavy + ".")], \
            f"import ovsvnet.cli imports {heavy}"


def test_no_runtime_module_imports_pytest():
    for name, path in MODULES.items():
        assert "pytest" not in {m.split(".")[0] for m in imports(path)}, name
