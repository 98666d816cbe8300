"""The package's layers, read off its source with `ast`: no import goes in a circle, no module
imports a layer above its own (the command line sits on top, alone), imports inside functions
are only of heavy optional libraries. (How long a function may be: tests/test_layout.py.)"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "proxyless"

# Bottom to top: a module may import its own layer and the layers below it, never above. A
# name is a module or a package (`engine.epochs`, `latency`); a module is in the layer of its
# longest name here. Subpackages group modules by topic, layers by what they may import: the
# engine's plumbing is foundation, its epoch skeleton and memory model build on the model.
LAYERS: dict[str, tuple[str, ...]] = {
    "foundation": ("errors", "config_io", "files", "engine", "engine.runtime",
                   "engine.distributed", "engine.precision", "engine.tensorboard_log",
                   "engine.stopping", "engine.run_lock", "engine.divergence",
                   "engine.optimizer", "model", "pipeline", "pipeline.budgets", "training"),
    "data": ("model.space", "model.architecture", "data"),
    "building": ("model.ops", "model.layers", "engine.memory", "model.network",
                 "model.supernet", "model.shared_weights", "model.batchnorm", "engine.epochs",
                 "pipeline.plots"),
    "jobs": ("latency", "search", "training.trainer", "deploy", "pipeline.run_folders",
             "pipeline.pareto"),
    "pipeline": ("pipeline.run", "pipeline.report", "pipeline.results"),
    "command line": ("cli",),
}
# The facade (`proxyless/__init__.py`) re-exports from the layers below it for users.
FACADE = "proxyless"

# Libraries slow enough to import that `proxyless --help` must not pay for them, needed by a
# few commands only (measured: matplotlib and scipy ~0.3 s each, torch.utils.tensorboard
# 0.24 s after torch, Pillow 17 ms): the only imports allowed inside functions, each with a
# comment saying why.
HEAVY_OPTIONAL = {"onnx", "onnxruntime", "matplotlib", "scipy", "PIL", "tensorboard",
                  "torch.utils.tensorboard"}


def module_name(path: Path) -> str:
    parts = ["proxyless", *path.relative_to(PACKAGE).with_suffix("").parts]
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def imported(module: str, node: ast.Import | ast.ImportFrom) -> list[str]:
    """The absolute names a statement imports: modules where a name is a module."""
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    base = node.module or ""
    if node.level:
        here = module.split(".")
        if MODULES[module].name != "__init__.py":
            here = here[:-1]
        base = ".".join(here[:len(here) - node.level + 1] + ([base] if base else []))
    return [f"{base}.{a.name}" if f"{base}.{a.name}" in MODULES else base for a in node.names]


def top_level_imports(tree: ast.Module) -> list[ast.Import | ast.ImportFrom]:
    """Imports that run when the module is imported: in the module body, in its `try` and
    `if` blocks, but not under `if TYPE_CHECKING:` (never run)."""
    found, todo = [], list(tree.body)
    while todo:
        node = todo.pop()
        if isinstance(node, ast.Import | ast.ImportFrom):
            found.append(node)
        elif isinstance(node, ast.If):
            if not (isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING"):
                todo += node.body + node.orelse
        elif isinstance(node, ast.Try):
            todo += node.body + node.orelse + node.finalbody + [
                statement for handler in node.handlers for statement in handler.body]
    return found


def graph() -> dict[str, set[str]]:
    """Module -> the package's modules that importing it runs. Importing `a.b.c` from outside
    the package `a.b` also runs `a/b/__init__.py`; from inside it, the package is already
    being imported, so that is no edge."""
    edges: dict[str, set[str]] = {}
    for module, path in MODULES.items():
        targets = set()
        for node in top_level_imports(ast.parse(path.read_text())):
            for name in imported(module, node):
                if not name.startswith("proxyless"):
                    continue
                parts = name.split(".")
                for i in range(2, len(parts) + 1):
                    target = ".".join(parts[:i])
                    if target in MODULES and not (i < len(parts)
                                                  and module.startswith(target + ".")):
                        targets.add(target)
                if name == FACADE:
                    targets.add(FACADE)
        targets.discard(module)
        edges[module] = targets
    return edges


def find_cycle(edges: dict[str, set[str]]) -> list[str] | None:
    """One import circle, as the modules around it, or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for target in sorted(edges[node]):
            if state.get(target) == 1:
                return path[path.index(target):] + [target]
            if target not in state and (cycle := visit(target)):
                return cycle
        path.pop()
        state[node] = 2
        return None

    for start in sorted(edges):
        if start not in state and (cycle := visit(start)):
            return cycle
    return None


def layer_of(module: str) -> int:
    """The layer of `module`: that of its longest name in LAYERS."""
    parts = module.split(".")[1:] if module != FACADE else [""]
    for length in range(len(parts), 0, -1):
        name = ".".join(parts[:length])
        for rank, names in enumerate(LAYERS.values()):
            if name in names:
                return rank
    raise AssertionError(f"{module} is in no layer: add it to LAYERS in {__file__}")


def test_no_import_goes_in_a_circle():
    assert find_cycle(graph()) is None


def test_the_cycle_finder_finds_a_circle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_no_module_imports_a_layer_above_its_own():
    names = list(LAYERS)
    upward = [f"{module} ({names[layer_of(module)]}) imports {target} "
              f"({names[layer_of(target)]})"
              for module, targets in graph().items() if module != FACADE
              for target in targets if target != FACADE and layer_of(target) > layer_of(module)]
    assert upward == []


def test_the_library_never_imports_the_command_line():
    offenders = []
    for module, path in MODULES.items():
        if module.startswith("proxyless.cli"):
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import | ast.ImportFrom) and any(
                    name == "proxyless.cli" or name.startswith("proxyless.cli.")
                    for name in imported(module, node)):
                offenders.append(f"{module}:{node.lineno}")
    assert offenders == []


def test_imports_inside_functions_are_only_of_heavy_optional_libraries_and_say_why():
    problems = []
    for module, path in MODULES.items():
        source = path.read_text()
        lines = source.splitlines()
        tree = ast.parse(source)
        top = {id(node) for node in top_level_imports(tree)}
        skipped = {id(n) for node in ast.walk(tree) if isinstance(node, ast.If)
                   and isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING"
                   for n in ast.walk(node)}
        for node in ast.walk(tree):
            if (not isinstance(node, ast.Import | ast.ImportFrom) or id(node) in top
                    or id(node) in skipped):
                continue
            where = f"{module}:{node.lineno}"
            roots = {next((heavy for heavy in HEAVY_OPTIONAL if name.startswith(heavy + ".")
                           or name == heavy), name.split(".")[0])
                     for name in imported(module, node)}
            if not roots <= HEAVY_OPTIONAL:
                problems.append(f"{where} imports {sorted(roots)} inside a function")
            elif not any("#" in line for line in lines[max(0, node.lineno - 4):node.lineno]):
                problems.append(f"{where}: say in a comment why this import is deferred")
    assert problems == []
