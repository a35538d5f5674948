"""The sample app without services: its settings, and no boto3 unless S3 is configured."""

from __future__ import annotations

import subprocess
import sys

from realstack.config import RunTargets
from realstack.contract import S3Target

from tests.harness.nested import REPO_ROOT
from tests.harness.sample import S3Settings, Settings, create_app

URL = "postgresql+asyncpg://u:p@127.0.0.1:5432/db"
S3 = S3Target("http://127.0.0.1:9000", "key", "secret", "us-east-1", "TEST_S3_ENDPOINT_URL")
ATTACHMENT = "/notes/{note_id}/attachment"


def test_settings_from_the_harness_targets_round_trip_through_the_apps_variables() -> None:
    settings = Settings.from_targets(RunTargets(URL, "test_1_main", S3, "test-1-main"))

    assert settings == Settings(
        URL, "test_1_main", S3Settings(S3.endpoint_url, "key", "secret", "us-east-1", "test-1-main")
    )
    assert Settings.from_environment(settings.environment()) == settings


def test_without_s3_there_are_no_attachment_routes() -> None:
    settings = Settings.from_targets(RunTargets(URL, "test_1_main", None, None))

    assert settings.s3 is None
    assert ATTACHMENT not in create_app(settings).openapi()["paths"]
    assert (
        ATTACHMENT
        in create_app(Settings(URL, None, S3Settings(None, "k", "s", "r", "b"))).openapi()["paths"]
    )


def test_without_s3_boto3_is_never_imported() -> None:
    code = (
        "import sys; from tests.harness.sample import Settings, create_app; "
        f"create_app(Settings({URL!r})).openapi(); "
        "assert 'boto3' not in sys.modules and 'botocore' not in sys.modules"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
