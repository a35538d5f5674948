"""The distribution's public API: every name of `realstack.__all__` resolves, and importing the
package (which pytest does before the guard, and tox for its hooks) loads nothing heavy."""

from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import realstack

DISTRIBUTION = Path(__file__).resolve().parents[3] / "pytest-realstack"
HEAVY = (
    "sqlalchemy",
    "asyncpg",
    "alembic",
    "httpx",
    "boto3",
    "botocore",
    "fastapi",
    "tox",
    "psutil",
)


@pytest.mark.parametrize("name", realstack.__all__)
def test_every_public_name_resolves(name: str) -> None:
    assert getattr(realstack, name) is not None


def test_an_unknown_name_is_an_attribute_error() -> None:
    with pytest.raises(AttributeError, match="no attribute 'janitor_internals'"):
        _ = realstack.janitor_internals


def test_importing_the_package_and_its_plugin_loads_nothing_heavy() -> None:
    # ... nor what the guard's path imports before it refuses a URL (plugin._resolve).
    probe = (
        "import sys, realstack, realstack.plugin, realstack.embedded.procs, "
        "realstack.embedded.readiness, realstack.embedded.warm; "
        "print(' '.join(sorted(sys.modules)))"
    )
    loaded = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=60
    ).stdout.split()
    assert not [m for m in loaded if m.split(".")[0] in HEAVY]


def test_the_entry_point_is_named_exactly_like_the_plugin_module() -> None:
    # So a root conftest's `pytest_plugins = ["realstack.plugin"]` finds it registered.
    project = tomllib.loads((DISTRIBUTION / "pyproject.toml").read_text())["project"]
    assert project["entry-points"]["pytest11"] == {"realstack.plugin": "realstack.plugin"}
