"""One table; it carries no schema, so it lands in the connection's search_path."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import DateTime, Identity, Index, String, Text, func
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

TITLE_LENGTH = 200


class Base(DeclarativeBase):
    pass


class Note(Base):
    __tablename__ = "notes"
    __table_args__ = (Index("ix_notes_created_at", "created_at"),)

    id: Mapped[int] = mapped_column(Identity(), primary_key=True)
    title: Mapped[str] = mapped_column(String(TITLE_LENGTH))
    body: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
