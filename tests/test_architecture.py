"""The library's layering, read from its own imports (AST, nothing executed): the CLI alone knows argparse,
inference never imports training code, no import circles, no private names across modules."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PKG = Path(__file__).resolve().parents[1] / "wm_jax"


def module_name(path: Path) -> str:
    parts = path.relative_to(PKG.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in sorted(PKG.rglob("*.py"))}


def imports(name: str) -> list[tuple[str, list[str], int]]:
    """(imported module, names taken from it, line) for every import statement of module `name`, function-local
    ones included (not those under ``if TYPE_CHECKING:``)."""
    tree = ast.parse(MODULES[name].read_text())
    for node in ast.walk(tree):  # typing-only imports (`if TYPE_CHECKING:`) run nothing: left out
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            node.body = []
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [(a.name, [], node.lineno) for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out.append((node.module, [a.name for a in node.names], node.lineno))
    return out


def internal_deps(name: str) -> set[str]:
    """The wm_jax modules `name` imports (a `from wm_jax.x import y` where y is a module counts as wm_jax.x.y)."""
    deps = set()
    for mod, names, _ in imports(name):
        if not mod.startswith("wm_jax"):
            continue
        subs = {f"{mod}.{n}" for n in names if f"{mod}.{n}" in MODULES}
        deps |= subs or {mod}
        if subs and len(subs) < len(names):
            deps.add(mod)
    return {d for d in deps if d in MODULES and d != name}


def closure(roots: list[str]) -> set[str]:
    seen, todo = set(), list(roots)
    while todo:
        m = todo.pop()
        if m not in seen:
            seen.add(m)
            todo += internal_deps(m)
    return seen


def test_the_import_graph_is_read():
    assert len(MODULES) > 40 and "wm_jax.io" in internal_deps("wm_jax.agent")
    assert "wm_jax.train.vae" in closure(["wm_jax.stages"])  # the checker sees function-local imports too


def test_only_the_cli_knows_argparse():
    """Nothing but wm_jax/cli/ imports argparse or the CLI (wm_jax.report reads the command table to render the
    README's CLI table: documentation of the CLI, the one exception)."""
    offenders = [f"{m}:{line}" for m in MODULES if not m.startswith("wm_jax.cli")
                 for mod, _, line in imports(m)
                 if mod == "argparse" or (mod.startswith("wm_jax.cli") and m != "wm_jax.report")]
    assert offenders == []


def test_torch_stays_in_the_benchmark_scripts():
    """PyTorch is an optional baseline: only benchmarks/torch_*.py import it, in their own process."""
    offenders = [f"{m}:{line}" for m in MODULES for mod, _, line in imports(m) if mod.split(".")[0] == "torch"]
    assert offenders == []


@pytest.mark.parametrize("root", ["wm_jax.agent", "wm_jax.evaluation", "wm_jax.run", "wm_jax.io"])
def test_inference_imports_no_training_code(root):
    assert sorted(m for m in closure([root]) if m.startswith("wm_jax.train")) == []


def test_no_import_circles():
    """Depth-first search for a cycle over every wm_jax import (function-local ones included)."""
    graph = {m: internal_deps(m) for m in MODULES}
    # a package's __init__ importing its own submodules lazily is not a circle of the code's layering
    graph = {m: {d for d in ds if not d.startswith(m + ".")} for m, ds in graph.items()}
    state: dict[str, int] = {}
    cycles = []

    def visit(m: str, path: list[str]) -> None:
        state[m] = 1
        for d in sorted(graph[m]):
            if state.get(d) == 1:
                cycles.append(path[path.index(d):] + [d] if d in path else [m, d])
            elif d not in state:
                visit(d, path + [d])
        state[m] = 2

    for m in sorted(graph):
        if m not in state:
            visit(m, [m])
    assert cycles == []


def test_no_private_names_cross_modules():
    offenders = [f"{m}:{line} imports {n} from {mod}" for m in MODULES for mod, names, line in imports(m)
                 for n in names if n.startswith("_") and not n.startswith("__")]
    assert offenders == []


def test_functions_stay_short():
    """Every function under ~60 lines (a docstring-heavy signature may take a few more)."""
    long = []
    for m, path in MODULES.items():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                n = node.end_lineno - node.lineno + 1
                if n > 70:
                    long.append(f"{m}.{node.name}: {n} lines")
    assert long == []
