"""The layers import one way only, and no module imports itself back through others.

Read from the source with :mod:`ast`, so imports inside functions count as much as the ones at
the top of a file::

    text2emoji.core  <-  interp  <-  finetune  <-  text2emoji (the app)  <-  probes, bench
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("text2emoji", "interp", "finetune")


def _modules() -> dict[str, Path]:
    mods = {}
    for pkg in PACKAGES:
        for f in sorted((ROOT / pkg).rglob("*.py")):
            parts = list(f.relative_to(ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            mods[".".join(parts)] = f
    return mods


def _imports(mods: dict[str, Path]) -> dict[str, set[str]]:
    """Each project module's project imports (``from a import b`` counts as ``a.b`` when that is
    a module, else ``a``)."""
    graph: dict[str, set[str]] = {}
    for name, path in mods.items():
        targets: set[str] = set()
        is_pkg = path.name == "__init__.py"
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                targets.update(a.name for a in node.names)
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    pkg = name.split(".") if is_pkg else name.split(".")[:-1]
                    pkg = pkg[: len(pkg) - node.level + 1]
                    base = ".".join(pkg + ([base] if base else []))
                for a in node.names:
                    targets.add(f"{base}.{a.name}" if f"{base}.{a.name}" in mods else base)
        # importing a.b.c runs the package a.b's __init__ first: that is an import too (the
        # roots text2emoji, interp, finetune excepted: test_roots_import_nothing covers them)
        for t in list(targets):
            parts = t.split(".")
            targets.update(".".join(parts[:i]) for i in range(2, len(parts)))
        graph[name] = {t for t in targets if t.split(".")[0] in PACKAGES and t != name and t in mods}
    return graph


def _layer(module: str) -> str:
    if module == "text2emoji.core" or module.startswith("text2emoji.core."):
        return "core"
    return module.split(".")[0].replace("text2emoji", "app")


# what each layer may import besides itself
ALLOWED = {"core": set(), "interp": {"core"}, "finetune": {"core", "interp"}, "app": {"core", "interp", "finetune"}}


def test_layers_import_one_way():
    mods = _modules()
    graph = _imports(mods)
    bad = sorted(
        f"{a} -> {b}"
        for a, targets in graph.items()
        for b in targets
        if _layer(b) != _layer(a) and _layer(b) not in ALLOWED[_layer(a)]
    )
    assert not bad, "imports against the layering:\n" + "\n".join(bad)


def test_roots_import_nothing():
    """Importing text2emoji.core runs text2emoji/__init__.py: it must not pull in the app (the
    same for the other roots, which every module of theirs runs first)."""
    graph = _imports(_modules())
    assert graph["text2emoji"] == graph["interp"] == graph["finetune"] == set()


def test_no_import_cycles():
    graph = _imports(_modules())
    # Tarjan's strongly connected components; any component of more than one module is a cycle
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in graph:
                continue
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                cycles.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    assert not cycles, "import cycles:\n" + "\n".join(" <-> ".join(c) for c in cycles)


def test_checker_sees_lazy_imports():
    """The graph is not blind to imports inside functions (the kind that hid the old cycles)."""
    graph = _imports(_modules())
    assert "text2emoji.core.errors" in graph["text2emoji.core.config"]
    assert "interp.behaviour.evaluate" in graph["text2emoji.stages.evaluate"]  # imported inside a function
    assert "text2emoji.stages" in graph["text2emoji.stages.data"]  # the parent package runs first


def test_every_package_is_in_the_wheel():
    """pyproject.toml lists packages by hand: a new subpackage missing there would be absent
    from a regular (non-editable) install."""
    import tomllib

    listed = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    found = {".".join(p.parent.relative_to(ROOT).parts) for pkg in PACKAGES for p in (ROOT / pkg).rglob("__init__.py")}
    assert found <= listed, f"packages missing from pyproject.toml: {sorted(found - listed)}"
