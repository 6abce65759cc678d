"""No import cycle inside hamfast/: every module-to-module import (at the top or inside a function),
read from the source with ast, forms a graph without cycles."""
import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
NATIVE = {"hamfast._C"}  # the compiled op library (setup.py): a module that imports nothing of ours


def module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def import_graph(package: Path) -> dict[str, set[str]]:
    """module -> the hamfast modules it imports by name (``from pkg import sub`` counts as ``pkg.sub``
    when ``sub`` is a module; parent packages are not counted, as Python runs them first anyway)."""
    files = {module_name(p, package.parent): p for p in package.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in files.items():
        edges = set()
        here = name if path.name == "__init__.py" else name.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    anchor = here.split(".")[: len(here.split(".")) - node.level + 1]
                    base = ".".join(anchor + ([base] if base else []))
                subs = [f"{base}.{alias.name}" for alias in node.names]
                targets = [sub for sub in subs if sub in files or sub in NATIVE] or [base]
                if len(targets) < len(subs):
                    targets.append(base)
            else:
                continue
            edges |= {t for t in targets if t in files and t != name}
        graph[name] = edges
    return graph


def find_cycle(graph: dict[str, set[str]]):
    """One cycle as a list of modules (first == last), or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node):
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            if nxt not in state:
                found = visit(nxt)
                if found:
                    return found
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state:
            found = visit(node)
            if found:
                return found
    return None


def test_the_checker_finds_a_cycle(tmp_path):
    pkg = tmp_path / "hamfast"
    (pkg / "experiments").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "experiments" / "__init__.py").write_text("")
    (pkg / "experiments" / "runner.py").write_text("def f():\n    from hamfast.experiments import batching\n")
    (pkg / "experiments" / "batching.py").write_text("from .runner import f\n")
    cycle = find_cycle(import_graph(pkg))
    assert cycle is not None and set(cycle) == {"hamfast.experiments.runner", "hamfast.experiments.batching"}


def test_no_import_cycle_inside_hamfast():
    graph = import_graph(ROOT / "hamfast")
    assert "hamfast.experiments.batching" in graph["hamfast.experiments.runner"]  # the walk sees imports
    cycle = find_cycle(graph)
    assert cycle is None, "import cycle: " + " -> ".join(cycle)
