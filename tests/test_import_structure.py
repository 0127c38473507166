"""The package's import structure, read from the sources: no module imports itself back
through others, the language never reaches the runtime side, and the router never reaches
the command line.

Every `import` and `from ... import` counts, at module level or inside a function (a
function-local import still ties the two modules together), relative imports resolved.
Importing a package means importing its __init__. A module's parent packages are not
counted: Python loads them before the module whatever it imports."""

from __future__ import annotations

import ast
import graphlib
from pathlib import Path

from helpers.files import ROOT

PACKAGE = "rulesengine"
LANGUAGE = "rulesengine.lang"
# What the language may build on besides itself: foundations shared by both sides, which
# themselves import nothing of the package (see test_the_language_builds_on_foundations_only).
LANGUAGE_FOUNDATIONS = {"rulesengine.diagnostics", "rulesengine.values"}
RUNTIME = "rulesengine.runtime"
CLI = "rulesengine.cli"
CONSOLE = "rulesengine.console"


def module_files(root: Path, package: str) -> dict[str, Path]:
    """Every module of `package` (a folder under `root`) by dotted name; a package by its __init__."""
    modules = {}
    for path in sorted((root / package).rglob("*.py")):
        parts = list(path.relative_to(root).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        modules[".".join(parts)] = path
    return modules


def imported_modules(name: str, path: Path, known: set[str]) -> set[str]:
    """The modules of `known` that module `name` (read from `path`) imports anywhere in its text."""
    is_package = path.name == "__init__.py"
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = name.split(".") if is_package else name.split(".")[:-1]
                base = base[: len(base) - (node.level - 1)]
                source = ".".join(base + ([node.module] if node.module else []))
            else:
                source = node.module or ""
            # `from package import name` imports the submodule when `name` is one, else the package.
            targets = [f"{source}.{alias.name}" if f"{source}.{alias.name}" in known else source
                       for alias in node.names]
        else:
            continue
        for target in targets:
            while target and target not in known:  # `import a.b.Name`-like forms: the module that holds it
                target = target.rpartition(".")[0]
            if target and target != name:
                found.add(target)
    return found


def import_graph(root: Path, package: str) -> dict[str, set[str]]:
    """Each module of `package` with the modules of `package` it imports."""
    modules = module_files(root, package)
    known = set(modules)
    return {name: imported_modules(name, path, known) for name, path in modules.items()}


def import_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle of the graph as the modules along it (the first one again at the end), or None."""
    try:
        graphlib.TopologicalSorter(graph).prepare()
    except graphlib.CycleError as exc:
        return list(reversed(exc.args[1]))  # graphlib lists it against the direction of the imports
    return None


def reachable(graph: dict[str, set[str]], starts) -> dict[str, str]:
    """Every module imported directly or through others from `starts`, with one module that imports it."""
    seen: dict[str, str] = {}
    stack = list(starts)
    while stack:
        module = stack.pop()
        for target in sorted(graph.get(module, ())):
            if target not in seen:
                seen[target] = module
                stack.append(target)
    return seen


def import_chain(graph: dict[str, set[str]], start_prefix: str, target: str) -> str:
    """How modules under `start_prefix` come to import `target`: `a -> b -> target`."""
    starts = [m for m in graph if in_package(m, start_prefix)]
    via = reachable(graph, starts)
    chain = [target]
    while chain[-1] in via and not in_package(chain[-1], start_prefix):
        chain.append(via[chain[-1]])
    return " -> ".join(reversed(chain))


def in_package(module: str, package: str) -> bool:
    return module == package or module.startswith(package + ".")


GRAPH = import_graph(ROOT, PACKAGE)


def test_the_graph_holds_every_module_and_sees_their_imports():
    assert {"rulesengine", "rulesengine.lang", "rulesengine.lang.api", "rulesengine.runtime.service",
            "rulesengine.cli"} <= set(GRAPH)
    assert "rulesengine.diagnostics" in GRAPH["rulesengine.lang.api"]  # from ..diagnostics import ...
    assert "rulesengine.lang.nodes" in GRAPH["rulesengine.lang.checks"]  # from . import nodes as n


def test_no_import_cycles():
    cycle = import_cycle(GRAPH)
    assert cycle is None, "modules import each other in a cycle: " + " -> ".join(cycle)


def test_the_language_builds_on_foundations_only():
    beyond = sorted(module for module in reachable(GRAPH, [m for m in GRAPH if in_package(m, LANGUAGE)])
                    if not in_package(module, LANGUAGE) and module not in LANGUAGE_FOUNDATIONS)
    assert beyond == [], "the language imports the runtime side: " + "; ".join(
        import_chain(GRAPH, LANGUAGE, module) for module in beyond)


def test_the_runtime_never_imports_the_command_line():
    reached = sorted(module for module in reachable(GRAPH, [m for m in GRAPH if in_package(m, RUNTIME)])
                     if in_package(module, CLI))
    assert reached == [], "the runtime imports the command line: " + "; ".join(
        import_chain(GRAPH, RUNTIME, module) for module in reached)


# The layers docs/architecture.md draws, top first: a module imports only its own layer and
# those below it. The package's face (rulesengine/__init__.py, __main__.py) stands apart.
LAYERS = (
    ("the command line", lambda m: in_package(m, CLI)),
    ("the console", lambda m: in_package(m, CONSOLE)),
    ("the runtime", lambda m: in_package(m, RUNTIME)),
    ("the language tools", lambda m: m in {"rulesengine.ruletest", "rulesengine.dryrun", "rulesengine.explain"}),
    ("intake and copies", lambda m: m in {"rulesengine.intake", "rulesengine.copies", "rulesengine.wellformed",
                                          "rulesengine.windows"} or in_package(m, "rulesengine.config")),
    ("the document model", lambda m: m in {"rulesengine.document", "rulesengine.dicomfile", "rulesengine.arrival",
                                           "rulesengine.charsets", "rulesengine.matching", "rulesengine.pixels"}),
    ("the language", lambda m: in_package(m, LANGUAGE)),
    ("the foundations", lambda m: m in LANGUAGE_FOUNDATIONS),
)
FACE = {PACKAGE, PACKAGE + ".__main__"}


def layer_of(module: str) -> int | None:
    return next((index for index, (_, holds) in enumerate(LAYERS) if holds(module)), None)


def test_every_module_has_its_layer_and_imports_only_below_it():
    unplaced = sorted(m for m in GRAPH if m not in FACE and layer_of(m) is None)
    assert unplaced == [], "modules in no layer (add them to LAYERS and to docs/architecture.md)"
    upward = [f"{module} ({LAYERS[layer_of(module)][0]}) -> {target} ({LAYERS[layer_of(target)][0]})"
              for module, targets in sorted(GRAPH.items()) if module not in FACE
              for target in sorted(targets) if target not in FACE and layer_of(target) < layer_of(module)]
    assert upward == [], "imports that go up a layer: " + "; ".join(upward)


# ---- the checks themselves, on a package made for them ----------------------------------------


def write_package(root: Path, files: dict[str, str]) -> None:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")


def test_a_cycle_is_found_and_spelled_out(tmp_path):
    write_package(tmp_path, {
        "pkg/__init__.py": "from .a import run\n",
        "pkg/a.py": "from . import b\n",
        "pkg/b.py": "def later():\n    from .sub.c import thing\n",  # a function-local import counts
        "pkg/sub/__init__.py": "",
        "pkg/sub/c.py": "import os\nfrom ..a import run\n",  # os is not the package's: no edge
    })
    graph = import_graph(tmp_path, "pkg")
    assert graph == {"pkg": {"pkg.a"}, "pkg.a": {"pkg.b"}, "pkg.b": {"pkg.sub.c"}, "pkg.sub": set(),
                     "pkg.sub.c": {"pkg.a"}}
    cycle = import_cycle(graph)
    assert cycle is not None and cycle[0] == cycle[-1] and set(cycle) == {"pkg.a", "pkg.b", "pkg.sub.c"}
    assert all(after in graph[before] for before, after in zip(cycle, cycle[1:]))  # in import order


def test_a_graph_without_cycles_passes_and_chains_are_named(tmp_path):
    write_package(tmp_path, {
        "pkg/__init__.py": "",
        "pkg/lang/__init__.py": "",
        "pkg/lang/api.py": "import pkg.shared\nfrom pkg import shared as again\n",
        "pkg/shared.py": "def later():\n    import pkg.runtime.service\n",
        "pkg/runtime/__init__.py": "",
        "pkg/runtime/service.py": "from .. import cli\n",
        "pkg/cli.py": "",
    })
    graph = import_graph(tmp_path, "pkg")
    assert import_cycle(graph) is None
    assert graph["pkg.lang.api"] == {"pkg.shared"}
    assert import_chain(graph, "pkg.lang", "pkg.cli") == "pkg.lang.api -> pkg.shared -> pkg.runtime.service -> pkg.cli"
