"""The package's shape, read from its source: the import graph (function-local imports included), layer rules,
module sizes and line widths, and `import rediffuse` giving its version and lazy subpackages."""

from __future__ import annotations

import ast
import importlib
import subprocess
import sys
from pathlib import Path

import pytest

import rediffuse

SRC = Path(__file__).resolve().parents[1] / "src"
PACKAGE = SRC / "rediffuse"
MAX_LINES = 450
MAX_WIDTH = 120
ROOT = SRC.parent


def module_name(path: Path, root: Path = SRC) -> str:
    """The dotted module name of a source file ('rediffuse.samplers' for samplers/__init__.py)."""
    parts = path.relative_to(root).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported_modules(path: Path, known: set[str], root: Path = SRC) -> set[str]:
    """The project modules a file imports anywhere in it (top level, functions, TYPE_CHECKING blocks)."""
    name = module_name(path, root)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([node.module] if node.module else []))
            # `from pkg import sub` imports the submodule; `from pkg import name` the package itself
            targets = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else base for alias in node.names]
        else:
            continue
        for target in targets:
            while target and target not in known:  # 'rediffuse.samplers.sample' -> 'rediffuse.samplers'
                target = target.rpartition(".")[0]
            if target and target != name:
                found.add(target)
    return found


def import_graph() -> dict[str, set[str]]:
    """{module: project modules it imports} for every module under src/rediffuse."""
    files = sorted(PACKAGE.rglob("*.py"))
    known = {module_name(p) for p in files}
    return {module_name(p): imported_modules(p, known) for p in files}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle as a list of modules (the first repeated at the end), or None."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for dep in sorted(graph.get(node, ())):
            if state.get(dep) == 1:
                return stack[stack.index(dep):] + [dep]
            if dep not in state and (cycle := visit(dep)):
                return cycle
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def within(module: str, layer: str) -> bool:
    """Whether a module is the layer `rediffuse.<layer>` or inside it."""
    return module == f"rediffuse.{layer}" or module.startswith(f"rediffuse.{layer}.")


def violations(graph: dict[str, set[str]], layer: str, forbidden: tuple[str, ...]) -> list[str]:
    """'a -> b' for each import from `layer` into one of the `forbidden` layers."""
    return sorted(f"{m} -> {d}" for m, deps in graph.items() if within(m, layer)
                  for d in deps if any(within(d, f) for f in forbidden))


def test_the_graph_reader_sees_local_relative_and_type_checking_imports(tmp_path):
    source = tmp_path / "rediffuse" / "pkg"
    source.mkdir(parents=True)
    (source / "mod.py").write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from ..a import b\n"
                                   "def f():\n    from rediffuse.c.d import e\n    import rediffuse.f\n")
    known = {"rediffuse", "rediffuse.a", "rediffuse.c", "rediffuse.c.d", "rediffuse.f", "rediffuse.pkg.mod"}
    assert imported_modules(source / "mod.py", known, tmp_path) == {"rediffuse.a", "rediffuse.c.d", "rediffuse.f"}
    assert find_cycle({"x": {"y"}, "y": {"z"}, "z": {"x"}}) == ["x", "y", "z", "x"]
    assert find_cycle({"x": {"y"}, "y": set()}) is None


def test_no_import_cycles():
    assert find_cycle(import_graph()) is None


UPPER = ("train", "cli", "tuning", "evaluation", "sampling", "api")  # what nothing below layer 6 may import
LOWER_3 = ("modalities", "objectives", "config", "runs", *UPPER)  # what layer 2 (core, truth, audio, viz) may not
RULES = [
    ("samplers", ("tuning", "nets", "data", "train", "objectives", "runs", "cli", "evaluation", "modalities",
                  "sampling", "api")),
    ("nets", ("samplers", "train", "objectives", "runs", "cli", "tuning", "evaluation", "modalities", "sampling",
              "api")),
    ("data", ("config", "samplers", "nets", "objectives", "modalities", "runs", *UPPER)),
    ("modalities", ("config", "objectives", "runs", *UPPER)),
    ("core", ("truth", "audio", "viz", "checkpoint", "data", "nets", "samplers", *LOWER_3)),
    ("truth", ("audio", "viz", "data", "nets", "samplers", *LOWER_3)),
    ("audio", ("core", "truth", "viz", "data", "nets", "samplers", *LOWER_3)),
    ("viz", ("core", "truth", "data", "nets", "samplers", *LOWER_3)),
    ("config", ("runs", *UPPER)),
    ("objectives", ("config", "runs", *UPPER)),
    ("runs", UPPER),
    ("tuning", ("train", "cli", "sampling", "api")),
    ("evaluation", ("train", "cli", "tuning", "sampling", "api")),
    ("train", ("cli", "tuning", "evaluation", "sampling", "api")),
    ("sampling", ("train", "evaluation", "cli", "api")),
    ("serve", ("train", "cli")),
]


def test_every_package_has_a_layer_rule():
    packages = {p.name for p in PACKAGE.iterdir() if (p / "__init__.py").is_file()} - {"cli"}  # cli is the top
    assert packages - {layer for layer, _ in RULES} == set()


@pytest.mark.parametrize("layer, forbidden", RULES)
def test_layers_import_only_downwards(layer, forbidden):
    assert violations(import_graph(), layer, forbidden) == []


def test_no_module_over_the_line_limit():
    long = {module_name(p): n for p in PACKAGE.rglob("*.py") if (n := len(p.read_text().splitlines())) > MAX_LINES}
    assert long == {}


def test_no_source_line_over_the_width_limit():
    wide = [f"{p.relative_to(ROOT)}:{i}" for folder in ("src", "tests", "benchmarks")
            for p in sorted((ROOT / folder).rglob("*.py"))
            for i, line in enumerate(p.read_text(encoding="utf-8").splitlines(), 1) if len(line) > MAX_WIDTH]
    assert wide == []


def test_version_and_lazy_subpackages():
    assert isinstance(rediffuse.__version__, str) and rediffuse.__version__[0].isdigit()
    code = ("import sys, rediffuse; assert 'torch' not in sys.modules, 'import rediffuse loaded torch'; "
            "import rediffuse.core.schedules as s; "
            "assert all(hasattr(rediffuse, m) for m in rediffuse.SUBMODULES); assert rediffuse.core.schedules is s; "
            "print(rediffuse.__version__)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == rediffuse.__version__
    with pytest.raises(AttributeError, match="no attribute 'nonexistent'"):
        rediffuse.nonexistent  # noqa: B018


def test_the_old_paths_of_moved_modules_still_resolve():
    from rediffuse import analytic, schedules  # the README's paths of version 0.2

    assert schedules is rediffuse.core.schedules and analytic is rediffuse.truth.analytic
    assert rediffuse.audio_codec.MelCodec is rediffuse.audio.codec.MelCodec
    assert all(getattr(rediffuse, old) is importlib.import_module(f"rediffuse.{new}")
               for old, new in rediffuse.MOVED.items())
