"""The harness's one configuration table, `[tool.harness]` in pyproject.toml, as a frozen object.

Every name the harness uses (credentials, stamps, variable prefixes, directories) derives from
the table's `name`. Standard library only: tox, make, the launcher and pytest all read it.
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass
from pathlib import Path, PurePath
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
drift_check = true
template_inputs = []                     # files your migrations read, e.g. ["app/sql/*.sql"]"""


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
    # Paths or glob patterns, relative to `root`, of the files the migrations read besides
    # their own folder (SQL files, the app's constants): templates.fingerprint covers them.
    template_inputs: tuple[str, ...] = ()

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

    def template_input_files(self) -> dict[str, Path]:
        """The files `template_inputs` names now, by their POSIX path relative to the root,
        sorted; raises ProjectConfigError when a pattern matches no file (any more)."""
        files, problems = match_template_inputs(self.root, self.template_inputs)
        if problems:
            raise ProjectConfigError(
                f"[tool.{TABLE}] in {self.root / 'pyproject.toml'}, read again for this run's "
                "migrated template: " + "; ".join(problems)
            )
        return files

    def is_guarded(self, path: Path) -> bool:
        """True when `path` is, is inside, or contains a guarded test path."""
        path = path.resolve()
        return any(
            path == guarded or guarded in path.parents or path in guarded.parents
            for guarded in self.guarded_paths
        )


def is_bytecode(path: PurePath) -> bool:
    """A compiled module, which Python rewrites at will: never a fingerprint's input."""
    return "__pycache__" in path.parts or path.suffix == ".pyc"


def match_template_inputs(root: Path, patterns: object) -> tuple[dict[str, Path], list[str]]:
    """The files that `template_inputs` (paths or pathlib glob patterns, `**` included) match
    under `root`, by relative POSIX path, sorted; and a problem for each pattern that is not a
    relative path inside the root, or that matches no file (a typo must not keep a stale
    template)."""
    key = "template_inputs"
    if not isinstance(patterns, list | tuple) or not all(isinstance(p, str) for p in patterns):
        return {}, [
            f"{key}: must be a list of paths or glob patterns, got {patterns!r}; "
            'e.g. ["app/sql/*.sql", "app/constants.py"]'
        ]
    files: dict[str, Path] = {}
    problems: list[str] = []
    for pattern in patterns:
        parts = PurePath(pattern).parts
        if not parts:
            problems.append(f"{key}: {pattern!r} is empty; remove it from the list")
            continue
        if PurePath(pattern).is_absolute():
            problems.append(
                f"{key}: {pattern!r} is absolute; write it relative to the project root "
                f"{root}, e.g. 'app/sql/*.sql'"
            )
            continue
        if ".." in parts:
            problems.append(
                f"{key}: {pattern!r} leaves the project root {root} ('..'); name files inside "
                "the project"
            )
            continue
        matches = sorted(root.glob(pattern))
        found = [m for m in matches if m.is_file() and not is_bytecode(m.relative_to(root))]
        if found:
            files.update((m.relative_to(root).as_posix(), m) for m in found)
        elif matches and all(m.is_dir() for m in matches):
            problems.append(
                f"{key}: {pattern!r} matches only folders under {root}; name their files, "
                f"e.g. '{pattern.rstrip('/')}/**/*'"
            )
        else:
            problems.append(
                f"{key}: {pattern!r} matches no file under {root}; correct it, or remove it "
                "(a pattern that names nothing would keep a stale template)"
            )
    return dict(sorted(files.items())), problems


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

    unknown = sorted(set(table) - KEYS)
    if unknown:
        problems.append(f"unknown keys {unknown}; the table knows {sorted(KEYS)}")
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
    if isinstance(guarded, list) and "guarded_paths" in table:
        problems += _missing_guarded_paths(root, guarded)
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
    inputs = table.get("template_inputs", [])
    problems += match_template_inputs(root, inputs)[1]
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
        template_inputs=tuple(inputs),
    )


def _missing_guarded_paths(root: Path, guarded: list[Any]) -> list[str]:
    """A guarded path that is not there (a typo) would leave every test of the real folder
    without the harness: no guard, no services, no fixtures. Named with the folders that are."""
    problems = []
    for path in guarded:
        if not isinstance(path, str) or (root / path).exists():
            continue
        near = sorted(
            str(p.relative_to(root))
            for p in (root / path).parent.glob("*")
            if p.is_dir() and not p.name.startswith((".", "_"))
        )
        there = f"; there: {', '.join(near)}" if near else ""
        problems.append(
            f"guarded_paths: {path!r} does not exist under {root}{there} (its tests would run "
            "without the harness); fix: name the folder your integration tests are in"
        )
    return problems


# Every key of the table; the README's table and EXAMPLE_TABLE show each (tests/tooling).
KEYS = frozenset(
    {
        "name",
        "services",
        "guarded_paths",
        "adapter",
        "alembic_config",
        "app_database_url_variable",
        "drift_check",
        "template_inputs",
    }
)


def _indent(text: str) -> str:
    return "\n".join("        " + line for line in text.splitlines())
