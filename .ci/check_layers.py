"""Every module of the harness's package belongs to exactly one layer of its import contracts.

    python .ci/check_layers.py [--config pytest-realstack/.importlinter]
                               [--src pytest-realstack/src]          run by `make lint`

import-linter checks the imports between the modules a layers contract names; a module named
by no layer would escape it. This names each such module, and each module two layers claim,
and exits 1; the harness tier runs it too (tests/harness/unit/test_layers.py).
"""

from __future__ import annotations

import argparse
import configparser
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LAYERS = "importlinter:contract:layers"


def layers(config: Path) -> tuple[str, list[list[str]]]:
    """The container and, per layer (highest first), its modules' dotted names."""
    ini = configparser.ConfigParser()
    ini.read(config)
    section = ini[LAYERS]
    container = section["containers"].strip()
    rows = [line.strip() for line in section["layers"].splitlines() if line.strip()]
    return container, [
        [f"{container}.{name.strip()}" for name in re.split(r"[:|]", row)] for row in rows
    ]


def modules(src: Path, package: str) -> list[str]:
    """The package's modules by file, without importing them: a package is its __init__."""
    found = []
    for path in sorted((src / package.replace(".", "/")).rglob("*.py")):
        parts = path.relative_to(src).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        if "__pycache__" not in parts:
            found.append(".".join(parts))
    return found


def problems(config: Path, src: Path) -> list[str]:
    container, rows = layers(config)
    out = []
    for module in modules(src, container):
        if module == container:
            continue  # the container itself (the public API) is in no layer
        owners = [
            name for row in rows for name in row if module == name or module.startswith(name + ".")
        ]
        if not owners:
            out.append(f"{module} is in no layer of {config}: add it to the layer of its job")
        elif len(owners) > 1:
            out.append(f"{module} is in {len(owners)} layers ({', '.join(owners)}): keep one")
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--config", type=Path, default=ROOT / "pytest-realstack/.importlinter")
    parser.add_argument("--src", type=Path, default=ROOT / "pytest-realstack/src")
    args = parser.parse_args()
    found = problems(args.config, args.src)
    for line in found:
        print(f"check_layers: {line}")
    if found:
        return 1
    print(f"check_layers: every module of {args.src} is in exactly one layer")
    return 0


if __name__ == "__main__":
    sys.exit(main())
