"""The service as deployed (`python -m api.serve`) refuses a bad configuration at start-up
with one message, exit 2, and never a secret in it."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
DB_PASSWORD = "db-pa55word-xyz"
S3_SECRET = "s3-secret-key-xyz"
TOKEN = "a-long-enough-token-0123"
VALID = {
    "DATABASE_URL": f"postgresql+asyncpg://app:{DB_PASSWORD}@127.0.0.1:9/docstore",
    "S3_ENDPOINT_URL": "http://127.0.0.1:9",
    "S3_ACCESS_KEY": "access-key-id",
    "S3_SECRET_KEY": S3_SECRET,
    "S3_BUCKET": "docstore",
    "API_TOKENS": json.dumps({"alice": TOKEN}),
}


@pytest.mark.parametrize(
    ("variable", "value", "problem"),
    [
        ("DATABASE_URL", f"app:{DB_PASSWORD}@db.internal/docstore", "must start with"),
        ("S3_ENDPOINT_URL", f"http://key:{S3_SECRET}@127.0.0.1:9", "must not carry credentials"),
        ("S3_ENDPOINT_URL", "http://127.0.0.1:notport", "has a port that is not a number"),
        ("API_TOKENS", json.dumps({"alice": "short-token"}), "the token of owner 'alice' has 11"),
    ],
)
def test_a_bad_setting_stops_the_service_with_one_message_and_no_secret(
    variable: str, value: str, problem: str
) -> None:
    env = {"PATH": "/usr/bin:/bin", **VALID, variable: value}

    started = subprocess.run(
        [sys.executable, "-m", "api.serve", "--port", "0"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )

    assert started.returncode == 2, started.stderr
    assert f"  {variable}: {problem}" in started.stderr
    assert "Traceback" not in started.stderr
    for secret in (DB_PASSWORD, S3_SECRET, TOKEN, "short-token"):
        assert secret not in started.stderr + started.stdout
