"""The app's own configuration: built from the harness's targets, or from its variables."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Protocol

DATABASE_URL = "SAMPLE_DATABASE_URL"
DATABASE_SCHEMA = "SAMPLE_DATABASE_SCHEMA"
S3_ENDPOINT_URL = "SAMPLE_S3_ENDPOINT_URL"
S3_ACCESS_KEY = "SAMPLE_S3_ACCESS_KEY"
S3_SECRET_KEY = "SAMPLE_S3_SECRET_KEY"
S3_REGION = "SAMPLE_S3_REGION"
S3_BUCKET = "SAMPLE_S3_BUCKET"


class S3Like(Protocol):
    @property
    def endpoint_url(self) -> str | None: ...
    @property
    def access_key(self) -> str: ...
    @property
    def secret_key(self) -> str: ...
    @property
    def region(self) -> str: ...


class TargetsLike(Protocol):
    """What a test harness hands over: a database URL and schema, maybe S3 and a bucket."""

    @property
    def database_url(self) -> str: ...
    @property
    def schema(self) -> str | None: ...
    @property
    def s3(self) -> S3Like | None: ...
    @property
    def bucket(self) -> str | None: ...


class SettingsError(ValueError):
    """A missing or malformed variable; str() names it."""


@dataclass(frozen=True)
class S3Settings:
    endpoint_url: str | None
    access_key: str
    secret_key: str
    region: str
    bucket: str


@dataclass(frozen=True)
class Settings:
    database_url: str
    schema: str | None = None
    s3: S3Settings | None = None  # None: no attachments, and boto3 is never imported

    @classmethod
    def from_targets(cls, run: TargetsLike) -> Settings:
        s3 = None
        if run.s3 is not None and run.bucket is not None:
            t = run.s3
            s3 = S3Settings(t.endpoint_url, t.access_key, t.secret_key, t.region, run.bucket)
        return cls(run.database_url, run.schema, s3)

    @classmethod
    def from_environment(cls, env: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if env is None else env
        url = env.get(DATABASE_URL, "").strip()
        if not url.startswith("postgresql+asyncpg://"):
            raise SettingsError(f"{DATABASE_URL} must be a postgresql+asyncpg:// URL")
        s3 = None
        if env.get(S3_BUCKET):
            s3 = S3Settings(
                env.get(S3_ENDPOINT_URL) or None,
                env.get(S3_ACCESS_KEY, ""),
                env.get(S3_SECRET_KEY, ""),
                env.get(S3_REGION, "us-east-1"),
                env[S3_BUCKET],
            )
        return cls(url, env.get(DATABASE_SCHEMA) or None, s3)

    def environment(self) -> dict[str, str]:
        """The variables from_environment() reads, for a server process with these settings."""
        env = {DATABASE_URL: self.database_url}
        if self.schema:
            env[DATABASE_SCHEMA] = self.schema
        if self.s3 is not None:
            env |= {
                S3_ENDPOINT_URL: self.s3.endpoint_url or "",
                S3_ACCESS_KEY: self.s3.access_key,
                S3_SECRET_KEY: self.s3.secret_key,
                S3_REGION: self.s3.region,
                S3_BUCKET: self.s3.bucket,
            }
        return env
