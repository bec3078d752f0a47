"""The package's layering: no import cycles, a light ``import udpm``, small modules, one pixel map.

The import graph is read statically from the source (every ``import`` statement, those inside
functions included), because a lazy import that closes a cycle is still a cycle: it only
moves the failure to whichever call happens to run first.
"""

import ast
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import udpm
from udpm.images import from_uint8, to_uint8

SRC = Path(udpm.__file__).resolve().parent.parent
MAX_LINES = 400


def package_modules(src: Path = SRC, pkg: str = "udpm") -> dict[str, Path]:
    """Dotted module name -> file for every ``.py`` of the package (``__init__``: the package)."""
    out = {}
    for path in (src / pkg).rglob("*.py"):
        parts = list(path.relative_to(src).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


def _owner(name: str, mods: dict) -> str | None:
    """The package module that ``name`` lives in (``udpm.a.b.func`` -> ``udpm.a.b``)."""
    while name and name not in mods:
        name = name.rpartition(".")[0]
    return name or None


def import_edges(mod: str, path: Path, mods: dict) -> set[str]:
    """Modules of the package that ``mod`` imports anywhere in its source (lazy ones included).

    ``from pkg.a import b`` is an edge to ``pkg.a.b`` when that is a module, else to ``pkg.a``.
    """
    base = mod if path.name == "__init__.py" else mod.rpartition(".")[0]
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out.update(_owner(a.name, mods) for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            source = node.module or ""
            if node.level:
                anchor = base
                for _ in range(node.level - 1):
                    anchor = anchor.rpartition(".")[0]
                source = f"{anchor}.{source}" if node.module else anchor
            for a in node.names:
                full = f"{source}.{a.name}"
                out.add(full if full in mods else _owner(source, mods))
    out.discard(None)
    out.discard(mod)
    return out


def strongly_connected(graph: dict[str, set[str]]) -> list[list[str]]:
    """Tarjan's strongly connected components with more than one module: the cycles."""
    index, low, stack, on_stack, found = {}, {}, [], set(), []

    def visit(v):
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
            component = []
            while not component or component[-1] != v:
                component.append(stack.pop())
                on_stack.discard(component[-1])
            if len(component) > 1:
                found.append(sorted(component))

    for v in graph:
        if v not in index:
            visit(v)
    return found


def test_the_cycle_finder_finds_a_lazy_cycle(tmp_path):
    """The walker sees imports inside functions and relative imports (so it can fail)."""
    pkg = tmp_path / "pkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text("from pkg.b import g\n")
    (pkg / "b.py").write_text("def g():\n    from .c import h\n")
    (pkg / "c.py").write_text("import pkg.a\n")
    (pkg / "d.py").write_text("from pkg import a\n")
    mods = package_modules(tmp_path, "pkg")
    graph = {m: import_edges(m, p, mods) for m, p in mods.items()}
    assert graph["pkg.d"] == {"pkg.a"}
    assert strongly_connected(graph) == [["pkg.a", "pkg.b", "pkg.c"]]


def test_no_import_cycles():
    mods = package_modules()
    graph = {m: import_edges(m, p, mods) for m, p in mods.items()}
    cycles = strongly_connected(graph)
    assert not cycles, "import cycles: " + "; ".join(" <-> ".join(c) for c in cycles)


def test_import_udpm_leaves_training_distributed_and_cli_out():
    heavy = ["udpm.train.loop", "udpm.train.distributed", "udpm.cli"]
    code = f"import sys, udpm; print([m for m in {heavy!r} if m in sys.modules])"
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=SRC
    )
    assert out.stdout.strip() == "[]", f"import udpm loaded {out.stdout.strip()}"


def test_no_module_is_over_400_lines():
    lengths = {m: len(p.read_text().splitlines()) for m, p in package_modules().items()}
    long = {m: n for m, n in lengths.items() if n > MAX_LINES}
    assert not long, f"modules over {MAX_LINES} lines: {long}"


def test_pixels_round_trip_exactly():
    u = torch.arange(256, dtype=torch.uint8)
    x = from_uint8(u)
    assert x.dtype == torch.float32 and x[0] == -1 and x[-1] == 1
    assert torch.equal(to_uint8(x), u)


def test_in_between_values_round_to_nearest_halves_to_even():
    u = torch.arange(255, dtype=torch.float64)
    step = 1 / 127.5  # one grey level in [-1, 1]
    below, above = u / 127.5 - 1 + 0.49 * step, u / 127.5 - 1 + 0.51 * step
    assert torch.equal(to_uint8(below).long(), u.long())
    assert torch.equal(to_uint8(above).long(), u.long() + 1)
    halves = torch.tensor([-1 + 0.5 * step, 0.0, 1 - 0.5 * step], dtype=torch.float64)
    assert to_uint8(halves).tolist() == [0, 128, 254]  # 0.5, 127.5, 254.5: to the even one


def test_out_of_range_and_nan_pixels():
    x = torch.tensor([-7.0, -1.0001, 1.0001, 3.0, float("nan"), float("inf")])
    assert to_uint8(x).tolist() == [0, 0, 255, 255, 128, 255]
    u8 = torch.tensor([3, 200], dtype=torch.uint8)
    assert to_uint8(u8) is u8  # already pixels


@pytest.mark.parametrize("name", ["udpm.data.to_uint8", "udpm.data.save.to_uint8"])
def test_old_names_are_the_one_helper(name):
    module, _, attr = name.rpartition(".")
    __import__(module)
    assert getattr(sys.modules[module], attr) is to_uint8
