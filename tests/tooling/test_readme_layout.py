"""The README is the map that is true: its layout names every module of the harness's package,
and the adapter's section every field of what the adapter gets (RunTargets, S3Target)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
from realstack import RunTargets, S3Target

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


@pytest.mark.parametrize(
    "field",
    [f"run.{f.name}" for f in dataclasses.fields(RunTargets)]
    + [f"run.s3.{f.name}" for f in dataclasses.fields(S3Target)],
)
def test_the_adapter_section_names_every_field_the_adapter_gets(field: str) -> None:
    readme = (ROOT / "README.md").read_text()
    section = readme.split("**3. The adapter**", 1)[1].split("**4. ", 1)[0]
    assert f"`{field}`" in section, f"README's adapter section does not name {field}"
