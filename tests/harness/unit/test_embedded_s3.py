"""The embedded S3 server's readiness probe signs like botocore."""

from __future__ import annotations

import datetime

import botocore.auth
import pytest
from botocore.auth import S3SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials as BotoCredentials
from realstack.embedded.s3 import sigv4_headers
from realstack.project import Credentials


def test_the_sigv4_signature_matches_botocores(monkeypatch: pytest.MonkeyPatch) -> None:
    creds = Credentials("u", "p", "d", "AKID", "secret/key+x", "us-east-1")
    now = datetime.datetime(2026, 1, 2, 3, 4, 5, tzinfo=datetime.UTC)
    body = b"ok"
    ours = sigv4_headers("127.0.0.1:8333", creds, "PUT", "/bucket/a key", body, now)

    request = AWSRequest(
        method="PUT",
        url="http://127.0.0.1:8333/bucket/a%20key",
        data=body,
        headers={"x-amz-date": ours["x-amz-date"]},
    )
    signer = S3SigV4Auth(BotoCredentials("AKID", "secret/key+x"), "s3", "us-east-1")
    monkeypatch.setattr(botocore.auth, "get_current_datetime", lambda: now.replace(tzinfo=None))
    signer.add_auth(request)

    assert (
        ours["Authorization"].rsplit("Signature=", 1)[1]
        == (str(request.headers["Authorization"]).rsplit("Signature=", 1)[1])
    )
