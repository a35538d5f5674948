"""The plugin's decision whether a run needs the guard: by its paths and its -m expression,
before pytest has decided the paths itself (the earliest hook)."""

from __future__ import annotations

from pathlib import Path

import pytest
from realstack.plugin import selects_guarded
from realstack.project import Project

from tests.harness.helpers import write_project


@pytest.fixture
def project(tmp_path: Path) -> Project:
    project = write_project(tmp_path / "sample")
    (project.root / "tests" / "integration").mkdir(parents=True)
    (project.root / "tests" / "unit").mkdir()
    return project


@pytest.mark.parametrize(
    ("args", "markexpr", "guarded"),
    [
        (["tests/integration"], "", True),
        (["tests/integration/test_x.py::test_y"], "", True),
        (["tests"], "", True),
        (["."], "", True),
        (["tests/unit"], "", False),
        (["tests"], "not integration", False),
        (["tests"], "integration and slow", True),
        # An integration test may carry other markers: -m slow could select one.
        (["tests"], "slow", True),
        (["tests"], "slow and not integration", False),
        (["tests"], "not (integration or smoke)", False),
        (["tests/unit", "tests/integration"], "", True),
    ],
)
def test_a_run_needs_the_guard_when_it_can_collect_a_guarded_test(
    project: Project, args: list[str], markexpr: str, guarded: bool
) -> None:
    assert selects_guarded(project, markexpr, args, project.root) is guarded
