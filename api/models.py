"""SQLAlchemy models; tables carry no schema, so they land in the connection's search_path."""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import (
    CHAR,
    BigInteger,
    CheckConstraint,
    Column,
    DateTime,
    ForeignKey,
    Identity,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    Uuid,
    func,
    text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

# Deterministic constraint names keep migrations and alembic's drift check in step.
NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

MAX_OWNER_LENGTH = 64
MAX_FILENAME_LENGTH = 255
MAX_CONTENT_TYPE_LENGTH = 255
MAX_TAG_LENGTH = 50


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


document_tags = Table(
    "document_tags",
    Base.metadata,
    Column(
        "document_id",
        Uuid,
        ForeignKey("documents.id", ondelete="CASCADE"),
        primary_key=True,
    ),
    Column("tag_id", Integer, ForeignKey("tags.id", ondelete="CASCADE"), primary_key=True),
    # The primary key serves "tags of a document"; this serves "documents with a tag".
    Index("ix_document_tags_tag_id_document_id", "tag_id", "document_id"),
)


class Tag(Base):
    __tablename__ = "tags"
    __table_args__ = (CheckConstraint("name = lower(name)", name="name_lower_case"),)

    id: Mapped[int] = mapped_column(Integer, Identity(), primary_key=True)
    name: Mapped[str] = mapped_column(String(MAX_TAG_LENGTH), unique=True)


class Document(Base):
    __tablename__ = "documents"
    __table_args__ = (
        CheckConstraint("size_bytes >= 0", name="size_bytes_not_negative"),
        CheckConstraint("version >= 1", name="version_positive"),
        # Keyset pagination walks (created_at DESC, id DESC); a btree serves both directions.
        Index("ix_documents_created_at_id", "created_at", "id"),
        Index("ix_documents_owner_created_at_id", "owner", "created_at", "id"),
    )

    id: Mapped[uuid.UUID] = mapped_column(
        Uuid, primary_key=True, default=uuid.uuid4, server_default=text("gen_random_uuid()")
    )
    owner: Mapped[str] = mapped_column(String(MAX_OWNER_LENGTH))
    filename: Mapped[str] = mapped_column(String(MAX_FILENAME_LENGTH))
    content_type: Mapped[str] = mapped_column(String(MAX_CONTENT_TYPE_LENGTH))
    size_bytes: Mapped[int] = mapped_column(BigInteger)
    sha256: Mapped[str] = mapped_column(CHAR(64))
    storage_key: Mapped[str] = mapped_column(String(255), unique=True)
    # clock_timestamp(), not now(): rows written in one transaction still get distinct,
    # increasing times, and an update inside the creating transaction still moves updated_at.
    created_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.clock_timestamp()
    )
    updated_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.clock_timestamp()
    )
    version: Mapped[int] = mapped_column(Integer, default=1, server_default=text("1"))

    # selectin: async sessions cannot lazy-load, and every response lists the tags.
    tags: Mapped[list[Tag]] = relationship(
        secondary=document_tags, order_by=Tag.name, lazy="selectin"
    )


class PendingObjectDeletion(Base):
    """Outbox of storage keys whose rows are gone but whose objects may still exist."""

    __tablename__ = "pending_object_deletions"

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    storage_key: Mapped[str] = mapped_column(String(255), unique=True)
    created_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.clock_timestamp()
    )
    attempts: Mapped[int] = mapped_column(Integer, default=0, server_default=text("0"))
    last_error: Mapped[str | None] = mapped_column(Text)
