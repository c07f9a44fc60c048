"""The architecture, checked: imports point one way, a job kind is one unit with one registry, and the control
plane and the dashboard tell kinds apart only through the kinds' declarations.

Imports are read from the source (an AST walk of every module, imports inside functions included), so an import
that a test run never executes is checked too.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from core.kinds import KINDS, SPEC_KINDS
from workers.handlers import handler_for

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("core", "storage", "scheduler", "workers", "latentfarm")  # latentfarm: the client's name
FRAMEWORKS = ("tensorflow", "keras", "jax", "torch")
# What the control plane may use of core: the job kinds' declarations and what they are validated with.
CORE_FOR_THE_CONTROL_PLANE = ("core.kinds", "core.params", "core.errors", "core.data_files", "core.models.defaults",
                              "core.dream", "core.memory")


def modules() -> Iterator[tuple[str, Path]]:
    for package in PACKAGES:
        for path in sorted((REPO / package).rglob("*.py")):
            parts = path.relative_to(REPO).with_suffix("").parts
            yield ".".join(parts[:-1] if parts[-1] == "__init__" else parts), path


def imports(name: str, path: Path) -> set[str]:
    """Every module ``name`` imports, at the top or inside a function (relative imports resolved)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: from the module's package, one level up per extra dot
                package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
                package = package[: len(package) - node.level + 1]
                base = ".".join(package + ([base] if base else []))
            found.add(base)
            found |= {f"{base}.{a.name}" for a in node.names}
    return found


def _under(module: str, roots: tuple[str, ...]) -> bool:
    return any(module == r or module.startswith(r + ".") for r in roots)


ALL = list(modules())


def test_the_walk_sees_every_package() -> None:
    seen = {name.split(".")[0] for name, _ in ALL}
    assert seen == set(PACKAGES)
    assert "scheduler.cli.farm" in dict(ALL) and "workers.handlers.train" in dict(ALL)


@pytest.mark.parametrize("name,path", ALL, ids=[n for n, _ in ALL])
def test_imports_point_one_way(name: str, path: Path) -> None:
    found = imports(name, path)
    layer = name.split(".")[0]
    if layer == "core":
        wrong = {m for m in found if _under(m, ("storage", "scheduler", "workers"))}
    elif layer == "storage":
        wrong = {m for m in found if _under(m, ("core", "scheduler", "workers") + FRAMEWORKS)}
    elif layer == "scheduler":
        wrong = {m for m in found if _under(m, ("workers",) + FRAMEWORKS)}
        wrong |= {m for m in found if _under(m, ("core",)) and not _under(m, CORE_FOR_THE_CONTROL_PLANE)
                  and m != "core"}
        if _under(name, ("scheduler.web",)):  # interfaces do not import each other
            wrong |= {m for m in found if _under(m, ("scheduler.cli", "scheduler.client"))}
        elif _under(name, ("scheduler.cli",)):  # the CLI only starts the web server
            wrong |= {m for m in found if _under(m, ("scheduler.web", "scheduler.client"))} - {
                "scheduler.web.server", "scheduler.web.server.serve"}
        elif _under(name, ("scheduler.client",)):  # the Python client: the control plane, or the API over HTTP
            wrong |= {m for m in found if _under(m, ("scheduler.cli", "scheduler.web"))}
        else:  # the control plane imports no interface
            wrong |= {m for m in found if _under(m, ("scheduler.cli", "scheduler.web", "scheduler.client"))}
    elif layer == "latentfarm":  # only the client's name: it imports the client and nothing else
        wrong = {m for m in found if _under(m, PACKAGES + FRAMEWORKS) and not _under(m, ("scheduler.client",))}
    else:
        wrong = set()
    assert not wrong, f"{name} imports {sorted(wrong)}"


def test_the_layer_check_catches_function_local_and_relative_imports(tmp_path: Path) -> None:
    sneaky = tmp_path / "sneaky.py"
    sneaky.write_text("def f():\n    from workers.models import load_model\n    import tensorflow as tf\n"
                      "    from ..web import app\n")
    assert {"workers.models.load_model", "tensorflow", "scheduler.web.app"} <= imports("scheduler.cli.sneaky", sneaky)


def test_every_kind_is_declared_once_and_runs_a_handler_or_expands() -> None:
    for name, kind in KINDS.items():
        assert kind.name == name
        if kind.expand is not None:
            assert kind.handler is None and kind.in_specs, name
        else:
            assert callable(handler_for(name)), name
    made = {k.made_by for k in KINDS.values() if k.made_by}
    # made by an expanding entry (a dream's tiles), or by a searchable one with `search:` (a search's study job)
    assert made <= {name for name, k in KINDS.items() if k.expand is not None or k.searchable}


def test_the_readme_kinds_table_lists_every_kind() -> None:
    readme = (REPO / "README.md").read_text()
    section = readme.split("## Job kinds", 1)[1].split("\n## ", 1)[0]
    table = next(block for block in section.split("\n\n") if block.startswith("| kind |"))
    first_cells = {cell for row in table.splitlines()[2:] for cell in re.findall(r"`(\w+)`", row.split("|")[1])}
    assert first_cells == set(SPEC_KINDS)
    for name, kind in KINDS.items():
        if kind.made_by:
            assert f"`{name}`" in table, name


def _string_constants(path: Path) -> set[str]:
    return {n.value for n in ast.walk(ast.parse(path.read_text())) if isinstance(n, ast.Constant)
            and isinstance(n.value, str)}


def test_the_control_plane_and_the_dashboard_name_no_kind() -> None:
    kinds = set(KINDS)
    for name, path in ALL:
        if _under(name, ("scheduler",)):
            named = _string_constants(path) & kinds
            assert not named, f"{name} names the kinds {sorted(named)}: say it in the kind's declaration"
    for template in (REPO / "scheduler" / "web" / "templates").glob("*.html"):
        assert "kind ==" not in template.read_text(), template.name


def test_core_has_no_import_cycle() -> None:
    """core's modules import each other without a cycle, function-local imports included (a cycle hidden behind
    a function-local import still makes one module half-initialised when the other imports it)."""
    core = {name: path for name, path in ALL if _under(name, ("core",))}
    graph = {name: {m if m in core else m.rsplit(".", 1)[0] for m in imports(name, path)} & set(core) - {name}
             for name, path in core.items()}
    done: set[str] = set()

    def visit(name: str, path: list[str]) -> None:
        if name in path:
            raise AssertionError("import cycle: " + " -> ".join(path[path.index(name):] + [name]))
        if name in done:
            return
        for child in sorted(graph[name]):
            visit(child, [*path, name])
        done.add(name)

    for name in sorted(core):
        visit(name, [])
