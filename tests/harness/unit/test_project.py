"""The [tool.harness] table: every problem reported at once with a complete example, the names
that derive from `name`, and which paths are guarded."""

from __future__ import annotations

from pathlib import Path

import pytest
from realstack.project import ProjectConfigError, find_pyproject, load_project

from tests.harness.helpers import write_project


def _table(root: Path, body: str) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "alembic.ini").write_text("[alembic]\n")
    (root / "pyproject.toml").write_text("[tool.harness]\n" + body)
    return root / "pyproject.toml"


def test_every_problem_of_the_table_is_reported_at_once(tmp_path: Path) -> None:
    pyproject = _table(
        tmp_path,
        'name = "Bad Name"\nservices = ["mysql"]\nadapter = "not a module"\nsurprise = 1\n',
    )

    with pytest.raises(ProjectConfigError) as problems:
        load_project(pyproject)

    message = str(problems.value)
    assert "4 problem(s)" in message
    for part in ("unknown keys ['surprise']", "name: 'Bad Name'", "services:", "adapter:"):
        assert part in message
    assert "a complete table looks like" in message


def test_the_names_derive_from_the_projects_name(tmp_path: Path) -> None:
    project = write_project(tmp_path / "sample", name="my-service")

    assert project.credentials.pg_user == "my_service_test"
    assert project.credentials.s3_access_key == "my-service-test"
    assert project.stamp_mark == "my-service-test-harness"
    assert project.run_id_variable == "MY_SERVICE_TEST_RUN_ID"


def test_a_path_is_guarded_when_it_is_in_or_holds_a_guarded_path(tmp_path: Path) -> None:
    project = load_project(_table(tmp_path, 'name = "s"\nadapter = "a"\n'))
    guarded = tmp_path / "tests" / "integration"

    assert project.is_guarded(guarded)
    assert project.is_guarded(guarded / "test_x.py")
    assert project.is_guarded(tmp_path / "tests")  # a run of tests/ collects integration too
    assert not project.is_guarded(tmp_path / "tests" / "unit")


def test_without_a_table_above_it_the_search_names_the_table_to_add(tmp_path: Path) -> None:
    with pytest.raises(ProjectConfigError, match=r"no pyproject.toml with a \[tool.harness\]"):
        find_pyproject(tmp_path)


@pytest.mark.parametrize(
    ("inputs", "expected"),
    [
        ('["app/sq/*.sql"]', "template_inputs: 'app/sq/*.sql' matches no file under"),
        ('["app/sql"]', "template_inputs: 'app/sql' matches only folders under"),
        ('["/etc/hosts"]', "template_inputs: '/etc/hosts' is absolute; write it relative to"),
        ('["../shared/x.sql"]', "template_inputs: '../shared/x.sql' leaves the project root"),
        ('[""]', "template_inputs: '' is empty; remove it from the list"),
        ('"app/sql/*.sql"', "template_inputs: must be a list of paths or glob patterns, got 'app"),
    ],
)
def test_a_template_input_that_names_no_file_inside_the_project_is_refused(
    tmp_path: Path, inputs: str, expected: str
) -> None:
    (tmp_path / "app" / "sql").mkdir(parents=True)
    (tmp_path / "app" / "sql" / "seed.sql").write_text("SELECT 1;")
    pyproject = _table(tmp_path, f'name = "s"\nadapter = "a"\ntemplate_inputs = {inputs}\n')

    with pytest.raises(ProjectConfigError) as refused:
        load_project(pyproject)

    message = str(refused.value)
    assert "1 problem(s)" in message
    assert expected in message
    assert "a complete table looks like" in message


def test_template_inputs_are_globbed_from_the_root_double_star_included(tmp_path: Path) -> None:
    for relative in ("app/sql/top.sql", "app/sql/deeper/more.sql", "app/constants.py"):
        (tmp_path / relative).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / relative).write_text(relative)
    (tmp_path / "app" / "sql" / "notes.txt").write_text("not SQL")
    inputs = '["app/sql/**/*.sql", "app/constants.py"]'

    project = load_project(
        _table(tmp_path, f'name = "s"\nadapter = "a"\ntemplate_inputs = {inputs}\n')
    )

    assert project.template_inputs == ("app/sql/**/*.sql", "app/constants.py")
    assert list(project.template_input_files()) == [
        "app/constants.py",
        "app/sql/deeper/more.sql",
        "app/sql/top.sql",
    ]


def test_without_template_inputs_the_table_names_no_input(tmp_path: Path) -> None:
    project = load_project(_table(tmp_path, 'name = "s"\nadapter = "a"\n'))

    assert project.template_inputs == ()
    assert project.template_input_files() == {}


def test_a_guarded_path_that_is_not_there_is_refused_naming_the_folders_that_are(
    tmp_path: Path,
) -> None:
    (tmp_path / "tests" / "integration").mkdir(parents=True)
    (tmp_path / "tests" / "unit").mkdir()
    pyproject = _table(
        tmp_path, 'name = "bookmarks"\nguarded_paths = ["tests/integraton"]\nadapter = "t.a"\n'
    )

    with pytest.raises(ProjectConfigError) as problems:
        load_project(pyproject)

    assert (
        f"guarded_paths: 'tests/integraton' does not exist under {tmp_path.resolve()}; there: "
        "tests/integration, tests/unit (its tests would run without the harness); fix: name "
        "the folder your integration tests are in"
    ) in str(problems.value)
