"""The package's imports point one way: core <- model <- engine <- keep <- web <- pyapi <- cli.

Read from the source with `ast` (nothing is imported), so a violation fails here whether or not
the import would happen to work. Also: no import circles between modules, absolute imports only,
and no imports inside functions except the optional dependencies named below.
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "llmvis"
LAYERS = ["core", "model", "engine", "keep", "web", "pyapi", "cli"]  # each may import only those before it
LAZY_OK = {
    "gguf",   # only .gguf model sources need it
    "tqdm",   # only the CLI's progress bars
    "pandas",  # only score_many's DataFrame form
}
LAZY_OK_IN = {("llmvis/__init__.py", "llmvis"): "`import llmvis` stays cheap: pyapi (torch) loads on first use"}


def module_name(path: Path) -> str:
    rel = path.relative_to(PACKAGE.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def layer_of(module: str) -> int | None:
    """Index in LAYERS of an llmvis module; None for the root package (llmvis, llmvis.__main__)."""
    parts = module.split(".")
    if len(parts) < 2 or parts[1] == "__main__":
        return None
    return LAYERS.index(parts[1])


def imports(tree: ast.AST):
    """(module imported, line, inside a function?, relative?) for every import in a module."""
    out = []

    def visit(node, in_func: bool):
        for child in ast.iter_child_nodes(node):
            inner = in_func or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
            if isinstance(child, ast.Import):
                out.extend((a.name, child.lineno, in_func, False) for a in child.names)
            elif isinstance(child, ast.ImportFrom):
                if child.module == "__future__":
                    continue
                base = child.module or ""
                if child.level == 0 and base == "llmvis":  # `from llmvis import pyapi` names a module
                    out.extend((f"llmvis.{a.name}" if (PACKAGE / a.name).exists() or (PACKAGE / f"{a.name}.py").exists()
                                else "llmvis", child.lineno, in_func, False) for a in child.names)
                elif child.level == 0 and base.startswith("llmvis."):
                    for a in child.names:  # `from llmvis.web import serialize` imports llmvis.web.serialize
                        sub = f"{base}.{a.name}"
                        is_mod = (PACKAGE.parent / Path(*sub.split("."))).with_suffix(".py").exists()
                        out.append((sub if is_mod else base, child.lineno, in_func, False))
                else:
                    out.append((base, child.lineno, in_func, child.level > 0))
            visit(child, inner)

    visit(tree, False)
    return out


def check(sources: dict[str, str]) -> list[str]:
    """Every rule broken by these sources ({path relative to the repo: text}), as messages."""
    problems = []
    graph: dict[str, set[str]] = {}
    for rel, text in sources.items():
        path = PACKAGE.parent / rel
        mod = module_name(path)
        mine = layer_of(mod)
        graph.setdefault(mod, set())
        for target, line, in_func, relative in imports(ast.parse(text)):
            where = f"{rel}:{line}"
            if relative:
                problems.append(f"{where}: relative import (use `from llmvis.<package>...`)")
                continue
            is_ours = target == "llmvis" or target.startswith("llmvis.")
            if in_func:
                root = target.split(".")[0]
                if root not in LAZY_OK and (rel, target.rsplit(".", 1)[0]) not in LAZY_OK_IN:
                    problems.append(f"{where}: import of {target} inside a function")
                continue
            if not is_ours or target == "llmvis":
                continue
            graph[mod].add(target)
            theirs = layer_of(target)
            if mine is not None and theirs is not None and theirs > mine:
                problems.append(f"{where}: {mod} ({LAYERS[mine]}) imports {target} ({LAYERS[theirs]}), "
                                f"against the direction {' <- '.join(LAYERS)}")
    problems.extend(f"import circle: {' -> '.join(c)}" for c in cycles(graph))
    return problems


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Import circles between modules (a package's __init__ counts as its own module)."""
    found, state, stack = [], {}, []

    def dfs(node):
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                found.append(stack[stack.index(nxt):] + [nxt])
            elif nxt not in state:
                dfs(nxt)
        stack.pop()
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            dfs(node)
    return found


def package_sources() -> dict[str, str]:
    return {str(p.relative_to(PACKAGE.parent)): p.read_text(encoding="utf-8") for p in sorted(PACKAGE.rglob("*.py"))}


def test_every_module_is_in_a_layer():
    for rel in package_sources():
        mod = module_name(PACKAGE.parent / rel)
        if mod in ("llmvis", "llmvis.__main__"):
            continue
        assert mod.split(".")[1] in LAYERS, f"{rel} is in no layer of {LAYERS}"


def test_imports_point_one_way_without_circles_or_function_imports():
    problems = check(package_sources())
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("rel, text, expected", [
    ("llmvis/core/metrics.py", "from llmvis.engine.run import Run\n", "against the direction"),
    ("llmvis/keep/bundle.py", "from llmvis.web import serialize\n", "against the direction"),
    ("llmvis/engine/engine.py", "def f():\n    from llmvis.keep import library\n", "inside a function"),
    ("llmvis/web/app.py", "from .errors import x\n", "relative import"),
])
def test_the_checker_catches_each_kind_of_violation(rel, text, expected):
    sources = package_sources() | {rel: text}
    assert any(expected in p and rel in p for p in check(sources)), check(sources)


def test_the_checker_catches_a_circle():
    sources = package_sources() | {
        "llmvis/web/errors.py": "from llmvis.web import app\n",  # app imports errors
    }
    assert any(p.startswith("import circle") and "llmvis.web.errors" in p for p in check(sources))


def test_only_the_engine_touches_the_model_or_its_lock():
    """Routes, persistence, the CLI and the Python API go through Engine methods: none of them
    takes the model lock or calls the model itself (`<engine>.lm.lock`, `<engine>.lm.model`)."""
    offenders = []
    for rel, text in package_sources().items():
        if rel.startswith(("llmvis/core/", "llmvis/model/", "llmvis/engine/")):
            continue
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, ast.Attribute) and node.attr in ("lock", "model") \
                    and isinstance(node.value, ast.Attribute) and node.value.attr == "lm":
                offenders.append(f"{rel}:{node.lineno}: .lm.{node.attr}")
    assert not offenders, "\n".join(offenders)
