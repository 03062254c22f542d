"""The house shows its architecture: a few subpackages by responsibility, imports that only go
down the layers (never up, never in a circle, lazy imports included), modules and functions
of a size a person reads at once, and only the CLI knows Typer and .env files."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

import dispatch
from tests.conftest import ROOT

SRC = ROOT / "src" / "dispatch"
# Lowest first: a module may import from its own layer or below, never above.
LAYERS = (
    {"errors", "addresses", "untrusted", "files", "textfiles", "settings"},
    {"content", "lists", "state"},
    {"unsubscribe"},
    {"compose"},
    {"inbound"},  # bounces, complaints, mailto unsubscribes: read with tokens and state, acted on
    {"checks"},
    {"send"},
    {"proof", "scaffold"},
    {"cli"},
    {"__init__", "__main__"},
)
MAX_MODULE_LINES = 400
MAX_FUNCTION_LINES = 60
MAX_TOP_LEVEL_MODULES = 8


def _modules() -> dict[str, Path]:
    found = {}
    for path in SRC.rglob("*.py"):
        parts = path.relative_to(SRC.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        found[name] = path
    return found


MODULES = _modules()


def _runtime_nodes(tree: ast.AST) -> list[ast.AST]:
    """Every node but those under ``if TYPE_CHECKING:`` (names for the type checker only)."""
    nodes: list[ast.AST] = []
    stack = [tree]
    while stack:
        node = stack.pop()
        if isinstance(node, ast.If) and getattr(node.test, "id", "") == "TYPE_CHECKING":
            stack.extend(node.orelse)
            continue
        nodes.append(node)
        stack.extend(ast.iter_child_nodes(node))
    return nodes


def _imports(path: Path) -> set[str]:
    """Every dispatch module ``path`` imports when it runs, at the top or inside a function."""
    found: set[str] = set()
    for node in _runtime_nodes(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "dispatch":
            found.add(node.module)
            found |= {f"{node.module}.{a.name}" for a in node.names if f"{node.module}.{a.name}" in MODULES}
        elif isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.split(".")[0] == "dispatch"}
    return {name for name in found if name in MODULES}


def _layer(module: str) -> int:
    parts = module.split(".")
    top = parts[1] if len(parts) > 1 else "__init__"
    if module == "dispatch.__main__":
        top = "__main__"
    return next(n for n, layer in enumerate(LAYERS) if top in layer)


GRAPH = {name: _imports(path) for name, path in MODULES.items()}


@pytest.mark.parametrize("module", sorted(MODULES))
def test_imports_only_go_down(module: str) -> None:
    if module == "dispatch":
        return  # the package's public names are re-exported lazily from every layer
    up = sorted(dep for dep in GRAPH[module] if dep != "dispatch" and _layer(dep) > _layer(module))
    assert not up, f"{module} imports {up} from a higher layer"


def test_no_import_circle() -> None:
    """No circle between modules, counting imports made inside functions (a lazy import that
    dodges a circle is still one)."""
    graph = {
        m: {d for d in deps if d not in ("dispatch", m) and not m.startswith(d + ".")}
        for m, deps in GRAPH.items()
    }
    state: dict[str, int] = {}
    path: list[str] = []

    def visit(node: str) -> None:
        state[node] = 1
        path.append(node)
        for dep in graph.get(node, ()):
            if state.get(dep) == 1:
                raise AssertionError("import circle: " + " -> ".join([*path[path.index(dep) :], dep]))
            if dep not in state:
                visit(dep)
        path.pop()
        state[node] = 2

    for module in sorted(graph):
        if module not in state:
            visit(module)


def test_the_folder_listing_shows_the_architecture() -> None:
    top = sorted(p.stem for p in SRC.glob("*.py"))
    packages = sorted(p.name for p in SRC.iterdir() if (p / "__init__.py").is_file())
    assert len(top) <= MAX_TOP_LEVEL_MODULES, top
    assert {
        "cli",
        "compose",
        "content",
        "lists",
        "send",
        "state",
        "checks",
        "proof",
        "unsubscribe",
        "inbound",
    } <= set(packages)


@pytest.mark.parametrize("module", sorted(MODULES))
def test_modules_and_functions_are_a_readable_size(module: str) -> None:
    source = MODULES[module].read_text(encoding="utf-8")
    assert len(source.splitlines()) <= MAX_MODULE_LINES, f"{module}: {len(source.splitlines())} lines"
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            body = node.body[1:] if ast.get_docstring(node) else node.body  # a Typer command's options
            lines = body[-1].end_lineno - body[0].lineno + 1 if body else 0  # (in its signature) are free
            assert lines <= MAX_FUNCTION_LINES, f"{module}.{node.name}: {lines} lines"


@pytest.mark.parametrize("module", sorted(MODULES))
def test_only_the_cli_knows_typer_and_dotenv_and_nobody_patches_jinja(module: str) -> None:
    source = MODULES[module].read_text(encoding="utf-8")
    names = {
        getattr(n, "module", None) or "" for n in ast.walk(ast.parse(source)) if isinstance(n, ast.ImportFrom)
    }
    names |= {a.name for n in ast.walk(ast.parse(source)) if isinstance(n, ast.Import) for a in n.names}
    if not module.startswith("dispatch.cli"):
        assert not {n for n in names if n.split(".")[0] in ("typer", "dotenv", "click")}, module
    assert not {n for n in names if n.startswith(("typer._", "click._"))}, (
        f"{module} imports a private module"
    )
    assert "CodeGenerator" not in source, f"{module} extends Jinja2's code generator"


def test_the_readme_map_names_every_package_and_module() -> None:
    section = (ROOT / "README.md").read_text(encoding="utf-8").split("## How the code is laid out")[1]
    section = section.split("\n## ")[0]
    for name, path in MODULES.items():
        if path.name == "__init__.py" or name in ("dispatch.__main__",):
            continue
        assert path.name in section or path.stem in section, (
            f"{path.relative_to(SRC)} is not in the README map"
        )


@pytest.mark.parametrize("name", sorted(set(dispatch.__all__) - {"__version__"}))
def test_every_public_name_is_where_the_package_says(name: str) -> None:
    """``from dispatch import plan_issue`` (the benchmark and library users) keeps working when a
    module moves: each public name resolves to something defined under that name."""
    found = getattr(dispatch, name)
    assert getattr(found, "__name__", name) == name


def test_a_plain_send_loads_no_optional_weight() -> None:
    """Extras load only when their setting asks: psycopg with DISPATCH_STATE_URL, authlib with
    OAuth2, Playwright for --png/--pdf, dkimpy only in tests. A cron send on SQLite paid ~90 ms and
    14 MB for a psycopg import it never used."""
    code = (
        "import sys\nimport dispatch.cli, dispatch.cli.sending, dispatch.send.worker\n"
        "print(sorted({m.split('.')[0] for m in sys.modules}))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    loaded = set(ast.literal_eval(done.stdout.strip()))
    assert not loaded & {"psycopg", "psycopg_pool", "playwright", "authlib", "dkim", "dns"}
    assert "dispatch" in loaded  # (what was asked was imported)
