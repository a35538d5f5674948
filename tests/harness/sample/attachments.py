"""PUT/GET /notes/{id}/attachment: the bytes live in S3 (sync boto3, in a thread)."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Annotated, Protocol

import boto3
from botocore.config import Config
from botocore.exceptions import ClientError
from fastapi import Depends, FastAPI, HTTPException, Request, Response
from sqlalchemy.ext.asyncio import AsyncSession

from .db import find_note, get_session
from .settings import S3Settings

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

SessionDep = Annotated[AsyncSession, Depends(get_session)]


class S3Endpoint(Protocol):
    """Where an S3 server is and the keys for it: the app's S3Settings, or the harness's
    S3Target."""

    @property
    def endpoint_url(self) -> str | None: ...
    @property
    def region(self) -> str: ...
    @property
    def access_key(self) -> str: ...
    @property
    def secret_key(self) -> str: ...


def own_s3_client(s3: S3Endpoint) -> S3Client:
    """A boto3 client of the app's own (not the harness's), as a service builds one."""
    return boto3.client(
        "s3",
        endpoint_url=s3.endpoint_url,
        region_name=s3.region,
        aws_access_key_id=s3.access_key,
        aws_secret_access_key=s3.secret_key,
        config=Config(signature_version="s3v4", s3={"addressing_style": "path"}),
    )


def attachment_key(note_id: int) -> str:
    return f"notes/{note_id}/attachment"


def add_attachment_routes(app: FastAPI, s3: S3Settings) -> None:
    client = own_s3_client(s3)

    @app.put("/notes/{note_id}/attachment", status_code=204)
    async def put_attachment(note_id: int, request: Request, session: SessionDep) -> None:
        await find_note(session, note_id)
        body = await request.body()
        content_type = request.headers.get("content-type", "application/octet-stream")
        await asyncio.to_thread(
            client.put_object,
            Bucket=s3.bucket,
            Key=attachment_key(note_id),
            Body=body,
            ContentType=content_type,
        )

    @app.get("/notes/{note_id}/attachment")
    async def get_attachment(note_id: int) -> Response:
        try:
            found = await asyncio.to_thread(
                client.get_object, Bucket=s3.bucket, Key=attachment_key(note_id)
            )
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in {"NoSuchKey", "404"}:
                raise HTTPException(404, f"note {note_id} has no attachment") from None
            raise
        body = await asyncio.to_thread(found["Body"].read)
        return Response(body, media_type=found.get("ContentType"))
