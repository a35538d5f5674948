"""The README's layout is the map that is true: it names every module of the harness's package."""

from __future__ import annotations

from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "pytest-realstack" / "src" / "realstack"


def _layout() -> str:
    readme = (ROOT / "README.md").read_text()
    return readme.split("## Layout", 1)[1]


@pytest.mark.parametrize(
    "module",
    sorted(
        str(p.relative_to(PACKAGE))
        for p in PACKAGE.rglob("*.py")
        if "__pycache__" not in p.parts and p.name != "__init__.py"
    ),
)
def test_the_layout_names_every_module_of_the_package(module: str) -> None:
    assert Path(module).name in _layout(), f"README's layout does not name {module}"
