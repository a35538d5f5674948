"""Where a project keeps its pytest settings, so a refusal names that table and writes the
lines in its syntax: pytest 9's native [tool.pytest], the ini_options, pytest.toml, INI files."""

from __future__ import annotations

import importlib.metadata
from pathlib import Path
from typing import cast

import pytest
from realstack.pytest_settings import (
    ANYIO_LINES,
    MIN_PYTEST_ASYNCIO,
    PytestSettingsError,
    SettingsTable,
    check_asyncio_settings,
    settings_table,
)


@pytest.mark.parametrize(
    ("name", "text", "pytest_major", "table", "toml"),
    [
        ("pyproject.toml", '[tool.pytest]\nasyncio_mode = "auto"\n', 9, "[tool.pytest]", True),
        (
            "pyproject.toml",
            '[tool.pytest.ini_options]\nasyncio_mode = "auto"\n',
            9,
            "[tool.pytest.ini_options]",
            True,
        ),
        # A pyproject.toml with no pytest table: pytest 9's own, else the one pytest 8 reads.
        ("pyproject.toml", "[tool.harness]\n", 9, "[tool.pytest]", True),
        ("pyproject.toml", "[tool.harness]\n", 8, "[tool.pytest.ini_options]", True),
        ("pytest.toml", '[pytest]\nasyncio_mode = "auto"\n', 9, "[pytest]", True),
        ("pytest.ini", "[pytest]\nasyncio_mode = auto\n", 9, "[pytest]", False),
        ("setup.cfg", "[tool:pytest]\nasyncio_mode = auto\n", 9, "[tool:pytest]", False),
    ],
)
def test_the_table_named_is_the_one_pytest_read(
    tmp_path: Path, name: str, text: str, pytest_major: int, table: str, toml: bool
) -> None:
    (tmp_path / name).write_text(text)

    found = settings_table(tmp_path / name, tmp_path, pytest_major)

    assert found == SettingsTable(tmp_path / name, table, toml)


@pytest.mark.parametrize(
    ("pytest_major", "table"), [(9, "[tool.pytest]"), (8, "[tool.pytest.ini_options]")]
)
def test_with_no_settings_file_the_projects_pyproject_gets_the_table_of_its_pytest(
    tmp_path: Path, pytest_major: int, table: str
) -> None:
    found = settings_table(None, tmp_path, pytest_major)

    assert found == SettingsTable(tmp_path / "pyproject.toml", table, toml=True)


@pytest.mark.parametrize(
    ("toml", "addopts", "markers"),
    [
        (True, 'addopts = ["-p", "no:anyio"]', 'markers = ["anyio: run by pytest-asyncio'),
        (False, "addopts = -p no:anyio", "markers = anyio: run by pytest-asyncio"),
    ],
)
def test_the_anyio_lines_are_written_in_the_tables_syntax(
    tmp_path: Path, toml: bool, addopts: str, markers: str
) -> None:
    lines = SettingsTable(tmp_path / "x", "[t]", toml).lines(ANYIO_LINES).splitlines()

    assert lines[0].strip() == addopts
    assert lines[1].strip().startswith(markers)


class _OldAsyncioConfig:
    """A pytest config as pytest-asyncio 0.23 leaves it: no loop-scope settings declared."""

    inipath = None

    def getini(self, key: str) -> str:
        if key == "asyncio_mode":
            return "auto"
        raise ValueError(f"unknown configuration value: {key!r}")


def test_a_pytest_asyncio_without_the_loop_scopes_is_named_with_the_version_to_install(
    tmp_path: Path,
) -> None:
    config = cast(pytest.Config, _OldAsyncioConfig())

    with pytest.raises(PytestSettingsError) as refused:
        check_asyncio_settings(config, tmp_path)

    first, fix = str(refused.value).splitlines()
    assert f"pytest-asyncio {importlib.metadata.version('pytest-asyncio')} is loaded" in first
    assert "no asyncio_default_fixture_loop_scope and no asyncio_default_test_loop_scope" in first
    assert f"needs pytest-asyncio {MIN_PYTEST_ASYNCIO} or later" in first
    assert fix.startswith('  fix:  pip install "pytest-asyncio>=1.0"')
