"""GET /tags: tag names with how many documents carry them."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from api.deps import SessionDep
from api.queries import tags_with_counts
from api.schemas import TagCount

router = APIRouter(tags=["tags"])

# The count is compared with a bound int4 parameter; a larger value would reach the
# driver and fail there (a 500) instead of being refused as input (a 422).
MAX_MIN_COUNT = 2**31 - 1


@router.get("/tags")
async def list_tags(
    session: SessionDep,
    min_count: Annotated[
        int,
        Query(ge=1, le=MAX_MIN_COUNT, description="Only tags on at least this many documents."),
    ] = 1,
) -> list[TagCount]:
    """Tags with their document counts, most used first (GROUP BY ... HAVING count >= N)."""
    rows = await session.execute(tags_with_counts(min_count))
    return [TagCount(name=name, count=count) for name, count in rows]
