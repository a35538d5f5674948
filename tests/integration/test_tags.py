"""GET /tags counts documents per tag with GROUP BY ... HAVING, against real PostgreSQL."""

from __future__ import annotations

import httpx
import pytest
from sqlalchemy import text
from sqlalchemy.exc import ProgrammingError
from sqlalchemy.ext.asyncio import AsyncSession

from api.queries import tags_with_counts
from tests.helpers import create_document


@pytest.fixture
async def tagged_documents(authed_client: httpx.AsyncClient) -> None:
    await create_document(authed_client, b"x", tags="common,pair,single")
    await create_document(authed_client, b"x", tags="common,pair")
    await create_document(authed_client, b"x", tags="common")


async def test_tags_lists_every_used_tag_with_its_document_count(
    client: httpx.AsyncClient, tagged_documents: None
) -> None:
    response = await client.get("/tags")

    assert response.status_code == 200
    assert response.json() == [
        {"name": "common", "count": 3},
        {"name": "pair", "count": 2},
        {"name": "single", "count": 1},
    ]


async def test_min_count_keeps_only_tags_used_that_often(
    client: httpx.AsyncClient, tagged_documents: None
) -> None:
    response = await client.get("/tags", params={"min_count": 2})

    assert response.json() == [{"name": "common", "count": 3}, {"name": "pair", "count": 2}]


async def test_min_count_above_every_count_gives_an_empty_list(
    client: httpx.AsyncClient, tagged_documents: None
) -> None:
    assert (await client.get("/tags", params={"min_count": 4})).json() == []


async def test_tags_of_deleted_documents_no_longer_count(
    authed_client: httpx.AsyncClient, client: httpx.AsyncClient
) -> None:
    created = await create_document(authed_client, b"x", tags="gone")
    await authed_client.delete(f"/documents/{created['id']}")

    assert (await client.get("/tags")).json() == []


@pytest.mark.parametrize("min_count", ["0", "-1", "many"])
async def test_min_count_below_one_or_not_a_number_gets_422(
    client: httpx.AsyncClient, min_count: str
) -> None:
    assert (await client.get("/tags", params={"min_count": min_count})).status_code == 422


async def test_the_report_query_runs_directly_on_the_session(
    db_session: AsyncSession, tagged_documents: None
) -> None:
    rows = (await db_session.execute(tags_with_counts(3))).all()

    assert [tuple(row) for row in rows] == [("common", 3)]


async def test_postgresql_rejects_having_on_a_non_aggregated_column_without_group_by(
    db_session: AsyncSession, tagged_documents: None
) -> None:
    invalid = text(
        "SELECT tags.name, count(*) FROM tags "
        "JOIN document_tags ON document_tags.tag_id = tags.id "
        "HAVING count(*) >= 1"
    )

    with pytest.raises(ProgrammingError) as caught:
        async with db_session.begin_nested():
            await db_session.execute(invalid)

    assert "GroupingError" in str(caught.value) or "GROUP BY" in str(caught.value)
    assert (await db_session.execute(tags_with_counts(1))).all()
