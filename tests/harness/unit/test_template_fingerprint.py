"""The template fingerprint (templates.fingerprint): one per schema source, so a run reuses a
template exactly when its migrations, Alembic config, the files its table's template_inputs
names, models and PostgreSQL major are the same."""

from __future__ import annotations

from pathlib import Path

import pytest
from realstack.project import Project, ProjectConfigError, load_project
from realstack.templates import fingerprint, template_prefix
from sqlalchemy import MetaData

from tests.harness.helpers import (
    with_extra_column,
    write_migrations_project,
    write_project,
)
from tests.harness.sample.models import Base

PG18 = 180001


@pytest.fixture
def project(tmp_path: Path) -> Project:
    return write_migrations_project(tmp_path / "a", "tmplcheck")


def fp(project: Project, metadata: MetaData = Base.metadata, version: int = PG18) -> str:
    return fingerprint(project, metadata, version)


def test_the_same_source_gives_the_same_fingerprint_in_any_checkout(
    project: Project, tmp_path: Path
) -> None:
    elsewhere = write_migrations_project(tmp_path / "b" / "checkout", "tmplcheck")

    assert fp(project) == fp(project) == fp(elsewhere)
    assert len(fp(project)) == 16 and int(fp(project), 16) >= 0
    assert template_prefix(project) == "tmpl_tmplcheck_"


def test_it_changes_when_a_migration_is_edited_or_added(project: Project) -> None:
    before = fp(project)
    versions = project.root / "migrations" / "versions"
    first = versions / "0001_notes.py"
    first.write_text(first.read_text() + "\n# an edit\n")
    edited = fp(project)
    (versions / "0002_more.py").write_text('revision = "0002"\ndown_revision = "0001"\n')

    assert len({before, edited, fp(project)}) == 3


def test_it_ignores_bytecode_caches(project: Project) -> None:
    before = fp(project)
    cache = project.root / "migrations" / "versions" / "__pycache__"
    cache.mkdir()
    (cache / "0001_notes.cpython-311.pyc").write_bytes(b"\x00bytecode")
    (project.root / "migrations" / "stray.pyc").write_bytes(b"\x00bytecode")

    assert fp(project) == before


def test_it_changes_with_the_alembic_ini(project: Project) -> None:
    before = fp(project)
    config = project.alembic_config
    config.write_text(config.read_text().replace("level = WARNING", "level = INFO"))

    assert fp(project) != before


def test_with_a_pyproject_config_only_its_alembic_table_counts(tmp_path: Path) -> None:
    root = write_migrations_project(tmp_path / "toml", "tmplcheck").root  # its migrations/
    pyproject = write_project(root, ("postgres",), name="tmplcheck").root / "pyproject.toml"
    table = '[tool.alembic]\nscript_location = "%(here)s/migrations"\n'
    pyproject.write_text(f"{pyproject.read_text()}\n{table}")
    project = load_project(pyproject)
    before = fp(project)
    pyproject.write_text(f"{pyproject.read_text()}\n[tool.other]\nkey = 1\n")
    unrelated = fp(project)
    pyproject.write_text(pyproject.read_text().replace(table, f'{table}path_separator = "os"\n'))

    assert project.alembic_config == pyproject
    assert unrelated == before
    assert fp(project) != before


def test_it_changes_when_a_model_changes(project: Project) -> None:
    assert fp(project, with_extra_column(Base.metadata)) != fp(project)
    assert fp(project, MetaData()) != fp(project)


def test_it_changes_with_the_postgresql_major_only(project: Project) -> None:
    assert fp(project, version=180001) == fp(project, version=180006)
    assert fp(project, version=170005) != fp(project, version=180001)


def test_another_project_with_the_same_source_has_its_own(project: Project, tmp_path: Path) -> None:
    other = write_migrations_project(tmp_path / "other", "tmplother")

    assert fp(other) != fp(project)


def project_reading(root: Path, files: dict[str, str], patterns: list[str]) -> Project:
    """A project whose migrations read `files` (path under the root: content), which its
    template_inputs name with `patterns`."""
    for relative, content in files.items():
        (root / relative).parent.mkdir(parents=True, exist_ok=True)
        (root / relative).write_text(content)
    return write_migrations_project(root, "tmplcheck", template_inputs=patterns)


SEEDS = {"app/sql/a.sql": "INSERT INTO notes VALUES (1);", "app/sql/b.sql": "SELECT 2;"}


def test_it_changes_when_a_file_named_in_template_inputs_changes_or_joins(tmp_path: Path) -> None:
    project = project_reading(tmp_path, SEEDS, ["app/sql/*.sql"])
    before = fp(project)
    (tmp_path / "app" / "sql" / "a.sql").write_text("INSERT INTO notes VALUES (2);")
    edited = fp(project)
    (tmp_path / "app" / "sql" / "c.sql").write_text("SELECT 3;")  # the pattern matches it too
    joined = fp(project)
    (tmp_path / "app" / "unnamed.txt").write_text("read by nothing")
    cache = tmp_path / "app" / "sql" / "__pycache__"
    cache.mkdir()
    (cache / "x.cpython-311.pyc").write_bytes(b"\x00bytecode")

    assert len({before, edited, joined}) == 3
    assert fp(project) == joined


def test_the_inputs_count_by_path_and_content_in_any_pattern_order(tmp_path: Path) -> None:
    listed = project_reading(tmp_path / "listed", SEEDS, ["app/sql/b.sql", "app/sql/a.sql"])
    globbed = project_reading(tmp_path / "globbed", SEEDS, ["app/sql/*.sql"])
    overlapping = project_reading(tmp_path / "both", SEEDS, ["app/**/*.sql", "app/sql/a.sql"])
    renamed = {"app/sql/a2.sql": SEEDS["app/sql/a.sql"], "app/sql/b.sql": SEEDS["app/sql/b.sql"]}
    moved = project_reading(tmp_path / "moved", renamed, ["app/sql/*.sql"])

    assert fp(listed) == fp(globbed) == fp(overlapping)
    assert fp(moved) != fp(globbed)
    assert fp(globbed) != fp(write_migrations_project(tmp_path / "none", "tmplcheck"))


def test_a_named_input_that_is_gone_is_refused_naming_the_pattern_and_the_fix(
    tmp_path: Path,
) -> None:
    files = SEEDS | {"app/constants.py": "GREETING = 'hello'\n"}
    project = project_reading(tmp_path, files, ["app/sql/*.sql", "app/constants.py"])
    (tmp_path / "app" / "constants.py").unlink()

    with pytest.raises(ProjectConfigError) as refused:
        fp(project)

    message = str(refused.value)
    assert "template_inputs: 'app/constants.py' matches no file under" in message
    assert str(tmp_path) in message
    assert "correct it, or remove it" in message
