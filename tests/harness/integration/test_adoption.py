"""The adoption proof, copy mode: a new Postgres-only project copies the harness's folder,
unchanged and under its own import name, writes an adapter and a [tool.harness] table, and its
tests pass in a venv where pytest-realstack is NOT installed. The copy is linted by its own
rules, not the project's.

Run against this run's PostgreSQL only (no S3 variables at all); boto3 is never imported.
"""

from __future__ import annotations

import asyncio
import difflib
import subprocess
from pathlib import Path

import pytest
from realstack.config import HarnessConfig
from realstack.project import load_project
from realstack.stamps import RunNames
from sqlalchemy.ext.asyncio import AsyncEngine

from tests.harness.helpers import names_for, run_leftovers
from tests.harness.nested import clean_environment, service_environment
from tests.harness.notes_project import CORE, TOXFILE, build_project, plugin_file
from tests.harness.venvs import venv_without_harness

MAX_ADAPTER_LINES = 30
TIMEOUT_S = 180


@pytest.fixture(scope="module")
def python_without_harness(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return venv_without_harness(tmp_path_factory.mktemp("venv") / "copy-mode")


def changed_lines(root: Path) -> int:
    """Lines added or removed in the copies of the core and the toxfile, against the originals."""
    pairs = [(root / "toxfile.py", TOXFILE)]
    pairs += [
        (root / "realstack" / p.relative_to(CORE), p)
        for p in CORE.rglob("*")
        if p.is_file() and not any(part.startswith((".", "__pycache__")) for part in p.parts)
    ]
    changed = 0
    for copy, source in pairs:
        copied = copy.read_text().splitlines() if copy.is_file() else []
        diff = difflib.unified_diff(source.read_text().splitlines(), copied, lineterm="", n=0)
        changed += sum(
            1 for line in diff if line[:1] in "+-" and not line.startswith(("+++", "---"))
        )
    return changed


def run_pytest(
    python: Path, root: Path, env: dict[str, str], *args: str
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(python), "-m", "pytest", "-v", "-s", *args],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        timeout=TIMEOUT_S,
    )


async def test_a_postgres_only_project_adopts_the_core_by_copying_it(
    harness_config: HarnessConfig,
    admin: AsyncEngine,
    run_names: RunNames,
    tmp_path: Path,
    python_without_harness: Path,
) -> None:
    root = build_project(tmp_path / "notes-service", copy_core=True)
    notes = load_project(root / "pyproject.toml")
    child_run = names_for(run_names, "adopt").run_id
    env = clean_environment(harness_config.project, notes)
    env.pop("PYTHONPATH", None)
    env |= service_environment(harness_config, with_s3=False)
    env[notes.run_id_variable] = child_run

    result = await asyncio.to_thread(run_pytest, python_without_harness, root, env)
    adapter_lines = len((root / "tests" / "adapter.py").read_text().splitlines())

    assert not any(k.startswith(("MINIO_", "TEST_S3_", "S3_")) for k in env)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "5 passed" in result.stdout
    assert plugin_file(result.stdout) == root / "realstack" / "plugin.py"
    assert changed_lines(root) == 0
    assert adapter_lines <= MAX_ADAPTER_LINES
    assert await run_leftovers(admin, child_run) == []


def test_the_adopted_projects_guard_stops_a_wrong_url_before_collection(
    harness_config: HarnessConfig, tmp_path: Path, python_without_harness: Path
) -> None:
    root = build_project(tmp_path / "notes-service", copy_core=True)
    notes = load_project(root / "pyproject.toml")
    env = clean_environment(harness_config.project, notes)
    env.pop("PYTHONPATH", None)
    env["TEST_DATABASE_URL"] = "sqlite:///x.db"

    result = run_pytest(python_without_harness, root, env)
    message = result.stdout + result.stderr

    assert result.returncode == 4, message
    assert "Integration tests require postgresql+asyncpg:// (the scheme is 'sqlite')" in message
    assert "TEST_DATABASE_URL='sqlite:///x.db'" in message
    assert "S3" not in message
    assert "collected" not in result.stdout
    assert not (root / "x.db").exists()
