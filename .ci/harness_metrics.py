"""The harness package's shape, as the layer contracts see it: modules, lines, import cycles,
and imports that climb a layer (grimp, the graph import-linter builds).

    PYTHONPATH=pytest-realstack/src python .ci/harness_metrics.py        (in the lint env)
    python .ci/harness_metrics.py --src DIR --package tests.harness      an older layout

--config names the layers (default pytest-realstack/.importlinter); for an older layout, whose
modules carry the same names under another package, its layers are matched by those names.
"""

from __future__ import annotations

import argparse
import configparser
import re
import sys
from pathlib import Path

import grimp

ROOT = Path(__file__).resolve().parents[1]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--src", type=Path, default=ROOT / "pytest-realstack/src")
    parser.add_argument("--package", default="realstack")
    parser.add_argument("--config", type=Path, default=ROOT / "pytest-realstack/.importlinter")
    args = parser.parse_args()
    sys.path.insert(0, str(args.src))
    package: str = args.package
    graph = grimp.build_graph(
        package.split(".")[0], cache_dir=None, exclude_type_checking_imports=True
    )
    modules = sorted(
        m
        for m in graph.modules
        if (m == package or m.startswith(package + ".")) and not m.startswith(package + ".tests")
    )
    lines = 0
    for module in modules:
        base = args.src / module.replace(".", "/")
        path = base / "__init__.py" if base.is_dir() else base.with_suffix(".py")
        lines += len(path.read_text().splitlines())
    ini = configparser.ConfigParser()
    ini.read(args.config)
    rows = [r.strip() for r in ini["importlinter:contract:layers"]["layers"].splitlines() if r]
    rank = {
        f"{package}.{name.strip()}": height
        for height, row in enumerate(reversed(rows))
        for name in re.split(r"[:|]", row)
    }

    def layer(module: str) -> int | None:
        found = [h for name, h in rank.items() if module == name or module.startswith(name + ".")]
        return found[-1] if found else None

    edges = [
        (a, b) for a in modules for b in graph.find_modules_directly_imported_by(a) if b in modules
    ]
    upward = [(a, b) for a, b in edges if None not in (layer(a), layer(b)) and layer(b) > layer(a)]
    cycles = _cycles(modules, edges)
    print(
        f"{package}: {len(modules)} modules, {lines} lines, {len(cycles)} import cycles, "
        f"{len(upward)} upward imports"
    )
    for cycle in cycles:
        print("  cycle:", " <-> ".join(m.removeprefix(package + ".") for m in cycle))
    for a, b in upward:
        print("  upward:", a.removeprefix(package + "."), "->", b.removeprefix(package + "."))
    return 0


def _cycles(modules: list[str], edges: list[tuple[str, str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan)."""
    adjacent: dict[str, list[str]] = {m: [] for m in modules}
    for a, b in edges:
        adjacent[a].append(b)
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in adjacent[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for module in modules:
        if module not in index:
            visit(module)
    return found


if __name__ == "__main__":
    sys.exit(main())
