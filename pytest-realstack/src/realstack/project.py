"""The harness's one configuration table, `[tool.harness]` in pyproject.toml, as a frozen object.

Every name the harness uses (credentials, stamps, variable prefixes, directories) derives from
the table's `name`. Standard library only: tox, make, the launcher and pytest all read it.
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

TABLE = "harness"
KNOWN_SERVICES = ("postgres", "s3")
_NAME = re.compile(r"^[a-z][a-z0-9_-]{0,29}$")
_MODULE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$")
_VARIABLE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
EXAMPLE_TABLE = """[tool.harness]
name = "myservice"                       # credentials, stamps and directories derive from it
services = ["postgres"]                  # or ["postgres", "s3"]
guarded_paths = ["tests/integration"]    # tests here need the real services
adapter = "tests.adapter"                # the module that knows your app
alembic_config = "alembic.ini"           # or "pyproject.toml" ([tool.alembic])
app_database_url_variable = "DATABASE_URL"
drift_check = true"""


class ProjectConfigError(Exception):
    """The [tool.harness] table is missing or wrong; str() says what and how to fix it."""


@dataclass(frozen=True)
class Credentials:
    """The throwaway credentials of the test services, the same on every path."""

    pg_user: str
    pg_password: str
    pg_database: str
    s3_access_key: str
    s3_secret_key: str
    s3_region: str = "us-east-1"


@dataclass(frozen=True)
class Project:
    """One project's [tool.harness] table, with the names derived from it."""

    root: Path
    name: str
    services: frozenset[str]
    guarded_paths: tuple[Path, ...]
    adapter: str
    alembic_config: Path
    app_database_url_variable: str
    drift_check: bool

    @property
    def uses_s3(self) -> bool:
        return "s3" in self.services

    @property
    def slug(self) -> str:
        """The name as an SQL and environment identifier part."""
        return self.name.replace("-", "_")

    @property
    def env_prefix(self) -> str:
        return self.slug.upper()

    @property
    def stamp_mark(self) -> str:
        """Written into every stamp; only what carries it is ever dropped."""
        return f"{self.name}-test-harness"

    @property
    def credentials(self) -> Credentials:
        dashed = self.name.replace("_", "-")
        return Credentials(
            pg_user=f"{self.slug}_test",
            pg_password=f"{self.slug}_test_pw",
            pg_database=f"{self.slug}_test",
            s3_access_key=f"{dashed}-test",
            s3_secret_key=f"{dashed}-test-secret",
        )

    @property
    def run_id_variable(self) -> str:
        return f"{self.env_prefix}_TEST_RUN_ID"

    @property
    def ready_file_variable(self) -> str:
        return f"{self.env_prefix}_SERVICES_READY_FILE"

    @property
    def describe_services(self) -> str:
        return "PostgreSQL and S3" if self.uses_s3 else "PostgreSQL"

    def is_guarded(self, path: Path) -> bool:
        """True when `path` is, is inside, or contains a guarded test path."""
        path = path.resolve()
        return any(
            path == guarded or guarded in path.parents or path in guarded.parents
            for guarded in self.guarded_paths
        )


def find_pyproject(start: Path) -> Path:
    """The nearest pyproject.toml at or above `start` that holds a [tool.harness] table."""
    start = start.resolve()
    for folder in (start, *start.parents) if start.is_dir() else start.parents:
        candidate = folder / "pyproject.toml"
        if candidate.is_file() and f"[tool.{TABLE}]" in candidate.read_text(errors="replace"):
            return candidate
    raise ProjectConfigError(
        f"no pyproject.toml with a [tool.{TABLE}] table at or above {start}.\n"
        f"  fix:  add one to your project's pyproject.toml, e.g.\n{_indent(EXAMPLE_TABLE)}"
    )


def load_project(pyproject: Path) -> Project:
    """Read and check the table; every problem is reported at once."""
    try:
        data = tomllib.loads(pyproject.read_text())
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ProjectConfigError(f"cannot read {pyproject}: {exc}") from None
    table = data.get("tool", {}).get(TABLE)
    if not isinstance(table, dict):
        raise ProjectConfigError(
            f"{pyproject} has no [tool.{TABLE}] table.\n  fix:  add it, e.g.\n"
            + _indent(EXAMPLE_TABLE)
        )
    return _parse_table(pyproject.parent.resolve(), table, pyproject)


def _parse_table(root: Path, table: dict[str, Any], source: Path) -> Project:
    problems: list[str] = []

    def get(key: str, kind: type, default: Any = None) -> Any:
        value = table.get(key, default)
        if value is None:
            problems.append(f"{key}: is not set")
        elif not isinstance(value, kind):
            problems.append(f"{key}: must be a {kind.__name__}, got {value!r}")
        return value

    unknown = sorted(set(table) - _KEYS)
    if unknown:
        problems.append(f"unknown keys {unknown}; the table knows {sorted(_KEYS)}")
    name = get("name", str)
    if isinstance(name, str) and not _NAME.fullmatch(name):
        problems.append(
            f"name: {name!r} must be 1-30 chars of a-z, 0-9, '_' or '-', starting with a letter"
        )
    services = get("services", list, ["postgres", "s3"])
    if isinstance(services, list) and (
        "postgres" not in services or not set(services) <= set(KNOWN_SERVICES)
    ):
        problems.append(f'services: must be ["postgres"] or ["postgres", "s3"], got {services!r}')
    guarded = get("guarded_paths", list, ["tests/integration"])
    adapter = get("adapter", str)
    if isinstance(adapter, str) and not _MODULE.fullmatch(adapter):
        problems.append(f"adapter: {adapter!r} must be a dotted module path, e.g. tests.adapter")
    alembic = get("alembic_config", str, "alembic.ini")
    if isinstance(alembic, str) and not (root / alembic).is_file():
        problems.append(f"alembic_config: {root / alembic} does not exist")
    url_variable = get("app_database_url_variable", str, "DATABASE_URL")
    if isinstance(url_variable, str) and not _VARIABLE.fullmatch(url_variable):
        problems.append(f"app_database_url_variable: {url_variable!r} is not a variable name")
    drift = get("drift_check", bool, True)
    if problems:
        raise ProjectConfigError(
            f"[tool.{TABLE}] in {source} has {len(problems)} problem(s):\n"
            + "\n".join(f"  {p}" for p in problems)
            + f"\n  a complete table looks like:\n{_indent(EXAMPLE_TABLE)}"
        )
    return Project(
        root=root,
        name=name,
        services=frozenset(services),
        guarded_paths=tuple((root / p).resolve() for p in guarded),
        adapter=adapter,
        alembic_config=root / alembic,
        app_database_url_variable=url_variable,
        drift_check=drift,
    )


_KEYS = frozenset(
    {
        "name",
        "services",
        "guarded_paths",
        "adapter",
        "alembic_config",
        "app_database_url_variable",
        "drift_check",
    }
)


def _indent(text: str) -> str:
    return "\n".join("        " + line for line in text.splitlines())
