"""The table and the variables, resolved once into frozen objects that everything else receives.

`resolve_config` is what pytest uses (guard included); `embedded_settings` is what the
embedded launcher uses. Nothing downstream reads the environment again. Standard library only.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path

from . import contract, guard
from .contract import S3Target
from .guard import DatabaseOrigin
from .project import Credentials, Project

# How many times this process resolved the targets: the plugin does it once per process.
resolutions = 0


def new_run_id() -> str:
    """Unique across concurrent runs on one machine: a timestamp plus the pid."""
    return f"{time.strftime('%y%m%d%H%M%S', time.gmtime())}_{os.getpid()}"


@dataclass(frozen=True)
class HarnessConfig:
    """Where this run's services are (guarded), and how the run behaves."""

    project: Project
    database_url: str = field(repr=False)  # carries the password
    s3: S3Target | None
    run_id: str
    # Who set the database's variables (guard.database_provenance): a URL you typed, or
    # POSTGRES_* nobody vouches for, may be a real database, so it is inspected (safety.py).
    database_origin: DatabaseOrigin
    database_origin_detail: str
    keep_on_failure: bool
    allow_user_tables: bool
    # What each run (or xdist worker) gets of its own: "database" where the role may create
    # databases, else "schema"; decided once by safety.choose_per_run before any test.
    per_run: str = "database"
    test_timeout_s: float = 60.0
    # How long a run waits for another's template build (TEST_SERVICES_TIMEOUT).
    services_timeout_s: float = 30.0
    # TEST_REBUILD_TEMPLATE: the process that resolves (never an xdist worker) drops the
    # project's templates before any test (plugin.py), so the run builds its own afresh.
    rebuild_template: bool = False
    # TEST_S3_WRITE_TRACE of the launcher's own S3 server (buckets.WriteTrace), else None.
    s3_write_trace: str | None = None

    def to_json(self) -> str:
        """For xdist workers, which take the controller's result instead of resolving again."""
        fields = {k: v for k, v in asdict(self).items() if k != "project"}
        return json.dumps(fields)

    @classmethod
    def from_json(cls, project: Project, text: str) -> HarnessConfig:
        fields = json.loads(text)
        s3 = S3Target(**fields.pop("s3")) if fields.get("s3") else None
        fields.pop("s3", None)
        origin = DatabaseOrigin(fields.pop("database_origin"))
        return cls(project=project, s3=s3, database_origin=origin, **fields)


def resolve_config(
    project: Project,
    env: Mapping[str, str],
    *,
    run_id: str | None = None,
    published: Mapping[str, str] | None = None,
) -> HarnessConfig:
    """Resolve and guard the targets; raises guard.GuardError or contract.ContractError.
    `published`: what the harness's own services published (sources.find_services), merged
    into `env` already; POSTGRES_* equal to theirs are trusted as throwaway servers."""
    global resolutions
    resolutions += 1
    allowed = contract.TEST_ALLOWED_HOSTS.value(env, project)
    database = contract.resolve_database(project, env)
    database_url = guard.check_database_target(project, database, allowed, env)
    provenance = guard.database_provenance(project, env, published or {})
    s3 = None
    if project.uses_s3:
        s3 = contract.resolve_s3(project, env)
        guard.check_s3_target(s3, allowed)
    return HarnessConfig(
        project=project,
        database_url=database_url,
        s3=s3,
        run_id=run_id or env.get(project.run_id_variable, "").strip() or new_run_id(),
        database_origin=provenance.origin,
        database_origin_detail=provenance.detail,
        keep_on_failure=contract.TEST_KEEP_ON_FAILURE.value(env, project),
        allow_user_tables=contract.TEST_ALLOW_USER_TABLES.value(env, project),
        test_timeout_s=contract.TEST_TIMEOUT.value(env, project),
        services_timeout_s=contract.TEST_SERVICES_TIMEOUT.value(env, project),
        rebuild_template=contract.TEST_REBUILD_TEMPLATE.value(env, project),
        s3_write_trace=_write_trace(s3, env, project),
    )


def _write_trace(s3: S3Target | None, env: Mapping[str, str], project: Project) -> str | None:
    """The launcher's trace, for the launcher's own endpoint only: an endpoint given by
    TEST_S3_ENDPOINT_URL is another server, whose bucket is listed after every test."""
    if s3 is None or s3.source != contract.FROM_MINIO_VARIABLES:
        return None
    return contract.TEST_S3_WRITE_TRACE.get(env, project)


@dataclass(frozen=True)
class EmbeddedSettings:
    """What the embedded launcher needs: which servers, their credentials, time and places."""

    project: Project
    credentials: Credentials
    timeout_s: float
    cache_dir: Path
    run_base: Path
    pg_bindir: Path | None
    keep_on_failure: bool
    # Started by make (MAKELEVEL, which tox passes on): the warm services' messages then name
    # the make targets the user typed, else the module's command line.
    under_make: bool = False

    @property
    def warm_up_command(self) -> str:
        return "make services-up" if self.under_make else f"python -m {__package__}.embedded up"

    @property
    def warm_down_command(self) -> str:
        return "make services-down" if self.under_make else f"python -m {__package__}.embedded down"

    @property
    def with_s3(self) -> bool:
        return self.project.uses_s3

    @property
    def services_file(self) -> Path:
        """Where `make services-up` (`python -m realstack.embedded up`) publishes the warm
        services (embedded/warm.py): JSON in the run base, one file per project checkout."""
        checkout = hashlib.sha256(str(self.project.root).encode()).hexdigest()[:12]
        return self.run_base / f"services-{checkout}.json"


def _default_run_base(project: Project) -> Path:
    """tmpfs when there is one: initdb and the template copy are I/O bound."""
    shm = Path("/dev/shm")
    parent = shm if shm.is_dir() and os.access(shm, os.W_OK | os.X_OK) else None
    return Path(parent or tempfile.gettempdir()) / f"{project.name}-harness-{os.geteuid()}"


def embedded_settings(project: Project, env: Mapping[str, str]) -> EmbeddedSettings:
    """Raises contract.ContractError on a malformed variable."""

    def text(variable: contract.Variable[str]) -> str:
        return variable.value(env, project)

    credentials = Credentials(
        pg_user=text(contract.POSTGRES_USER),
        pg_password=text(contract.POSTGRES_PASSWORD),
        pg_database=text(contract.POSTGRES_DB),
        s3_access_key=text(contract.MINIO_ROOT_USER),
        s3_secret_key=text(contract.MINIO_ROOT_PASSWORD),
        s3_region=text(contract.S3_REGION),
    )
    return EmbeddedSettings(
        project=project,
        credentials=credentials,
        timeout_s=contract.TEST_SERVICES_TIMEOUT.value(env, project),
        cache_dir=contract.TEST_HARNESS_CACHE_DIR.value(env, project),
        run_base=contract.TEST_HARNESS_RUN_BASE.get(env, project) or _default_run_base(project),
        pg_bindir=contract.PG_BINDIR.get(env, project),
        keep_on_failure=contract.TEST_KEEP_ON_FAILURE.value(env, project),
        under_make=bool(env.get("MAKELEVEL")),
    )


def service_variables(
    settings: EmbeddedSettings,
    pg_port: int,
    s3_port: int | None,
    s3_write_trace: Path | None = None,
) -> dict[str, str]:
    """The variables tox-docker and tox set_env would give, for servers on these ports (and
    the embedded S3 server's write trace, which only the launcher gives)."""
    creds = settings.credentials
    env = {
        contract.POSTGRES_HOST.name: "127.0.0.1",
        contract.POSTGRES_PORT.name: str(pg_port),
        **contract.credential_variables(creds, with_s3=s3_port is not None),
    }
    if s3_port is not None:
        env |= {
            contract.MINIO_HOST.name: "127.0.0.1",
            contract.MINIO_PORT.name: str(s3_port),
            contract.S3_REGION.name: creds.s3_region,
        }
    if s3_port is not None and s3_write_trace is not None:
        env[contract.TEST_S3_WRITE_TRACE.name] = str(s3_write_trace)
    return env


@dataclass(frozen=True)
class RunTargets:
    """What the app adapter gets: the run's database and schema, and its bucket (with S3)."""

    database_url: str = field(repr=False)  # password included; the run's own database
    schema: str | None  # None: the database's default schema; else set it as the search_path
    s3: S3Target | None
    bucket: str | None
