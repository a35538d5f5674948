"""The pytest settings the harness needs, checked before a guarded run: one event loop for the
session, and no second runner (anyio's plugin) for the tests. A refusal names the table the
project keeps its pytest settings in, and the exact lines to add there."""

from __future__ import annotations

import importlib.metadata
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest

MIN_PYTEST_ASYNCIO = "1.0"  # pytest-realstack's own lower bound, for the message
REQUIRED_INI = {
    "asyncio_mode": "auto",
    "asyncio_default_fixture_loop_scope": "session",
    "asyncio_default_test_loop_scope": "session",
}
# anyio's pytest plugin (anyio comes with Starlette, so it is in every FastAPI venv) runs the
# tests marked `anyio` on a loop of its own: the session's engine then fails with "attached to a
# different loop". Turned off, pytest-asyncio runs them on the session's loop like the others.
ANYIO_PLUGIN = "anyio"
ANYIO_LINES: dict[str, str | list[str]] = {
    "addopts": ["-p", "no:anyio"],
    "markers": ["anyio: run by pytest-asyncio on the session's loop (anyio's plugin is off)"],
}


class PytestSettingsError(Exception):
    """A pytest setting the harness needs is missing; str() names it and the lines to add."""


@dataclass(frozen=True)
class SettingsTable:
    """Where a project keeps its pytest settings: the file, the table, and its syntax."""

    path: Path
    table: str  # "[tool.pytest]", "[tool.pytest.ini_options]", "[pytest]" or "[tool:pytest]"
    toml: bool  # TOML values (quoted strings, lists), or an INI file's bare text

    def lines(self, settings: Mapping[str, str | Sequence[str]]) -> str:
        """`settings` as lines to paste into this table, indented for a message."""
        return "\n".join(f"        {key} = {self._value(v)}" for key, v in settings.items())

    def _value(self, value: str | Sequence[str]) -> str:
        if isinstance(value, str):
            return f'"{value}"' if self.toml else value
        if self.toml:
            return "[" + ", ".join(f'"{v}"' for v in value) + "]"
        return " ".join(value)

    def fix(self, settings: Mapping[str, str | Sequence[str]]) -> str:
        return f"  fix:  add to {self.table} of {self.path}:\n{self.lines(settings)}"


def settings_table(inipath: Path | None, project_root: Path, pytest_major: int) -> SettingsTable:
    """The table pytest read its settings from (`config.inipath`); with none, the one to start
    in the project's pyproject.toml: pytest 9's native [tool.pytest], else the ini_options."""
    pyproject = project_root / "pyproject.toml"
    native = SettingsTable(pyproject, "[tool.pytest]", toml=True)
    ini_options = SettingsTable(pyproject, "[tool.pytest.ini_options]", toml=True)
    default = native if pytest_major >= 9 else ini_options
    if inipath is None:
        return default
    if inipath.name == "pyproject.toml":
        try:
            tables = tomllib.loads(inipath.read_text()).get("tool", {}).get("pytest", {})
        except (OSError, tomllib.TOMLDecodeError):
            tables = {}
        if set(tables) - {"ini_options"}:
            return SettingsTable(inipath, native.table, toml=True)
        if "ini_options" in tables or pytest_major < 9:
            return SettingsTable(inipath, ini_options.table, toml=True)
        return SettingsTable(inipath, native.table, toml=True)
    if inipath.suffix == ".toml":  # pytest.toml, .pytest.toml
        return SettingsTable(inipath, "[pytest]", toml=True)
    if inipath.name == "setup.cfg":
        return SettingsTable(inipath, "[tool:pytest]", toml=False)
    return SettingsTable(inipath, "[pytest]", toml=False)  # pytest.ini, .pytest.ini, tox.ini


def project_settings_table(config: pytest.Config, project_root: Path) -> SettingsTable:
    return settings_table(config.inipath, project_root, int(pytest.__version__.split(".")[0]))


def _version(distribution: str) -> str:
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return "(version unknown)"


def _ini(config: pytest.Config, key: str) -> str | None:
    """An ini value as text; None when no loaded plugin declares the key."""
    try:
        return str(config.getini(key) or "")
    except ValueError:
        return None


def check_asyncio_settings(config: pytest.Config, project_root: Path) -> None:
    """pytest-asyncio loaded, in auto mode, with one loop for the session's fixtures and tests."""
    if _ini(config, "asyncio_mode") is None:
        raise PytestSettingsError(
            "pytest-asyncio is not loaded in this run, and the harness's fixtures need it.\n"
            "  fix:  install it (pytest-realstack depends on it); with "
            "PYTEST_DISABLE_PLUGIN_AUTOLOAD=1, load it by name: -p pytest_asyncio.plugin"
        )
    unknown = [k for k in REQUIRED_INI if _ini(config, k) is None]
    if unknown:  # asyncio_default_fixture_loop_scope came in 0.24, the test one in 0.26
        raise PytestSettingsError(
            f"pytest-asyncio {_version('pytest-asyncio')} is loaded, which knows no "
            f"{' and no '.join(unknown)}: the harness needs pytest-asyncio "
            f"{MIN_PYTEST_ASYNCIO} or later (one event loop for the whole session).\n"
            f'  fix:  pip install "pytest-asyncio>={MIN_PYTEST_ASYNCIO}" (and remove an '
            "`event_loop` fixture of your own: 1.0 dropped it)"
        )
    wrong = {k: v for k, v in REQUIRED_INI.items() if _ini(config, k) != v}
    if wrong:
        raise PytestSettingsError(
            "The harness needs these pytest settings (one event loop for the whole session, so "
            "one engine serves every test); seen: "
            + ", ".join(f"{k}={config.getini(k)!r}" for k in wrong)
            + ".\n"
            + project_settings_table(config, project_root).fix(REQUIRED_INI)
        )


def tests_for_anyio_runner(
    config: pytest.Config, items: Sequence[pytest.Item]
) -> list[pytest.Item]:
    """The tests marked `anyio` that anyio's plugin, if loaded, would run on a loop of its own."""
    if not config.pluginmanager.has_plugin(ANYIO_PLUGIN):
        return []
    return [item for item in items if item.get_closest_marker("anyio") is not None]


def anyio_refusal(config: pytest.Config, project_root: Path, marked: Sequence[pytest.Item]) -> str:
    """Why guarded tests marked `anyio` cannot run while anyio's plugin is loaded (the
    session's engine and connections belong to the session's loop), and the lines to add."""
    shown = ", ".join(item.nodeid for item in marked[:3])
    more = f" and {len(marked) - 3} more" if len(marked) > 3 else ""
    return (
        f"{len(marked)} guarded test(s) are marked anyio ({shown}{more}), and anyio's pytest "
        "plugin would run them on an event loop of its own: the harness's engine and "
        "connections belong to the session's loop, so they would fail with 'attached to a "
        'different loop\'. pytest-asyncio (asyncio_mode = "auto") runs them on that loop once '
        "anyio's plugin is off; the marks can stay.\n"
        + project_settings_table(config, project_root).fix(ANYIO_LINES)
        + "\n        (to lists you already have, add the items)"
    )
