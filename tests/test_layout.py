"""The package's layout stays readable: every subpackage says what its modules hold, and
functions stay small enough to read (limits that measure ideas, not files)."""

import ast
import re
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "proxyless"
MAX_LINES, MAX_PARAMS = 60, 7

# Functions over a limit, each with the reason it is one idea all the same. A new entry needs
# as good a reason; a function that shrinks below the limits must leave the list.
EXCEPTIONS = {
    # constructors that take a loop's settings one by one, as callers name them
    "data/batches.py:Batches.__init__": "an iterator's settings, each a keyword",
    "engine/epochs.py:Epochs.__init__": "the run skeleton's settings, each a keyword",
    "search/loop.py:SearchEpoch.__init__": "the search's collaborators, each a keyword",
    # one call that forwards what its caller holds to the one place that uses it
    "data/loading.py:load_data": "every data option of the command line, as keywords",
    "search/loop.py:search": "the search job's inputs, as keywords",
    "search/loop.py:_search": "the search job's inputs, as keywords",
    "search/job.py:search_job": "the search job's inputs: data, settings, pricing, folder",
    "search/outputs.py:write_search_outputs": "a finished search's result, pricing, folder",
    "search/retarget.py:retarget": "the re-targeting's inputs, as keywords (search's twin)",
    "search/retarget.py:_retarget": "the re-targeting's inputs, as keywords (search's twin)",
    "search/retarget.py:retarget_job": "the re-targeting job's inputs (search_job's twin)",
    "deploy/export.py:export_and_check": "every export option of the command line",
    "training/trainer.py:train_epoch": "one epoch's inputs, shared by search and training",
    "training/trainer.py:_train_network": "the training loop, step by step",
    "pipeline/run.py:_run_pipeline": "the job's steps in order, each a call",
    "pipeline/run.py:_run_search": "the search step's inputs, as keywords",
    "cli/options.py:resolve_batch_size": "--batch-size auto, read, probed and reported",
}


def _functions() -> dict[str, tuple[int, int]]:
    """'module:Class.function' -> (lines, parameters, self and cls not counted)."""
    found = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        _visit(ast.parse(path.read_text()), f"{path.relative_to(PACKAGE)}:", found)
    return found


def _visit(node: ast.AST, prefix: str, found: dict[str, tuple[int, int]]) -> None:
    for child in ast.iter_child_nodes(node):
        if isinstance(child, ast.ClassDef):
            _visit(child, f"{prefix}{child.name}.", found)
        elif isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)):
            a = child.args
            names = [x.arg for x in a.posonlyargs + a.args + a.kwonlyargs]
            params = len(names) + bool(a.vararg) + bool(a.kwarg)
            params -= bool(names and names[0] in ("self", "cls"))
            found[f"{prefix}{child.name}"] = (child.end_lineno - child.lineno + 1, params)
            _visit(child, f"{prefix}{child.name}.", found)


def test_functions_are_short_and_take_few_parameters():
    functions = _functions()
    over = {name for name, (lines, params) in functions.items()
            if lines > MAX_LINES or params > MAX_PARAMS}
    unexplained = sorted(over - set(EXCEPTIONS))
    assert not unexplained, (f"over {MAX_LINES} lines or {MAX_PARAMS} parameters: "
                             f"{[(n, functions[n]) for n in unexplained]}")
    stale = sorted(set(EXCEPTIONS) - over)
    assert not stale, f"no longer over the limits (drop them from EXCEPTIONS): {stale}"


def test_every_subpackage_lists_its_modules():
    """The package's docstring names its subpackages (`model/`) and top-level modules
    (`files.py`); each subpackage's docstring names its modules; no name is left over."""
    for init in sorted(PACKAGE.rglob("__init__.py")):
        folder = init.parent
        doc = ast.get_docstring(ast.parse(init.read_text())) or ""
        named = set(re.findall(r"\b(\w+\.py)\b", doc)) | set(re.findall(r"`(\w+/)`", doc))
        present = {p.name for p in folder.glob("*.py") if p.name != "__init__.py"}
        if folder == PACKAGE:
            present |= {p.name + "/" for p in folder.iterdir() if (p / "__init__.py").is_file()}
        where = str(folder.relative_to(PACKAGE.parent))
        assert named == present, (f"{where}/__init__.py: not listed {sorted(present - named)}, "
                                  f"listed but missing {sorted(named - present)}")
