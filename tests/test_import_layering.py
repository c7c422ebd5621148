"""The package's modules import each other without cycles, counting imports inside functions.

A cycle that only works because one side imports lazily still ties the two modules into one
unit (neither can be read, tested or moved alone), so every ``import`` statement counts. The
graph is read with ``ast``; nothing is imported.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = "recbole_bbqrec"
ROOT = Path(__file__).resolve().parents[1] / PACKAGE


def module_names(root: Path = ROOT) -> dict[str, Path]:
    """``{"recbole_bbqrec.preprocess.writer": path, ...}`` for every .py file (packages by
    their ``__init__``)."""
    names = {}
    for path in root.rglob("*.py"):
        parts = list(path.relative_to(root.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        names[".".join(parts)] = path
    return names


def imported_modules(path: Path, module: str, known: set[str]) -> set[str]:
    """The package modules one file imports, anywhere in it (a package counts as its
    ``__init__``; a name imported from a package counts as that submodule when it is one)."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative import
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            targets = [base] + [f"{base}.{alias.name}" for alias in node.names]
        else:
            continue
        found |= {t for t in targets if t in known and t != module}
    return found


def import_graph(root: Path = ROOT) -> dict[str, set[str]]:
    names = module_names(root)
    return {module: imported_modules(path, module, set(names)) for module, path in names.items()}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle as ``[a, b, ..., a]``, or None (iterative depth-first search)."""
    state: dict[str, int] = {}  # 1 = on the current path, 2 = finished
    for start in sorted(graph):
        if state.get(start):
            continue
        path, stack = [start], [iter(sorted(graph[start]))]
        state[start] = 1
        while stack:
            nxt = next(stack[-1], None)
            if nxt is None:
                state[path.pop()] = 2
                stack.pop()
            elif state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            elif not state.get(nxt):
                state[nxt] = 1
                path.append(nxt)
                stack.append(iter(sorted(graph.get(nxt, ()))))
    return None


def test_the_package_has_no_import_cycle():
    graph = import_graph()
    assert len(graph) > 50  # the walk found the package
    cycle = find_cycle(graph)
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_the_check_finds_a_lazy_cycle(tmp_path):
    package = tmp_path / PACKAGE
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "a.py").write_text("from recbole_bbqrec.b import g\n")
    (package / "b.py").write_text("def g():\n    from recbole_bbqrec import a\n")
    (package / "c.py").write_text("from . import a\n")
    graph = import_graph(package)
    assert graph["recbole_bbqrec.c"] == {"recbole_bbqrec", "recbole_bbqrec.a"}
    assert find_cycle(graph) == ["recbole_bbqrec.a", "recbole_bbqrec.b", "recbole_bbqrec.a"]


def test_the_training_pipeline_does_not_import_the_experiment_tools():
    """``quick_start`` and everything it reaches run without ``experiments/`` (the tools
    drive the pipeline, never the other way round)."""
    graph = import_graph()
    reached, todo = set(), [f"{PACKAGE}.quick_start"]
    while todo:
        module = todo.pop()
        if module not in reached:
            reached.add(module)
            todo.extend(graph[module])
    assert f"{PACKAGE}.trainer" in reached  # the walk follows the pipeline
    assert not sorted(m for m in reached if m.startswith(f"{PACKAGE}.experiments"))


def test_the_model_reads_stage1_through_the_dataset():
    """BBQRec takes its IDs and codebooks from the dataset: it imports neither stage 1 nor a
    trainer or checkpoint loader."""
    imported = import_graph()[f"{PACKAGE}.model.sequential_recommender.bbqrec"]
    assert not imported & {f"{PACKAGE}.tokenizers.stage1", f"{PACKAGE}.trainer",
                           f"{PACKAGE}.checkpoints", f"{PACKAGE}.tokenizers.trainer"}
