"""A second pytest run of this tier against the current services, for tests of the harness.

The child gets the services this run resolved (from the `harness_config` fixture) as the
contract's variables, and its own run id; nothing else of the parent's run leaks into it.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from urllib.parse import unquote, urlsplit

from realstack import contract
from realstack.config import HarnessConfig
from realstack.project import Project, load_project

TIER_DIR = Path(__file__).resolve().parent
TIER_CONFIG = TIER_DIR / "pyproject.toml"
REPO_ROOT = TIER_DIR.parents[1]
EXAMPLES = TIER_DIR / "examples"
NESTED_TIMEOUT_S = 180

# Where the services are, and how a run behaves: the child gets these from us, or not at all.
# Kept: TEST_ALLOWED_HOSTS and the embedded launcher's own settings (binaries, cache, run base).
_KEPT = {
    contract.TEST_ALLOWED_HOSTS.name,
    contract.PG_BINDIR.name,
    contract.TEST_SERVICES_TIMEOUT.name,
    contract.TEST_HARNESS_CACHE_DIR.name,
    contract.TEST_HARNESS_RUN_BASE.name,
}
_DROPPED = {v.name for v in contract.VARIABLES} - _KEPT


def clean_environment(*projects: Project) -> dict[str, str]:
    """os.environ without pytest's and xdist's variables, the projects' own (run id, ready
    file, the app's URL), and the contract's service variables: a fresh run, with no services."""
    prefixes = ("PYTEST_", *(f"{p.env_prefix}_" for p in projects))
    return {k: v for k, v in os.environ.items() if not k.startswith(prefixes) and k not in _DROPPED}


def installed_harness_environment(config: HarnessConfig, root: Path) -> dict[str, str]:
    """clean_environment for the project at `root` (one built with `copy_core=False`), without
    PYTHONPATH: its run imports the harness installed in this env, as a team's would."""
    env = clean_environment(config.project, load_project(root / "pyproject.toml"))
    env.pop("PYTHONPATH", None)
    return env


def pytest_in(root: Path, env: Mapping[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    """`pytest -v ARGS` from the project at `root`, under `env`, its output captured."""
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-v", *args],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        timeout=NESTED_TIMEOUT_S,
    )


def service_environment(config: HarnessConfig, *, with_s3: bool = True) -> dict[str, str]:
    """The resolved services as the variables tox-docker and the launcher give (POSTGRES_*),
    plus the S3 endpoint. No tox hook marked them (TEST_TOX_DOCKER_SERVICES), so the child
    inspects their database like one you named: it holds no tables but the runs' own."""
    parts = urlsplit(config.database_url)
    host = parts.hostname or ""
    env = {
        "POSTGRES_HOST": f"[{host}]" if ":" in host else host,
        "POSTGRES_PORT": str(parts.port or 5432),
        "POSTGRES_USER": unquote(parts.username or ""),
        "POSTGRES_PASSWORD": unquote(parts.password or ""),
        "POSTGRES_DB": unquote(parts.path.lstrip("/")),
    }
    if with_s3 and config.s3 is not None:
        env |= {
            "TEST_S3_ENDPOINT_URL": config.s3.endpoint_url or "",
            "TEST_S3_ACCESS_KEY": config.s3.access_key,
            "TEST_S3_SECRET_KEY": config.s3.secret_key,
            "S3_REGION": config.s3.region,
        }
    return env


async def run_nested_pytest(
    config: HarnessConfig,
    args: Sequence[str],
    *,
    run_id: str,
    env: Mapping[str, str] | None = None,
    project: Project | None = None,
) -> subprocess.CompletedProcess[str]:
    """`pytest -c <this tier's pyproject> ARGS` from the repo root, on this run's services,
    under its own run id; `env` is applied last (it may name other services). With `project`,
    that project's run instead, from its root."""
    child = project or config.project
    child_env = clean_environment(config.project, child) | service_environment(config)
    child_env |= {child.run_id_variable: run_id, **(env or {})}
    ini, cwd = (
        (TIER_CONFIG, REPO_ROOT) if project is None else (child.root / "pyproject.toml", child.root)
    )
    argv = [sys.executable, "-m", "pytest", "-c", str(ini), "-p", "no:cacheprovider"]
    return await asyncio.to_thread(
        subprocess.run,
        [*argv, *args],
        env=child_env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=NESTED_TIMEOUT_S,
    )
