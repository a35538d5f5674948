"""What an adapter may declare besides the required names: the lifespan the harness runs, and
what its session dependency yields; a wrong value is named with its fix when the run starts."""

from __future__ import annotations

import dataclasses
import uuid
from pathlib import Path

import pytest
from realstack.adapter import AdapterError, AppAdapter, app_lifespan, load_adapter
from realstack.project import Project

REQUIRED = """\
from sqlalchemy import MetaData

metadata = MetaData()
create_app = session_dependency = print
"""


def adapter_with(
    project: Project, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, extra: str
) -> AppAdapter:
    """The adapter of a module holding the required names and `extra`."""
    name = f"adapter_{uuid.uuid4().hex[:8]}"
    (tmp_path / f"{name}.py").write_text(REQUIRED + extra)
    monkeypatch.syspath_prepend(str(tmp_path))
    return load_adapter(dataclasses.replace(project, adapter=name))


def test_by_default_the_apps_own_lifespan_runs_and_the_dependency_yields_a_session(
    project: Project, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    adapter = adapter_with(project, tmp_path, monkeypatch, "")

    assert adapter.lifespan is app_lifespan
    assert adapter.session_dependency_yields == "session"


def test_an_adapter_declares_its_lifespan_and_a_sessionmaker_shape(
    project: Project, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    extra = "lifespan = None\nsession_dependency_yields = 'sessionmaker'\n"

    adapter = adapter_with(project, tmp_path, monkeypatch, extra)

    assert adapter.lifespan is None
    assert adapter.session_dependency_yields == "sessionmaker"


@pytest.mark.parametrize(
    ("extra", "named", "fix"),
    [
        ("lifespan = 'app'\n", "lifespan is a str", "set it to None to run no lifespan"),
        (
            "session_dependency_yields = 'maker'\n",
            "session_dependency_yields is 'maker'",
            "set it to 'session' or 'sessionmaker'",
        ),
    ],
)
def test_a_wrong_declaration_is_named_with_its_fix(
    project: Project,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    extra: str,
    named: str,
    fix: str,
) -> None:
    with pytest.raises(AdapterError) as error:
        adapter_with(project, tmp_path, monkeypatch, extra)

    assert named in str(error.value)
    assert fix in str(error.value)


@pytest.mark.parametrize(
    ("returns", "declared", "fix"),
    [
        ("AsyncIterator[async_sessionmaker[AsyncSession]]", "", '"sessionmaker"'),
        (
            "AsyncIterator[AsyncSession]",
            "session_dependency_yields = 'sessionmaker'\n",
            '"session"',
        ),
    ],
)
def test_a_dependency_annotated_with_the_other_shape_is_named_with_its_fix(
    project: Project,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    returns: str,
    declared: str,
    fix: str,
) -> None:
    extra = f"async def get_db() -> {returns!r}: ...\nsession_dependency = get_db\n" + declared

    with pytest.raises(AdapterError) as error:
        adapter_with(project, tmp_path, monkeypatch, extra)

    assert "session_dependency (get_db) yields" in str(error.value)
    assert f"fix:  session_dependency_yields = {fix}" in str(error.value)
