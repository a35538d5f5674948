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


def test_left_out_the_shape_is_named_as_the_default_not_as_declared(
    project: Project, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    extra = "async def get_db() -> 'AsyncIterator[async_sessionmaker[AsyncSession]]': ...\n"

    with pytest.raises(AdapterError) as error:
        adapter_with(project, tmp_path, monkeypatch, extra + "session_dependency = get_db\n")

    assert "declares" not in str(error.value)
    assert (
        "the harness expects an AsyncSession (session_dependency_yields, by default 'session'; "
        "the adapter does not set it)" in str(error.value)
    )


# A dependency of the app's, annotated (evaluated where a string) to yield something else.
NEITHER = """\
from collections.abc import AsyncIterator
from typing import Annotated

class SnapshotRepository: ...

Snapshots = Annotated[SnapshotRepository, "Depends(get_snapshots)"]

async def get_snapshots() -> {returns}: ...

session_dependency = get_snapshots
"""


@pytest.mark.parametrize(
    ("returns", "shown"),
    [
        ("SnapshotRepository", "SnapshotRepository"),
        ("AsyncIterator[SnapshotRepository]", "AsyncIterator[SnapshotRepository]"),
        ("'AsyncIterator[SnapshotRepository]'", "AsyncIterator[SnapshotRepository]"),
        ("AsyncIterator[Snapshots]", "AsyncIterator[Annotated[SnapshotRepository, ...]]"),
        ("dict[str, AsyncIterator]", "dict[str, AsyncIterator]"),
        ("None", "None"),
    ],
)
def test_a_dependency_annotated_to_yield_neither_a_session_nor_a_sessionmaker_is_refused(
    project: Project, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, returns: str, shown: str
) -> None:
    with pytest.raises(AdapterError) as error:
        adapter_with(project, tmp_path, monkeypatch, NEITHER.format(returns=returns))

    message = str(error.value)
    assert f"session_dependency is get_snapshots, annotated to yield {shown!r}" in message
    assert "neither an AsyncSession nor an async_sessionmaker" in message
    assert "its writes would escape the test's transaction" in message
    assert (
        "fix:  set session_dependency to the FastAPI dependency your routes get their "
        "AsyncSession or async_sessionmaker from" in message
    )


# Annotations that name a session however they are spelt, or that cannot be told.
SESSION = """\
from collections.abc import AsyncGenerator, AsyncIterator
from typing import TYPE_CHECKING, Annotated, Any

from sqlalchemy.ext.asyncio import AsyncSession

if TYPE_CHECKING:
    from myapp.db import DbSession  # not importable at run time

class AppSession(AsyncSession): ...

Db = Annotated[AsyncSession, "Depends(get_db)"]

async def get_db() -> {returns}: ...

session_dependency = get_db
"""


@pytest.mark.parametrize(
    "returns",
    [
        "AsyncIterator[AsyncSession]",
        "AsyncGenerator[AsyncSession, None]",
        "AsyncIterator[Db]",
        "'AsyncIterator[Db]'",
        "AsyncIterator[AppSession | None]",
        "'AsyncIterator[DbSession]'",  # does not evaluate: not refused
        "AsyncIterator",  # says nothing of what it yields
        "Any",
    ],
)
def test_a_session_dependency_however_annotated_is_accepted(
    project: Project, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, returns: str
) -> None:
    adapter = adapter_with(project, tmp_path, monkeypatch, SESSION.format(returns=returns))

    assert adapter.session_dependency.__name__ == "get_db"
