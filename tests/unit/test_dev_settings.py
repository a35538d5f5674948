"""`make dev` serves the API with the service's own settings, not the tests' narrower ones."""

from __future__ import annotations

from realstack import RunTargets, S3Target

from api import load_settings
from tests.app_adapter import MAX_UPLOAD_BYTES, dev_settings, environment_of

RUN = RunTargets(
    database_url="postgresql+asyncpg://u:p@127.0.0.1:5432/dev",
    schema=None,
    s3=S3Target(
        endpoint_url="http://127.0.0.1:9000",
        access_key="k",
        secret_key="s",
        region="us-east-1",
        source="test",
    ),
    bucket="dev-bucket",
)


def test_make_dev_uses_the_services_documented_upload_limit() -> None:
    env = environment_of(dev_settings(RUN, "a-long-random-dev-token"))
    unset = {k: v for k, v in env.items() if k != "MAX_UPLOAD_BYTES"}

    assert int(env["MAX_UPLOAD_BYTES"]) == load_settings(unset).max_upload_bytes == 100 * 2**20
    assert int(env["MAX_UPLOAD_BYTES"]) != MAX_UPLOAD_BYTES  # not the tests' 1 MiB
