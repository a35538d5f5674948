"""docstore's adapter for the test harness: everything the harness knows of this app.

The harness (pytest-realstack, imported as `realstack`) asks for `metadata`, `create_app`,
`session_dependency` and `app_environment`; the fixtures below are this app's own (owners and
their tokens).
`python -m tests.app_adapter` is `make dev`'s server.
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import subprocess
import sys

import httpx
import pytest
from fastapi import FastAPI
from pydantic import SecretStr
from realstack import RunTargets, asgi_client

from api import Settings
from api import create_app as create_docstore_app
from api.deps import get_session
from api.models import Base

# Test-only owners and tokens: the app under test accepts exactly these.
TOKENS = {"alice": "alice-test-token-1", "bob": "bob-test-token-1"}
MAX_UPLOAD_BYTES = 1024 * 1024

metadata = Base.metadata
session_dependency = get_session


def settings_for(
    run: RunTargets,
    *,
    tokens: dict[str, str] = TOKENS,
    max_upload_bytes: int = MAX_UPLOAD_BYTES,
) -> Settings:
    """The one place docstore's configuration is built from the harness's targets."""
    assert run.s3 is not None and run.bucket is not None, "docstore needs S3 ([tool.harness])"
    return Settings(
        database_url=run.database_url,
        database_schema=run.schema,
        s3_endpoint_url=run.s3.endpoint_url,
        s3_region=run.s3.region,
        s3_access_key=SecretStr(run.s3.access_key),
        s3_secret_key=SecretStr(run.s3.secret_key),
        s3_bucket=run.bucket,
        api_tokens={owner: SecretStr(token) for owner, token in tokens.items()},
        max_upload_bytes=max_upload_bytes,
    )


def create_app(run: RunTargets) -> FastAPI:
    return create_docstore_app(settings_for(run))


def environment_of(settings: Settings) -> dict[str, str]:
    """The variables api/config.py reads, for a server process (uvicorn) with these settings."""
    env = {}
    for name, value in settings.model_dump().items():
        if value is None:
            continue
        if isinstance(value, SecretStr):
            value = value.get_secret_value()
        elif isinstance(value, dict):
            value = json.dumps({k: v.get_secret_value() for k, v in value.items()})
        env[name.upper()] = str(value)
    return env


def app_environment(run: RunTargets) -> dict[str, str]:
    return environment_of(settings_for(run))


@pytest.fixture(scope="session")
def settings(run_targets: RunTargets) -> Settings:
    """The app's settings for this run: its own schema, its own bucket, two test owners."""
    return settings_for(run_targets)


@pytest.fixture
def authed_client(app: FastAPI) -> httpx.AsyncClient:
    """A client holding the Bearer token of owner "alice"."""
    return asgi_client(app, {"Authorization": f"Bearer {TOKENS['alice']}"})


@pytest.fixture
def other_client(app: FastAPI) -> httpx.AsyncClient:
    """A client holding the Bearer token of owner "bob"."""
    return asgi_client(app, {"Authorization": f"Bearer {TOKENS['bob']}"})


DEV_OWNER = "dev"
DEV_HOST, DEV_PORT = "127.0.0.1", "8000"


def dev_settings(run: RunTargets, token: str) -> Settings:
    """`make dev`'s service: one owner, and the service's own upload limit (MAX_UPLOAD_BYTES
    unset: 100 MiB), not the tests' 1 MiB."""
    service_default = Settings.model_fields["max_upload_bytes"].default
    return settings_for(run, tokens={DEV_OWNER: token}, max_upload_bytes=service_default)


async def serve_dev() -> int:
    """`make dev`: a migrated schema and a bucket on the embedded services, uvicorn on them."""
    from realstack import resolve_for_tool, sandbox

    config = resolve_for_tool()
    token = secrets.token_urlsafe(24)
    async with sandbox(config, "dev") as run:
        env = {**os.environ, **environment_of(dev_settings(run, token))}
        print(
            f"\ndev: API on http://{DEV_HOST}:{DEV_PORT} (docs at /docs), owner {DEV_OWNER!r}\n"
            f"dev: token  {token}\n"
            f"dev: try    curl -H 'Authorization: Bearer {token}' "
            f"-F file=@README.md http://{DEV_HOST}:{DEV_PORT}/documents\n"
            "dev: Ctrl-C stops the API and the services.\n",
            flush=True,
        )
        argv = [sys.executable, "-m", "api.serve", "--host", DEV_HOST]
        server = await asyncio.create_subprocess_exec(*argv, "--port", DEV_PORT, env=env)
        try:
            return await server.wait()
        finally:
            if server.returncode is None:
                server.terminate()
                await server.wait()


if __name__ == "__main__":
    try:
        sys.exit(asyncio.run(serve_dev()))
    except KeyboardInterrupt:
        sys.exit(130)
    except subprocess.SubprocessError as exc:
        sys.exit(f"dev: {exc}")
