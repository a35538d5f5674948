"""The harness as a distribution: installed by pip, it loads through its entry point alone and
guards before any conftest is imported; copied or with autoloading off, it refuses a run whose
guarded conftests were imported first; installed and copied at once, it loads once.

Each case is a nested run of the "notes" project (notes_project.py) whose guarded conftest
reads the app's URL at import, with the developer's own URL already in that variable.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path

import pytest
from realstack.config import HarnessConfig
from realstack.project import load_project
from realstack.stamps import RunNames

from tests.harness.helpers import names_for
from tests.harness.nested import clean_environment, service_environment
from tests.harness.notes_project import APP_DATABASE_URL, build_project, plugin_file
from tests.harness.venvs import venv_with_harness_installed, venv_without_harness

TIMEOUT_S = 180
# What a developer's shell or .env holds: the harness must never let a test see it.
DEVELOPERS_URL = "postgresql+asyncpg://postgres:devpw@localhost:5432/notes_dev"
REFUSAL = "the harness was loaded after these conftests of the guarded paths were imported"


@pytest.fixture(scope="module")
def python_installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A venv where `pip install <path>` installed pytest-realstack (not editable)."""
    return venv_with_harness_installed(tmp_path_factory.mktemp("venv") / "installed")


@pytest.fixture(scope="module")
def python_without_harness(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return venv_without_harness(tmp_path_factory.mktemp("venv") / "copy-mode")


def _environment(config: HarnessConfig, root: Path, run_id: str) -> dict[str, str]:
    notes = load_project(root / "pyproject.toml")
    env = clean_environment(config.project, notes)
    env.pop("PYTHONPATH", None)
    env |= service_environment(config, with_s3=False)
    return env | {notes.run_id_variable: run_id, APP_DATABASE_URL: DEVELOPERS_URL}


async def _pytest(
    python: Path | str, root: Path, env: dict[str, str], *args: str
) -> subprocess.CompletedProcess[str]:
    return await asyncio.to_thread(
        subprocess.run,
        [str(python), "-m", "pytest", "-v", "-s", *args, "tests/integration"],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        timeout=TIMEOUT_S,
    )


@pytest.mark.parametrize("workers", [[], ["-n", "2"]], ids=["serial", "xdist"])
async def test_installed_it_loads_by_entry_point_and_guards_before_any_conftest(
    harness_config: HarnessConfig,
    run_names: RunNames,
    tmp_path: Path,
    python_installed: Path,
    workers: list[str],
) -> None:
    root = build_project(tmp_path / "notes", copy_core=False, early_conftest=True)
    env = _environment(harness_config, root, names_for(run_names, "inst").run_id)

    result = await _pytest(python_installed, root, env, *workers)

    assert result.returncode == 0, result.stdout + result.stderr
    assert "6 passed" in result.stdout
    assert not (root / "realstack").exists()
    if not workers:  # -n 2 keeps the workers' prints
        assert "site-packages" in plugin_file(result.stdout).parts


@pytest.mark.parametrize(
    ("python", "env_extra"),
    # With autoloading off a project names its plugins: pytest-asyncio's too.
    [
        (
            "installed",
            {"PYTEST_DISABLE_PLUGIN_AUTOLOAD": "1", "PYTEST_PLUGINS": "pytest_asyncio.plugin"},
        ),
        ("copy", {}),
    ],
    ids=["autoload-disabled", "copy-mode"],
)
async def test_loaded_from_the_conftest_it_refuses_conftests_imported_before_it(
    harness_config: HarnessConfig,
    run_names: RunNames,
    tmp_path: Path,
    python_installed: Path,
    python_without_harness: Path,
    python: str,
    env_extra: dict[str, str],
) -> None:
    root = build_project(tmp_path / "notes", copy_core=python == "copy", early_conftest=True)
    env = _environment(harness_config, root, names_for(run_names, "late").run_id) | env_extra
    interpreter = python_installed if python == "installed" else python_without_harness

    result = await _pytest(interpreter, root, env)
    message = result.stdout + result.stderr

    assert result.returncode == 4, message
    assert REFUSAL in message
    assert str(root / "tests" / "integration" / "conftest.py") in message
    assert "-p realstack.plugin" in message
    assert " passed" not in result.stdout and "collected" not in result.stdout


async def test_copied_with_p_in_addopts_it_guards_before_the_conftests_again(
    harness_config: HarnessConfig, run_names: RunNames, tmp_path: Path, python_without_harness: Path
) -> None:
    root = build_project(
        tmp_path / "notes",
        copy_core=True,
        early_conftest=True,
        extra_addopts=' "-p", "realstack.plugin",',
    )
    env = _environment(harness_config, root, names_for(run_names, "copyp").run_id)

    result = await _pytest(python_without_harness, root, env)

    assert result.returncode == 0, result.stdout + result.stderr
    assert "6 passed" in result.stdout
    assert plugin_file(result.stdout) == root / "realstack" / "plugin.py"


async def test_installed_and_copied_at_once_it_loads_once_and_raises_nothing(
    harness_config: HarnessConfig, run_names: RunNames, tmp_path: Path
) -> None:
    # This env has the distribution (editable, the locks' `-e ./pytest-realstack`); the project
    # copies the folder too and names it in its root conftest.
    root = build_project(tmp_path / "notes", copy_core=True)
    env = _environment(harness_config, root, names_for(run_names, "both").run_id)

    result = await _pytest(sys.executable, root, env)

    assert result.returncode == 0, result.stdout + result.stderr
    assert "5 passed" in result.stdout
    assert "already registered" not in result.stdout + result.stderr
