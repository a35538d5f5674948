"""The tests a newcomer writes that the README did not foresee (issue 10's table), run by
integration/test_newcomer_pitfalls.py in a nested run: each passes, or fails fast and says why."""

from __future__ import annotations

import asyncio

import httpx
import pytest
from sqlalchemy import func, select, text
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, create_async_engine

from tests.harness.sample.models import Note

ROUNDS = 20


@pytest.mark.parametrize("round_", range(ROUNDS))
async def test_gathered_requests_share_the_tests_session(
    client: httpx.AsyncClient, db_session: AsyncSession, round_: int
) -> None:
    posts = [client.post("/notes", json={"title": f"n{i}"}) for i in range(10)]
    reads = [client.get("/notes") for _ in range(10)]
    responses = await asyncio.gather(*posts, *reads)
    assert [r.status_code for r in responses] == [201] * 10 + [200] * 10
    assert await db_session.scalar(select(func.count()).select_from(Note)) == 10


async def test_gathered_rows_were_rolled_back(db_session: AsyncSession) -> None:
    assert await db_session.scalar(select(func.count()).select_from(Note)) == 0


async def test_a_second_connection_does_not_see_the_tests_rows(
    db_session: AsyncSession, run_database_url: str
) -> None:
    db_session.add(Note(title="mine", body=""))
    await db_session.flush()
    other = create_async_engine(run_database_url)
    try:
        async with other.connect() as conn:
            seen = await conn.scalar(text("SELECT count(*) FROM notes"))
    finally:
        await other.dispose()
    assert seen == 0


async def test_a_second_connection_waiting_on_the_tests_row_fails_fast(
    db_session: AsyncSession, run_database_url: str
) -> None:
    note = Note(title="locked", body="")
    db_session.add(note)
    await db_session.flush()
    other = create_async_engine(run_database_url)
    try:
        async with other.begin() as conn:
            await conn.execute(text("LOCK TABLE notes IN ACCESS EXCLUSIVE MODE"))
    finally:
        await other.dispose()


async def test_a_commit_through_a_second_connection_is_undone_and_reported(
    run_database_url: str, db_session: AsyncSession
) -> None:
    other = create_async_engine(run_database_url)
    try:
        async with other.begin() as conn:
            await conn.execute(text("INSERT INTO notes (title, body) VALUES ('leak', '')"))
    finally:
        await other.dispose()


async def test_the_next_test_sees_no_leaked_row(db_session: AsyncSession) -> None:
    assert await db_session.scalar(select(func.count()).select_from(Note)) == 0


async def test_an_engine_url_keeps_its_password_when_rendered(engine: AsyncEngine) -> None:
    url = engine.url.render_as_string(hide_password=False)
    other = create_async_engine(url)
    try:
        async with other.connect() as conn:
            assert await conn.scalar(text("SELECT 1")) == 1
    finally:
        await other.dispose()


_left_open: list[object] = []


async def test_a_transaction_left_open_is_closed_and_reported(run_database_url: str) -> None:
    other = create_async_engine(run_database_url)
    conn = await other.connect()
    await conn.execute(text("INSERT INTO notes (title, body) VALUES ('open', '')"))
    _left_open.append((other, conn))  # never closed: the harness must not hang on it


@pytest.mark.real_commits
async def test_real_commits_leaving_a_transaction_open_is_closed_and_reported(
    run_database_url: str, db_session: AsyncSession
) -> None:
    db_session.add(Note(title="committed", body=""))
    await db_session.commit()
    other = create_async_engine(run_database_url)
    conn = await other.connect()
    await conn.execute(text("SELECT * FROM notes FOR UPDATE"))
    _left_open.append((other, conn))


async def test_after_them_the_run_goes_on(db_session: AsyncSession) -> None:
    assert await db_session.scalar(select(func.count()).select_from(Note)) == 0


@pytest.mark.timeout(3)
async def test_a_test_that_sleeps_forever_is_stopped_where_it_hangs() -> None:
    await asyncio.sleep(3600)


async def test_and_the_run_goes_on_after_it(client: httpx.AsyncClient) -> None:
    assert (await client.get("/notes")).status_code == 200
