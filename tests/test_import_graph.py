"""No two modules of raysweep import each other, directly or around a circle.

Function-level ("late") imports count too: they hide a circle from Python, not from a reader,
who must then hold both modules in mind to understand either. A package's `__init__` importing
its own submodules so that they register themselves (strategies/) is not a circle.
"""

import ast
from pathlib import Path

import raysweep.cli

SRC = Path(raysweep.cli.__file__).parent


def module_name(path: Path) -> str:
    parts = path.relative_to(SRC.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports() -> dict[str, set[str]]:
    """Each module's raysweep imports, resolved to modules (a name imported from a package that
    is a submodule of it counts as that submodule)."""
    files = {module_name(p): p for p in SRC.rglob("*.py")}
    graph = {}
    for name, path in files.items():
        deps = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                deps |= {a.name for a in node.names if a.name in files}
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0 and node.module in files:
                subs = {f"{node.module}.{a.name}" for a in node.names} & files.keys()
                deps |= subs or {node.module}
                if len(subs) < len(node.names):  # some names are the package's own
                    deps.add(node.module)
        package = name if files[name].name == "__init__.py" else None
        # A package __init__ importing its own submodules (to register them) is not a dependency.
        graph[name] = {d for d in deps - {name} if not (package and d.startswith(package + "."))}
    return graph


def circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Every strongly connected component of more than one module (Tarjan's algorithm)."""
    index, low, stack, on, out = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def test_no_import_circles():
    assert circles(imports()) == []


def test_the_check_finds_a_circle():
    assert circles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    graph = imports()
    assert "raysweep.config" in graph["raysweep.sweep"]  # the graph sees real imports
    assert not any(d.startswith("raysweep.strategies.") for d in graph["raysweep.strategies"])


# What llm/ may use from the rest of raysweep: the foundations every layer shares. The LLM client
# library serves the sweep's stages (generation, annotation); it never reaches up into them.
LLM_MAY_IMPORT = {"raysweep.errors", "raysweep.loader", "raysweep.hashing", "raysweep.console", "raysweep.runtime"}


def test_llm_imports_nothing_of_the_sweeps_stages():
    graph = imports()
    upward = {(m, d) for m, deps in graph.items() if m == "raysweep.llm" or m.startswith("raysweep.llm.")
              for d in deps if not (d == "raysweep.llm" or d.startswith("raysweep.llm.")) and d not in LLM_MAY_IMPORT}
    assert upward == set()


def test_check_and_status_do_not_import_the_tune_driver():
    """`raysweep check` and `status` read files: the Tune driver (and Ray Tune) stays out of their imports."""
    graph = imports()

    def reach(start: str) -> set[str]:
        seen, todo = set(), [start]
        while todo:
            for d in graph.get(todo.pop(), ()):
                if d not in seen:
                    seen.add(d)
                    todo.append(d)
        return seen

    for module in ("raysweep.status", "raysweep.preflight", "raysweep.inputs"):
        assert "raysweep.driver" not in reach(module) and "raysweep.sweep" not in reach(module), module
