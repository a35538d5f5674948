"""The probe app (probe_app/) as a project of its own, for nested runs: a [tool.harness] table
naming its adapter (or a variant of it), and probe files from examples/ as its tests. It
migrates to the sample's schema with the sample's Alembic files.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from realstack.project import Project, load_project

from tests.harness.nested import EXAMPLES, REPO_ROOT

ADAPTER = "tests.harness.probe_app.adapter"
ALEMBIC_CONFIG = Path(__file__).resolve().parent / "sample" / "alembic.ini"
TESTS = "checks"  # not `tests`: that name is the repository's package, which the app imports

PYPROJECT = """\
[tool.harness]
name = "probe"
services = ["postgres", "s3"]
guarded_paths = [{tests}]
adapter = {adapter}
alembic_config = {alembic}
app_database_url_variable = "SAMPLE_DATABASE_URL"

[tool.pytest.ini_options]
pythonpath = [".", {repo}]
addopts = [
    "--strict-markers", "-p", "no:schemathesis", "-p", "no:pytest_postgresql",
    "-p", "no:anyio", "-p", "no:hypothesispytest",
]
asyncio_mode = "auto"
asyncio_default_fixture_loop_scope = "session"
asyncio_default_test_loop_scope = "session"
"""

CONFTEST = 'pytest_plugins = ["realstack.plugin"]\n'

# What the variants take from the probe's adapter: everything but the lifespan.
_SAME_AS_THE_PROBES = (
    f"from {ADAPTER} import create_app, metadata, session_dependency, session_dependency_yields\n"
)

# The probe's adapter with a lifespan of the test's own instead of the app's.
REPLACED_LIFESPAN = (
    _SAME_AS_THE_PROBES
    + """
from contextlib import asynccontextmanager


@asynccontextmanager
async def lifespan(app):
    yield {"greeting": "hello from the adapter's lifespan", "started": "by the adapter"}
"""
)
# The probe's adapter without any lifespan.
NO_LIFESPAN = _SAME_AS_THE_PROBES + "\nlifespan = None\n"


def build_probe_project(root: Path, probe: str, adapter_source: str | None = None) -> Project:
    """The project in `root`, whose tests are the example `probe` (in checks/); its adapter is
    the probe app's, or `adapter_source` written beside the table."""
    adapter = ADAPTER
    if adapter_source is not None:
        adapter = "probe_adapter"
        (root / "probe_adapter.py").write_text(adapter_source)
    (root / TESTS).mkdir(parents=True)
    shutil.copy2(EXAMPLES / probe, root / TESTS / probe)
    (root / "conftest.py").write_text(CONFTEST)
    (root / "pyproject.toml").write_text(
        PYPROJECT.format(
            tests=json.dumps(TESTS),
            adapter=json.dumps(adapter),
            alembic=json.dumps(str(ALEMBIC_CONFIG)),
            repo=json.dumps(str(REPO_ROOT)),
        )
    )
    return load_project(root / "pyproject.toml")
