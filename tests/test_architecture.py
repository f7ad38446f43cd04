"""The house rules of docs/ARCHITECTURE.md, checked on the source: imports point one way with no
circle, the public API is keyword-only after the task, and nothing refers outside the repository."""
import ast
import inspect
import subprocess
from pathlib import Path

import pytest

import tuner

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("lodo", "tasks", "tuner", "cli")


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports() -> dict[str, set[str]]:
    """Every project module -> the project modules it imports anywhere (top level or in a function)."""
    files = [p for pkg in PACKAGES[:-1] for p in (ROOT / pkg).rglob("*.py")] + [ROOT / "cli.py"]
    graph = {}
    for path in files:
        deps = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module] if isinstance(node, ast.ImportFrom) and node.module and not node.level else []
            deps.update(n for n in names if n.split(".")[0] in PACKAGES)
        graph[_module_name(path)] = deps
    return graph


# L2L's meta-training sits beside the L2L optimizer and draws its bowls from tasks/: the one
# module of lodo/ that may import tasks/ (nothing in lodo/ imports it).
SIDEWAYS = {"lodo.meta_train": ("lodo", "tasks")}


def test_lodo_and_tasks_import_nothing_above_them():
    graph = _imports()
    for module, deps in graph.items():
        allowed = SIDEWAYS.get(module) or {"lodo": ("lodo",), "tasks": ("tasks",)}.get(module.split(".")[0])
        if allowed:
            assert all(d.split(".")[0] in allowed for d in deps), (module, deps)
    assert not any("lodo.meta_train" in deps for m, deps in graph.items() if m.startswith("lodo")), \
        "lodo/ must not import its meta-training (it imports tasks/)"


def test_no_import_circle_between_project_modules():
    graph = {m: {d for d in deps if d != m} for m, deps in _imports().items()}
    graph = {m: {d for d in deps if d in graph} for m, deps in graph.items()}
    done, path = set(), []

    def visit(m):
        if m in path:
            pytest.fail("import circle: " + " -> ".join(path[path.index(m):] + [m]))
        if m in done:
            return
        path.append(m)
        for d in sorted(graph[m]):
            visit(d)
        path.pop()
        done.add(m)

    for m in sorted(graph):
        visit(m)


@pytest.mark.parametrize("name", ["run", "tune", "evaluate"])
def test_the_api_is_keyword_only_after_the_task(name):
    params = list(inspect.signature(getattr(tuner, name)).parameters.values())
    positional = [p.name for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    assert positional == (["task", "hyperparameters"] if name == "evaluate" else ["task"])


# The notes the project started from lived beside the repository, never in it; the needles are
# built from parts so that this file does not match itself.
OUTSIDE = ("SP" + "EC.md", "SP" + "EC §", ".." + "/shared")


def test_nothing_refers_to_a_path_outside_the_repository():
    tracked = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    offenders = []
    for name in tracked.split():
        if not name.endswith((".py", ".md", ".yaml", ".toml")):
            continue
        text = (ROOT / name).read_text(encoding="utf-8", errors="replace")
        if any(needle in text for needle in OUTSIDE):
            offenders.append(name)
    assert offenders == []


def test_a_function_over_60_lines_says_why_in_its_docstring():
    """A long function is a smell unless it has a reason (a loop read top to bottom, a long docstring)."""
    offenders = []
    for pkg in PACKAGES[:-1]:
        for path in sorted((ROOT / pkg).rglob("*.py")) + ([ROOT / "cli.py"] if pkg == "lodo" else []):
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.end_lineno - node.lineno >= 60:
                    if "Long:" not in (ast.get_docstring(node) or ""):
                        offenders.append(f"{path.relative_to(ROOT)}:{node.lineno} {node.name}")
    assert not offenders, offenders
