"""Request and response bodies, and the tag-name rules shared by upload and PATCH."""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterable
from datetime import datetime
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_validator

from api.models import MAX_FILENAME_LENGTH, MAX_TAG_LENGTH, Document

MAX_TAGS_PER_DOCUMENT = 20
_TAG_NAME = re.compile(rf"^[a-z0-9][a-z0-9._-]{{0,{MAX_TAG_LENGTH - 1}}}$")
TAG_RULES = (
    f"tags are trimmed and lower-cased; each must be 1-{MAX_TAG_LENGTH} chars of a-z, 0-9, "
    f"'.', '_' or '-', starting with a letter or digit; "
    f"at most {MAX_TAGS_PER_DOCUMENT} per document"
)


def normalize_tag(raw: str) -> str:
    """Trim and lower-case one tag name; raise ValueError if it breaks the tag rules."""
    name = raw.strip().lower()
    if not _TAG_NAME.fullmatch(name):
        raise ValueError(f"invalid tag {raw[: MAX_TAG_LENGTH + 10]!r}: {TAG_RULES}")
    return name


def normalize_tags(raw_names: Iterable[str]) -> list[str]:
    """Normalise, de-duplicate and sort tag names; raise ValueError on any bad one."""
    names = sorted({normalize_tag(raw) for raw in raw_names})
    if len(names) > MAX_TAGS_PER_DOCUMENT:
        raise ValueError(f"too many tags ({len(names)}); {TAG_RULES}")
    return names


def split_tag_field(value: str) -> list[str]:
    """Split one multipart `tags` field on commas, ignoring blank entries ("a, b," -> a, b)."""
    return [part for part in value.split(",") if part.strip()]


class DocumentOut(BaseModel):
    id: uuid.UUID
    owner: str
    filename: str
    content_type: str
    size_bytes: int
    sha256: str
    tags: list[str]
    created_at: datetime
    updated_at: datetime
    version: int

    @classmethod
    def from_model(cls, document: Document) -> DocumentOut:
        return cls(
            id=document.id,
            owner=document.owner,
            filename=document.filename,
            content_type=document.content_type,
            size_bytes=document.size_bytes,
            sha256=document.sha256,
            tags=sorted(tag.name for tag in document.tags),
            created_at=document.created_at,
            updated_at=document.updated_at,
            version=document.version,
        )


class DocumentPage(BaseModel):
    items: list[DocumentOut]
    next_cursor: str | None = Field(
        description="Pass as `cursor` to get the next page; null on the last page."
    )


def _normalized_tags(value: list[str] | None) -> list[str] | None:
    return None if value is None else normalize_tags(value)


class DocumentPatch(BaseModel):
    """Fields to change; omitted (or null) fields stay as they are."""

    model_config = ConfigDict(extra="forbid")

    filename: str | None = Field(
        default=None,
        min_length=1,
        max_length=MAX_FILENAME_LENGTH * 4,
        description="New filename; sanitised like upload filenames.",
    )
    tags: Annotated[
        list[str] | None,
        AfterValidator(_normalized_tags),
        Field(description=f"Replaces the whole tag set; [] removes all tags. {TAG_RULES}."),
    ] = None

    @model_validator(mode="after")
    def _something_to_change(self) -> DocumentPatch:
        if self.filename is None and self.tags is None:
            raise ValueError("give at least one of `filename` or `tags`")
        return self


class ErrorOut(BaseModel):
    """An error body: a message, or for request validation FastAPI's list of problems."""

    detail: str | list[dict[str, Any]]


class TagCount(BaseModel):
    name: str
    count: int
