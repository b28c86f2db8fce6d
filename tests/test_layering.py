"""Package layering, checked on the source: every import statement (module level, inside functions and
under `if TYPE_CHECKING:` alike) of every module under compiler/, runtime/, hwtrain/ and models/.

    runtime.errors                      imports nothing of ours
    runtime.physics.*                   runtime.errors and runtime.physics.* only
    runtime.contract                    runtime.errors only (the mapped-artifact contract; stdlib/numpy/onnx)
    runtime.outputs                     runtime.errors only (output guard and writer; stdlib)
    runtime.progress                    nothing of ours (progress bar / lines; stdlib, tqdm lazily)
    compiler                            runtime.errors, runtime.physics.*, runtime.contract, runtime.outputs,
                                        runtime.progress, `models`
                                        (CLI-level modules: more)
    runtime                             never compiler (CLI-level modules listed below: may), never hwtrain
    hwtrain                             anything
    bench/, scripts/, the packages      never tests/

plus: no import cycle between modules. `from pkg import sub` counts as an import of `pkg.sub` (not of
`pkg/__init__`), `from pkg import name` as one of `pkg`; importlib.import_module("literal") counts too.
`acompile`'s top-level dispatcher (compiler/cli.py) names the sub-command modules as strings and imports
them on use; it is the application's entry point, not a library dependency, and is not parsed as one.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("compiler", "runtime", "hwtrain", "models")

#: runtime modules that may import the compiler, each with its reason. Keep this list short.
RUNTIME_CLI_LEVEL = {
    "runtime.cli": "the `acompile eval` command (also run by `acompile MODEL --eval`): a user-facing "
    "entry point that may compose packages",
    "runtime.explore_cli": "the `acompile explore` command: compiles each target variant in memory "
    "(compiler.pipeline) and hands it to runtime.explore",
}
#: runtime modules below the compiler: the compiler may import them (besides runtime.physics.*)
COMPILER_MAY_IMPORT = {
    "runtime.errors": "the one user-facing exception",
    "runtime.contract": "the mapped-artifact contract (CONTRACTS §3): the compiler writes what the "
    "runtime reads",
    "runtime.outputs": "the output guard and the all-or-nothing writer every command writes through "
    "(stdlib + runtime.errors)",
    "runtime.progress": "the progress report every long loop shows (compile, eval, finetune, train): "
    "a bar on a terminal, plain lines otherwise (stdlib; tqdm lazily)",
    "runtime.untrusted": "the external-data safety check both the frontend and the emulator's loader run "
    "(onnx + runtime.errors)",
}
#: compiler modules that may import runtime beyond runtime.errors / runtime.physics / runtime.contract.
COMPILER_CLI_LEVEL = {
    "compiler.cli": "the `acompile` entry point (dispatches to every package's commands)",
    "compiler.commands": "`acompile MODEL --eval` hands the mapped model to runtime.cli's eval command",
}


def _is_lowest(mod: str) -> bool:
    return mod == "runtime.errors" or mod == "runtime.physics" or mod.startswith("runtime.physics.")


def _compiler_may_import(mod: str) -> bool:
    return _is_lowest(mod) or mod in COMPILER_MAY_IMPORT


def _in(mod: str, pkg: str) -> bool:
    return mod == pkg or mod.startswith(pkg + ".")


# --- the module graph -------------------------------------------------------------------------------


def _modules(root: Path) -> dict[str, tuple[Path, bool]]:
    """Dotted name -> (file, is a package __init__) for every module of PACKAGES under root."""
    mods = {}
    for pkg in PACKAGES:
        for path in sorted((root / pkg).rglob("*.py")):
            parts = list(path.relative_to(root).with_suffix("").parts)
            is_pkg = parts[-1] == "__init__"
            mods[".".join(parts[:-1] if is_pkg else parts)] = (path, is_pkg)
    return mods


def _imported_names(tree: ast.AST, package: str) -> list[tuple[str, str | None]]:
    """(module, name imported from it or None) for every import in the tree, relative ones resolved."""
    out: list[tuple[str, str | None]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [(a.name, None) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                parts = parts[: len(parts) - (node.level - 1)]
                base = ".".join(parts + ([node.module] if node.module else []))
            out += [(base, a.name) for a in node.names]
        elif (isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant)
              and isinstance(node.args[0].value, str)
              and getattr(node.func, "attr", getattr(node.func, "id", None)) == "import_module"):
            out.append((node.args[0].value, None))
    return out


def _resolve(name: str, mods: dict) -> str | None:
    while name and name not in mods:
        name = name.rpartition(".")[0]
    return name or None


def import_graph(root: Path = ROOT) -> dict[str, set[str]]:
    """Module -> the modules of ours it imports (external packages left out)."""
    mods = _modules(root)
    graph: dict[str, set[str]] = {}
    for mod, (path, is_pkg) in mods.items():
        package = mod if is_pkg else mod.rpartition(".")[0]
        deps = set()
        for base, name in _imported_names(ast.parse(path.read_text(), str(path)), package):
            target = f"{base}.{name}" if name and f"{base}.{name}" in mods else _resolve(base, mods)
            if target and target != mod:
                deps.add(target)
        graph[mod] = deps
    return graph


def find_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            scc = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                scc.append(w)
                if w == v:
                    break
            if len(scc) > 1:
                cycles.append(sorted(scc))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return cycles


def violations(graph: dict[str, set[str]], allowed) -> list[str]:
    return sorted(f"{m} imports {d}" for m, deps in graph.items() for d in deps if not allowed(m, d))


@pytest.fixture(scope="module")
def graph() -> dict[str, set[str]]:
    return import_graph()


# --- the rules --------------------------------------------------------------------------------------


def test_graph_sees_the_packages(graph):
    """Guard against a vacuous pass: the parser finds the modules and the imports we know of."""
    assert {"runtime.errors", "runtime.data", "compiler.pipeline", "hwtrain.run"} <= set(graph)
    assert "runtime.errors" in graph["compiler.pipeline"]
    assert "runtime.ops.elementwise" in graph["runtime.ops"]  # an import inside a function
    assert "runtime.data" in graph["hwtrain.run"]


def test_no_import_cycles(graph):
    cycles = find_cycles(graph)
    assert not cycles, "import cycles:\n" + "\n".join(" <-> ".join(c) for c in cycles)


def test_errors_and_physics_are_the_lowest_layer(graph):
    def allowed(mod: str, dep: str) -> bool:
        if mod == "runtime.errors":
            return False  # imports nothing of ours
        if _is_lowest(mod):
            return _is_lowest(dep)
        return True

    bad = violations(graph, allowed)
    assert not bad, "\n".join(bad)


def test_runtime_does_not_import_the_compiler(graph):
    def allowed(mod: str, dep: str) -> bool:
        return not (_in(mod, "runtime") and _in(dep, "compiler") and mod not in RUNTIME_CLI_LEVEL)

    bad = violations(graph, allowed)
    assert not bad, "\n".join(bad)
    assert set(RUNTIME_CLI_LEVEL) <= set(graph), "a CLI-level module listed here no longer exists"


def test_contract_imports_only_errors(graph):
    """runtime.contract sits just above runtime.errors: compiler and runtime both import it."""
    assert "runtime.contract" in graph, "runtime/contract.py no longer exists"
    assert graph["runtime.contract"] == {"runtime.errors"}, sorted(graph["runtime.contract"])


def test_outputs_imports_only_errors(graph):
    """runtime.outputs sits just above runtime.errors: every package's commands write through it."""
    assert graph["runtime.outputs"] == {"runtime.errors"}, sorted(graph["runtime.outputs"])


def test_progress_imports_nothing_of_ours_and_is_light(graph):
    """runtime.progress is shared by every package (compile, eval, finetune, train): no imports of ours,
    no torch (tqdm only when a bar is drawn)."""
    assert graph["runtime.progress"] == set(), sorted(graph["runtime.progress"])
    code = ("import sys, runtime.progress; "
            "print(sorted(m for m in ('torch', 'tqdm', 'numpy') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_contract_is_light():
    """runtime.contract imports without torch (stdlib, numpy, onnx)."""
    code = "import sys, runtime.contract; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_compiler_uses_only_errors_physics_and_contract_of_runtime(graph):
    def allowed(mod: str, dep: str) -> bool:
        return not (_in(mod, "compiler") and mod not in COMPILER_CLI_LEVEL and _in(dep, "runtime")
                    and not _compiler_may_import(dep))

    bad = violations(graph, allowed)
    assert not bad, "\n".join(bad)
    assert set(COMPILER_CLI_LEVEL) <= set(graph), "a CLI-level module listed here no longer exists"
    assert set(COMPILER_MAY_IMPORT) <= set(graph), "a module listed in COMPILER_MAY_IMPORT no longer exists"


def test_compiler_and_runtime_do_not_import_hwtrain_or_model_code(graph):
    """hwtrain sits on top; of `models` only the package root (where bundled files are, no torch) is
    below compiler/runtime: models.zoo / models.archs are built on the runtime."""

    def allowed(mod: str, dep: str) -> bool:
        low = _in(mod, "compiler") or _in(mod, "runtime")
        return not (low and (_in(dep, "hwtrain") or (_in(dep, "models") and dep != "models")))

    bad = violations(graph, allowed)
    assert not bad, "\n".join(bad)


def imports_of_tests(root: Path = ROOT) -> list[str]:
    """`file: module` for every import of the tests package by bench/, scripts/ or the packages."""
    files = [*sorted((root / "bench").glob("*.py")), *sorted((root / "scripts").glob("*.py"))]
    files += [p for pkg in PACKAGES for p in sorted((root / pkg).rglob("*.py"))]
    found = []
    for path in files:
        for base, name in _imported_names(ast.parse(path.read_text(), str(path)), ""):
            if _in(base, "tests"):
                found.append(f"{path.relative_to(root)}: {base}{'.' + name if name else ''}")
    return found


def test_bench_and_packages_do_not_import_tests():
    bad = imports_of_tests()
    assert not bad, "\n".join(bad)


def test_package_roots_stay_light():
    """`runtime`, `runtime.errors`, `models`, `compiler` and `hwtrain` import without torch / numpy."""
    code = ("import sys, runtime, runtime.errors, models, compiler, hwtrain; "
            "print(sorted(m for m in ('torch', 'numpy', 'onnx') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
