"""The settings check on a team's project: pytest 9's native [tool.pytest] table, and guarded
tests marked anyio (as FastAPI's docs write them), which anyio's plugin would run on a second
event loop. Each refusal names the table and the lines to add, and those lines are enough."""

from __future__ import annotations

import asyncio
import re
import subprocess
from pathlib import Path

from realstack.config import HarnessConfig
from realstack.project import load_project
from realstack.stamps import RunNames

from tests.harness.helpers import names_for
from tests.harness.nested import installed_harness_environment, pytest_in, service_environment
from tests.harness.notes_project import build_project

ANYIO_TEST = """\
import pytest
from sqlalchemy import text


@pytest.mark.anyio
async def test_marked_anyio_uses_the_runs_database(db_session):
    assert await db_session.scalar(text("SELECT 1")) == 1
"""


def notes_on_native_table(root: Path, *, anyio_test: bool = False) -> Path:
    """The notes project with its settings in pytest 9's native [tool.pytest] table, anyio's
    plugin on (as in any FastAPI venv), and optionally a guarded test marked anyio."""
    build_project(root, copy_core=False)
    pyproject = root / "pyproject.toml"
    text = pyproject.read_text().replace("[tool.pytest.ini_options]", "[tool.pytest]")
    pyproject.write_text(text.replace('"-p", "no:anyio", ', ""))
    if anyio_test:
        (root / "tests" / "integration" / "test_anyio.py").write_text(ANYIO_TEST)
    return root


def run_pytest(
    root: Path, harness_config: HarnessConfig, run_id: str, *args: str
) -> subprocess.CompletedProcess[str]:
    """pytest in the project, with this env's installed harness, on this run's PostgreSQL."""
    notes = load_project(root / "pyproject.toml")
    env = installed_harness_environment(harness_config, root)
    env |= service_environment(harness_config, with_s3=False)
    env[notes.run_id_variable] = run_id
    return pytest_in(root, env, *args)


def test_a_native_table_missing_a_loop_scope_gets_the_line_for_that_table(
    harness_config: HarnessConfig, run_names: RunNames, tmp_path: Path
) -> None:
    root = notes_on_native_table(tmp_path / "notes")
    pyproject = root / "pyproject.toml"
    text = pyproject.read_text()
    pyproject.write_text(text.replace('asyncio_default_test_loop_scope = "session"\n', ""))

    result = run_pytest(root, harness_config, names_for(run_names, "native").run_id)
    message = result.stdout + result.stderr

    assert result.returncode == 4, message
    assert "asyncio_default_test_loop_scope='function'" in message
    assert f"add to [tool.pytest] of {pyproject}:" in message
    assert '        asyncio_default_test_loop_scope = "session"' in message
    assert "ini_options" not in message
    assert "collected" not in result.stdout


async def test_a_test_marked_anyio_stops_the_run_with_two_lines_that_make_it_pass(
    harness_config: HarnessConfig, run_names: RunNames, tmp_path: Path
) -> None:
    root = notes_on_native_table(tmp_path / "notes", anyio_test=True)
    pyproject = root / "pyproject.toml"
    run_id = names_for(run_names, "anyio").run_id

    refused = await asyncio.to_thread(run_pytest, root, harness_config, run_id)
    message = refused.stdout + refused.stderr
    addopts = re.search(r"^ +(addopts = .*)$", message, re.MULTILINE)
    markers = re.search(r"^ +(markers = .*)$", message, re.MULTILINE)
    assert addopts is not None and markers is not None, message
    text = pyproject.read_text().replace("addopts = [\n", 'addopts = [\n    "-p", "no:anyio",\n')
    pyproject.write_text(text.replace("[tool.pytest]\n", f"[tool.pytest]\n{markers[1]}\n"))
    fixed = await asyncio.to_thread(run_pytest, root, harness_config, run_id)

    assert refused.returncode == 4, message
    assert "1 guarded test(s) are marked anyio" in message
    assert "tests/integration/test_anyio.py::test_marked_anyio_uses_the_runs_database" in message
    assert f"add to [tool.pytest] of {pyproject}:" in message
    assert addopts[1] == 'addopts = ["-p", "no:anyio"]'
    assert " passed" not in refused.stdout
    assert fixed.returncode == 0, fixed.stdout + fixed.stderr
    assert "6 passed" in fixed.stdout


async def test_under_xdist_each_test_marked_anyio_errors_with_the_lines_and_the_rest_run(
    harness_config: HarnessConfig, run_names: RunNames, tmp_path: Path
) -> None:
    root = notes_on_native_table(tmp_path / "notes", anyio_test=True)
    run_id = names_for(run_names, "anyioxd").run_id

    result = await asyncio.to_thread(run_pytest, root, harness_config, run_id, "-n", "1")
    output = result.stdout + result.stderr

    assert result.returncode == 1, output
    assert "INTERNALERROR" not in output
    assert "ERROR tests/integration/test_anyio.py::test_marked_anyio_uses_the_runs_database" in (
        result.stdout
    )
    assert '        addopts = ["-p", "no:anyio"]' in result.stdout
    assert "5 passed, 1 error" in result.stdout
