"""Per-run (per-xdist-worker) database setup: migrating an empty database from scratch versus
cloning the migrated template (realstack/templates.py), side by side in one process.

Two projects:
- "bench-chain", generated here at run time into a temp directory (never committed): 20 tables that
  evolve over 200 Alembic revisions (create_table with foreign keys and seed rows, add_column,
  create_index, alter_column, create_foreign_key, UPDATE data steps), with an adapter module
  whose `metadata` is the final schema, so the template's drift check runs for real;
- docstore itself (its migrations, and the metadata of tests.app_adapter).

What one setup is, timed from the first statement to an open connection on a database that is
ready for the tests (the same end point for both, so the ratio is not flattered):
- migrate:  create the run's database (realstack/janitor.py run_store: CREATE DATABASE,
            stamp, settings), connect, `alembic upgrade head` (realstack/migrations.py
            migrate: the 200 scripts are loaded and run). The drift check, which a run without
            a template would add on top, is timed apart (`drift_check_ms`) and not included.
- template: run_store with the template: CREATE DATABASE ... TEMPLATE ... STRATEGY FILE_COPY,
            stamp, settings; then connect and SELECT 1.
The template itself is built once (ensure_template: migrations, drift check, stamp, marked as a
template) before the runs; that one-off time is reported too.

Run from the repo root: `.venv/bin/python bench/bench_setup.py` (starts a cold embedded
PostgreSQL, or uses the one that TEST_DATABASE_URL, POSTGRES_PORT or warm services name: it must
not hold the templates yet, and it keeps them, the generated chain's too).
BENCH_SETUP_RUNS (default 10) sets the runs of each kind.
"""

from __future__ import annotations

import asyncio
import importlib.util
import os
import shutil
import statistics
import sys
import tempfile
import textwrap
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from realstack import (
    HarnessConfig,
    Project,
    contract,
    embedded_settings,
    find_pyproject,
    find_services,
    load_project,
    resolve_config,
)
from realstack.engines import autocommit_engine, create_test_engine
from realstack.janitor import drop_database, run_store
from realstack.migrations import drift, migrate
from realstack.stamps import RunNames
from realstack.templates import ensure_template, fingerprint, template_prefix
from sqlalchemy import MetaData, text
from sqlalchemy.pool import NullPool

ROOT = Path(__file__).resolve().parents[1]
SETUP_RUNS = int(os.environ.get("BENCH_SETUP_RUNS", "10"))
CHAIN_TABLES = 20
CHAIN_ROUNDS = 9  # revisions after the create_table ones, per table
CHAIN_REVISIONS = CHAIN_TABLES * (1 + CHAIN_ROUNDS)  # 200
CHAIN_SEED_ROWS = 1000  # rows per table, inserted by its create revision
MS = 1000.0


# --- the generated chain -------------------------------------------------------------------


def _t(k: int) -> str:
    return f"t{k:02d}"


def _ref(k: int) -> int:
    """The table t<k>.ref_id points at: a lower one (or itself), so the FKs have no cycle."""
    return k // 2


@dataclass(frozen=True)
class Revision:
    slug: str
    upgrade: str
    downgrade: str


def _create(k: int) -> Revision:
    t = _t(k)
    parent = (
        f'    sa.Column("parent_id", sa.Integer(), sa.ForeignKey("{_t(k - 1)}.id", '
        f'name="fk_{t}_parent"), nullable=True),\n'
        if k
        else ""
    )
    parent_value = ", parent_id" if k else ""
    parent_select = ", g" if k else ""
    upgrade = (
        f'op.create_table(\n    "{t}",\n'
        '    sa.Column("id", sa.Integer(), primary_key=True),\n'
        '    sa.Column("name", sa.String(length=100), nullable=False),\n'
        f"{parent}"
        '    sa.Column("created_at", sa.DateTime(timezone=True), '
        "server_default=sa.func.now(), nullable=False),\n)\n"
        f'op.execute(\n    "INSERT INTO {t} (id, name{parent_value}) '
        f"SELECT g, 'row ' || g{parent_select} "
        f'FROM generate_series(1, {CHAIN_SEED_ROWS}) AS g"\n)'
    )
    return Revision(f"create_{t}", upgrade, f'op.drop_table("{t}")')


def _round(j: int, k: int) -> Revision:
    t = _t(k)
    steps: dict[int, Revision] = {
        0: Revision(
            f"{t}_add_score",
            f'op.add_column("{t}", sa.Column("score", sa.Integer(), nullable=True))',
            f'op.drop_column("{t}", "score")',
        ),
        1: Revision(f"{t}_fill_score", f'op.execute("UPDATE {t} SET score = id * 7 % 101")', ""),
        2: Revision(
            f"{t}_index_score",
            f'op.create_index("ix_{t}_score", "{t}", ["score"])',
            f'op.drop_index("ix_{t}_score", table_name="{t}")',
        ),
        3: Revision(
            f"{t}_add_label",
            f'op.add_column("{t}", sa.Column("label", sa.String(length=50), nullable=True))',
            f'op.drop_column("{t}", "label")',
        ),
        4: Revision(
            f"{t}_fill_label",
            f'op.execute("UPDATE {t} SET label = upper(name) WHERE score > 10")',
            "",
        ),
        5: Revision(
            f"{t}_index_label_score",
            f'op.create_index("ix_{t}_label_score", "{t}", ["label", "score"])',
            f'op.drop_index("ix_{t}_label_score", table_name="{t}")',
        ),
        6: Revision(
            f"{t}_widen_name",
            f'op.alter_column(\n    "{t}", "name", type_=sa.String(length=200), '
            "existing_type=sa.String(length=100),\n    existing_nullable=False,\n)",
            f'op.alter_column(\n    "{t}", "name", type_=sa.String(length=100), '
            "existing_type=sa.String(length=200),\n    existing_nullable=False,\n)",
        ),
        7: Revision(
            f"{t}_add_ref",
            f'op.add_column("{t}", sa.Column("ref_id", sa.Integer(), nullable=True))\n'
            f'op.create_foreign_key("fk_{t}_ref", "{t}", "{_t(_ref(k))}", ["ref_id"], ["id"])\n'
            f'op.create_index("ix_{t}_ref_id", "{t}", ["ref_id"])',
            f'op.drop_index("ix_{t}_ref_id", table_name="{t}")\n'
            f'op.drop_constraint("fk_{t}_ref", "{t}", type_="foreignkey")\n'
            f'op.drop_column("{t}", "ref_id")',
        ),
        8: Revision(
            f"{t}_add_active",
            f'op.add_column(\n    "{t}",\n    sa.Column("active", sa.Boolean(), '
            "server_default=sa.true(), nullable=False),\n)\n"
            f'op.execute("UPDATE {t} SET ref_id = id, active = false WHERE id % 3 = 0")',
            f'op.drop_column("{t}", "active")',
        ),
    }
    return steps[j]


def chain_revisions() -> list[Revision]:
    """Every table created (in FK order), then round after round of changes to each."""
    creates = [_create(k) for k in range(CHAIN_TABLES)]
    rounds = [_round(j, k) for j in range(CHAIN_ROUNDS) for k in range(CHAIN_TABLES)]
    return creates + rounds


def _revision_file(number: int, rev: Revision) -> str:
    down = f'"c{number - 1:03d}"' if number > 1 else "None"
    indent = "    "
    return (
        f'"""{rev.slug}\n\nRevision ID: c{number:03d}\nRevises: {down.strip(chr(34))}\n"""\n\n'
        "import sqlalchemy as sa\nfrom alembic import op\n\n"
        f'revision = "c{number:03d}"\ndown_revision = {down}\n'
        "branch_labels = None\ndepends_on = None\n\n\n"
        f"def upgrade() -> None:\n{textwrap.indent(rev.upgrade, indent)}\n\n\n"
        f"def downgrade() -> None:\n{textwrap.indent(rev.downgrade or 'pass', indent)}\n"
    )


def _table_source(k: int) -> str:
    """The final state of t<k>, as the adapter's models say it."""
    t = _t(k)
    parent = (
        f'    Column("parent_id", Integer, ForeignKey("{_t(k - 1)}.id", name="fk_{t}_parent")),\n'
        if k
        else ""
    )
    return (
        f'Table(\n    "{t}",\n    metadata,\n'
        '    Column("id", Integer, primary_key=True),\n'
        '    Column("name", String(200), nullable=False),\n'
        f"{parent}"
        '    Column("created_at", DateTime(timezone=True), server_default=func.now(), '
        "nullable=False),\n"
        '    Column("score", Integer),\n'
        '    Column("label", String(50)),\n'
        f'    Column("ref_id", Integer, ForeignKey("{_t(_ref(k))}.id", name="fk_{t}_ref")),\n'
        '    Column("active", Boolean, server_default=true(), nullable=False),\n'
        f'    Index("ix_{t}_score", "score"),\n'
        f'    Index("ix_{t}_label_score", "label", "score"),\n'
        f'    Index("ix_{t}_ref_id", "ref_id"),\n)\n'
    )


ADAPTER_HEAD = '''"""The generated chain project's adapter: its models are the schema after all its
revisions (the template's drift check compares them). It has no app."""

from typing import Any

from sqlalchemy import (
    Boolean,
    Column,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    func,
    true,
)

metadata = MetaData()


def create_app(run: Any) -> Any:
    raise NotImplementedError("the chain project exists for its migrations only")


async def session_dependency() -> None:
    raise NotImplementedError("the chain project exists for its migrations only")


'''

ENV_PY = '''"""Alembic env of the generated chain: it runs on the connection passed in."""

from alembic import context

connection = context.config.attributes.get("connection")
if connection is None:
    raise SystemExit("the bench's chain project migrates only on a connection passed in")
context.configure(connection=connection, target_metadata=None)
with context.begin_transaction():
    context.run_migrations()
'''

PYPROJECT = """[tool.harness]
name = "bench-chain"
services = ["postgres"]
guarded_paths = ["tests"]
adapter = "chain_adapter"
alembic_config = "alembic.ini"
drift_check = true
"""

ALEMBIC_INI = """[alembic]
script_location = %(here)s/migrations
path_separator = os
"""


def write_chain_project(root: Path) -> tuple[Project, MetaData]:
    """The throwaway project in `root`: its table, Alembic config, env.py, the 200 revisions
    and the adapter; returns the project and the adapter's metadata."""
    versions = root / "migrations" / "versions"
    versions.mkdir(parents=True)
    (root / "tests").mkdir()  # its guarded path: the table names only folders that exist
    (root / "pyproject.toml").write_text(PYPROJECT)
    (root / "alembic.ini").write_text(ALEMBIC_INI)
    (root / "migrations" / "env.py").write_text(ENV_PY)
    revisions = chain_revisions()
    assert len(revisions) == CHAIN_REVISIONS
    for number, rev in enumerate(revisions, start=1):
        (versions / f"c{number:03d}_{rev.slug}.py").write_text(_revision_file(number, rev))
    tables = "\n\n".join(_table_source(k) for k in range(CHAIN_TABLES))
    adapter = root / "chain_adapter.py"
    adapter.write_text(ADAPTER_HEAD + tables)
    # Loaded from its file, not imported by name: nothing of it stays in sys.modules.
    spec = importlib.util.spec_from_file_location("chain_adapter", adapter)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    metadata = module.metadata
    assert isinstance(metadata, MetaData)
    return load_project(root / "pyproject.toml"), metadata


@contextmanager
def chain_project() -> Iterator[tuple[Project, MetaData]]:
    root = Path(tempfile.mkdtemp(prefix="bench-chain-"))
    try:
        yield write_chain_project(root)
    finally:
        shutil.rmtree(root, ignore_errors=True)


# --- the measurement -----------------------------------------------------------------------


@dataclass(frozen=True)
class SetupResult:
    project: str
    revisions: int
    runs: int
    migrate_ms: float  # median; CREATE DATABASE + connect + upgrade head (no drift check)
    template_ms: float  # median; CREATE DATABASE ... TEMPLATE + connect
    template_build_ms: float  # one run: ensure_template on a server without the template
    drift_check_ms: float  # median, after each migrate run; not in migrate_ms
    # Medians of the part of each that is run_store's (an admin connection, CREATE DATABASE
    # [TEMPLATE], the stamp, the settings); the rest is connecting to it (and migrating).
    create_ms: float
    clone_ms: float
    migrate_samples_ms: list[float]
    template_samples_ms: list[float]

    @property
    def ratio(self) -> float:
        return self.migrate_ms / self.template_ms


async def _head(url: str) -> str:
    engine = create_test_engine(url, None, poolclass=NullPool)
    try:
        async with engine.connect() as conn:
            return str(await conn.scalar(text("SELECT version_num FROM alembic_version")))
    finally:
        await engine.dispose()


async def _template_exists(server_url: str, project: Project, metadata: MetaData) -> bool:
    engine = autocommit_engine(server_url)
    try:
        async with engine.connect() as conn:
            version = int(await conn.scalar(text("SHOW server_version_num")) or 0)
            name = template_prefix(project) + fingerprint(project, metadata, version)
            found = await conn.scalar(
                text("SELECT count(*) FROM pg_database WHERE datname = :n"), {"n": name}
            )
            return bool(found)
    finally:
        await engine.dispose()


async def _migrate_once(
    server_url: str, project: Project, metadata: MetaData, names: RunNames
) -> tuple[float, float, float, str]:
    started = time.perf_counter()
    async with run_store(server_url, names, "database") as store:
        created = time.perf_counter() - started
        engine = create_test_engine(store.url, None, poolclass=NullPool)
        try:
            async with engine.begin() as conn:
                await conn.run_sync(lambda sync: migrate(project, sync))
            elapsed = time.perf_counter() - started
            async with engine.connect() as conn:
                checked = time.perf_counter()
                differences = await conn.run_sync(lambda sync: drift(sync, metadata, project))
                drift_s = time.perf_counter() - checked
            if differences:
                raise AssertionError(f"{project.name}: the migrated schema drifts: {differences}")
        finally:
            await engine.dispose()
        head = await _head(store.url)
    return elapsed * MS, created * MS, drift_s * MS, head


async def _clone_once(server_url: str, names: RunNames, template: str) -> tuple[float, float, str]:
    started = time.perf_counter()
    async with run_store(server_url, names, "database", template=template) as store:
        created = time.perf_counter() - started
        engine = create_test_engine(store.url, None, poolclass=NullPool)
        try:
            async with engine.connect() as conn:
                await conn.execute(text("SELECT 1"))
            elapsed = time.perf_counter() - started
        finally:
            await engine.dispose()
        head = await _head(store.url)
    return elapsed * MS, created * MS, head


async def measure_setup(
    server_url: str, project: Project, metadata: MetaData, run_id: str, runs: int = SETUP_RUNS
) -> SetupResult:
    """Build the template once (timed), then `runs` migrate and clone setups, alternating so
    that both see the same server and machine state; one of each first, not counted."""
    if await _template_exists(server_url, project, metadata):
        raise AssertionError(
            f"{project.name}: this server has the template already; the bench needs a server "
            "without it to time its build (it starts its own embedded one by default)"
        )
    started = time.perf_counter()
    template = await ensure_template(server_url, project, metadata)
    build_ms = (time.perf_counter() - started) * MS
    migrated, cloned, drifts, created, clone_created = [], [], [], [], []
    heads = set()
    for i in range(runs + 1):
        m_ms, m_created, d_ms, m_head = await _migrate_once(
            server_url, project, metadata, RunNames(project, run_id, f"m{i}")
        )
        c_ms, c_created, c_head = await _clone_once(
            server_url, RunNames(project, run_id, f"t{i}"), template
        )
        heads |= {m_head, c_head}
        if i:
            migrated.append(m_ms)
            cloned.append(c_ms)
            drifts.append(d_ms)
            created.append(m_created)
            clone_created.append(c_created)
    if len(heads) != 1:
        raise AssertionError(f"{project.name}: migrated and cloned heads differ: {heads}")
    return SetupResult(
        project=project.name,
        revisions=_count_revisions(project),
        runs=runs,
        migrate_ms=statistics.median(migrated),
        template_ms=statistics.median(cloned),
        template_build_ms=build_ms,
        drift_check_ms=statistics.median(drifts),
        create_ms=statistics.median(created),
        clone_ms=statistics.median(clone_created),
        migrate_samples_ms=migrated,
        template_samples_ms=cloned,
    )


def _count_revisions(project: Project) -> int:
    from alembic.script import ScriptDirectory
    from realstack.migrations import alembic_config

    return len(list(ScriptDirectory.from_config(alembic_config(project)).walk_revisions()))


async def drop_templates(server_url: str, project: Project) -> list[str]:
    """Drop every migrated template of `project` on the server (the throwaway chain's)."""
    engine = autocommit_engine(server_url)
    try:
        async with engine.connect() as conn:
            rows = await conn.execute(
                text("SELECT datname FROM pg_database WHERE starts_with(datname, :prefix)"),
                {"prefix": template_prefix(project)},
            )
            names = [str(name) for (name,) in rows]
            for name in names:
                await drop_database(conn, name)
            return names
    finally:
        await engine.dispose()


async def measure_chain(server_url: str, run_id: str, runs: int = SETUP_RUNS) -> SetupResult:
    """The generated chain, whose template is dropped afterwards: it is nobody's schema."""
    with chain_project() as (project, metadata):
        try:
            return await measure_setup(server_url, project, metadata, run_id, runs)
        finally:
            await drop_templates(server_url, project)


async def measure_docstore(config: HarnessConfig, runs: int = SETUP_RUNS) -> SetupResult:
    from tests.app_adapter import metadata

    return await measure_setup(config.database_url, config.project, metadata, config.run_id, runs)


def print_results(results: list[SetupResult]) -> None:
    print(
        f"| per-run setup (median of {SETUP_RUNS}) | revisions | migrate ms | template ms "
        "| ratio | template build ms (once) | drift check ms |"
    )
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    for r in results:
        print(
            f"| {r.project} | {r.revisions} | {r.migrate_ms:.1f} | {r.template_ms:.1f} "
            f"| {r.ratio:.0f}x | {r.template_build_ms:.0f} | {r.drift_check_ms:.1f} |"
        )


async def _both(config: HarnessConfig) -> list[SetupResult]:
    chain = await measure_chain(config.database_url, config.run_id)
    return [chain, await measure_docstore(config)]


def main() -> list[SetupResult]:
    """Against the configured PostgreSQL, or an embedded one started (and stopped) here."""
    project = replace(load_project(find_pyproject(ROOT)), services=frozenset({"postgres"}))
    env = dict(os.environ)
    env |= find_services(project, env)
    if contract.resolve_database(project, env).url is not None:
        return asyncio.run(_both(resolve_config(project, env)))
    from realstack import embedded_services

    # Cold (initdb): no cached templates in it, and never saved back into the launcher's cache.
    settings = embedded_settings(project, env)
    with embedded_services(settings, use_cached_cluster=False, report=None) as running:
        return asyncio.run(_both(resolve_config(project, running.env)))


if __name__ == "__main__":
    print_results(main())
