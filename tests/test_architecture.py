"""The layout holds: no import cycle in the library, Airflow only in its corner, no dev tools at run time."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PLUGINS = Path(__file__).resolve().parents[1] / "plugins"
PACKAGE = PLUGINS / "loyalflow"
# The only library modules that may import Airflow: the DAG corner and the hooks that read Connections.
AIRFLOW_ALLOWED = ("loyalflow.airflow", "loyalflow.hooks")
DEV_TOOLS = (
    "tools",
    "loyalflow.standins",
    "loyalflow.chaos",
    "loyalflow.bench_send",
    "loyalflow.bench_pipeline",
)


def module_name(path: Path) -> str:
    """``plugins/loyalflow/decide/caps.py`` -> ``loyalflow.decide.caps`` (a package is its __init__)."""
    parts = list(path.relative_to(PLUGINS).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
    """Every module of the library by dotted name."""
    return {module_name(p): p for p in PACKAGE.rglob("*.py")}


def imported(path: Path, known: set[str]) -> set[str]:
    """Every module ``path`` imports, anywhere in the file (function-level imports count too)."""
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            out.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            for alias in node.names:
                candidate = f"{node.module}.{alias.name}"
                out.add(candidate if candidate in known else node.module)
    return out


def graph() -> dict[str, set[str]]:
    """Library module -> library modules it imports."""
    mods = modules()
    known = set(mods)
    return {
        name: {m for m in imported(path, known) if m in known and m != name} for name, path in mods.items()
    }


def find_cycle(edges: dict[str, set[str]]) -> list[str] | None:
    """One import cycle as a list of modules (first repeated last), or None."""
    state: dict[str, int] = {}  # 1 = on the stack, 2 = done
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(edges.get(node, ())):
            if state.get(nxt) == 1:
                return [*stack[stack.index(nxt) :], nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(edges):
        if node not in state and (found := visit(node)):
            return found
    return None


def test_the_walker_sees_a_cycle() -> None:
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_no_import_cycle_in_the_library() -> None:
    edges = graph()
    assert "loyalflow.pipeline" in edges and edges["loyalflow.pipeline"], "the walker found no imports"
    assert find_cycle(edges) is None, f"import cycle: {' -> '.join(find_cycle(edges) or [])}"


def test_stages_do_not_import_the_pipeline() -> None:
    edges = graph()
    users = sorted(m for m, deps in edges.items() if "loyalflow.pipeline" in deps)
    assert all(m.startswith(("loyalflow.ops", "loyalflow.airflow", "loyalflow.demo")) for m in users), users


@pytest.mark.parametrize("name", sorted(modules()))
def test_only_the_airflow_corner_imports_airflow(name: str) -> None:
    airflow = {m for m in imported(modules()[name], set()) if m == "airflow" or m.startswith("airflow.")}
    if not name.startswith(AIRFLOW_ALLOWED):
        assert not airflow, (
            f"{name} imports {sorted(airflow)}; move that code to loyalflow/airflow or hooks.py"
        )


@pytest.mark.parametrize("name", sorted(modules()))
def test_runtime_never_imports_dev_tools(name: str) -> None:
    bad = {m for m in imported(modules()[name], set()) if m.startswith(DEV_TOOLS)}
    assert not bad, f"{name} imports development tools {sorted(bad)}"


def test_dev_tools_live_outside_the_package() -> None:
    names = {p.stem for p in PACKAGE.rglob("*.py")}
    assert not names & {"chaos", "bench_send", "bench_pipeline", "sendgrid_standin"}
    assert not (PACKAGE / "standins").exists()
