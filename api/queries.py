"""The SQL behind the routes: keyset pages, lookups, tag upserts and the tag-count report."""

from __future__ import annotations

import uuid
from collections.abc import Sequence

from sqlalchemy import Delete, Select, delete, desc, exists, func, select, tuple_
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from api.cursor import CursorPosition
from api.models import Document, PendingObjectDeletion, Tag, document_tags


def tags_with_counts(min_count: int) -> Select[str, int]:
    """Tags used by at least `min_count` documents, most used first, then by name."""
    document_count = func.count(document_tags.c.document_id).label("count")
    return (
        select(Tag.name, document_count)
        .join(document_tags, document_tags.c.tag_id == Tag.id)
        .group_by(Tag.id, Tag.name)
        .having(func.count(document_tags.c.document_id) >= min_count)
        .order_by(desc(document_count), Tag.name)
    )


def document_page(
    limit: int,
    after: CursorPosition | None = None,
    owner: str | None = None,
    tag: str | None = None,
) -> Select[Document]:
    """Up to `limit` documents in (created_at DESC, id DESC) order, strictly after `after`."""
    query = select(Document).order_by(Document.created_at.desc(), Document.id.desc())
    if after is not None:
        query = query.where(tuple_(Document.created_at, Document.id) < (after.created_at, after.id))
    if owner is not None:
        query = query.where(Document.owner == owner)
    if tag is not None:
        has_tag = (
            exists()
            .where(document_tags.c.document_id == Document.id)
            .where(document_tags.c.tag_id == Tag.id)
            .where(Tag.name == tag)
        )
        query = query.where(has_tag)
    return query.limit(limit)


def document_by_id(document_id: uuid.UUID, *, for_update: bool = False) -> Select[Document]:
    """One document; `for_update` locks the row so concurrent writers serialise."""
    query = select(Document).where(Document.id == document_id)
    return query.with_for_update(of=Document) if for_update else query


async def ensure_tags(session: AsyncSession, names: Sequence[str]) -> list[Tag]:
    """Return Tag rows for already-normalised names, creating missing ones race-free."""
    if not names:
        return []
    await session.execute(
        insert(Tag).values([{"name": name} for name in names]).on_conflict_do_nothing()
    )
    result = await session.scalars(select(Tag).where(Tag.name.in_(names)).order_by(Tag.name))
    return list(result)


def forget_pending_deletion(storage_key: str) -> Delete:
    """Statement removing an outbox row once its object is gone."""
    return delete(PendingObjectDeletion).where(PendingObjectDeletion.storage_key == storage_key)
