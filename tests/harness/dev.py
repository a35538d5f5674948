"""`make dev`: migrate the embedded database, create a bucket, and serve the API with a dev token.

Runs inside `python -m tests.harness.services run --`, which provides the
contract's variables and stops the services when this process ends (Ctrl-C).
"""

from __future__ import annotations

import os
import secrets
import subprocess
import sys

from tests.harness import contract
from tests.harness.janitor import s3_client_for
from tests.harness.readiness import wait_for_services_ready

DEV_BUCKET = "docstore-dev"
DEV_OWNER = "dev"
HOST, PORT = "127.0.0.1", "8000"


def app_environment(token: str) -> dict[str, str]:
    """The service's own variables (api/config.py), derived from the test contract."""
    database = contract.resolve_database_url()
    s3 = contract.resolve_s3()
    if database.url is None or s3.endpoint_url is None:
        sys.exit(
            "dev: no services found in the environment; run `make dev` "
            "(it starts them through `python -m tests.harness.services run --`)."
        )
    return contract.service_environment(
        database.url, s3, bucket=DEV_BUCKET, tokens={DEV_OWNER: token}
    )


def main() -> None:
    wait_for_services_ready()  # the launcher starts us while its servers boot
    token = secrets.token_urlsafe(24)
    env = {**os.environ, **app_environment(token)}
    subprocess.run([sys.executable, "-m", "alembic", "upgrade", "head"], env=env, check=True)
    s3 = s3_client_for(contract.resolve_s3())
    s3.create_bucket(Bucket=DEV_BUCKET)
    print(
        f"\ndev: API on http://{HOST}:{PORT} (docs at /docs), owner {DEV_OWNER!r}\n"
        f"dev: token  {token}\n"
        f"dev: try    curl -H 'Authorization: Bearer {token}' "
        f"-F file=@README.md http://{HOST}:{PORT}/documents\n"
        "dev: Ctrl-C stops the API and the services.\n",
        flush=True,
    )
    uvicorn = [sys.executable, "-m", "uvicorn", "api.asgi:app", "--host", HOST, "--port", PORT]
    os.execvpe(uvicorn[0], uvicorn, env)


if __name__ == "__main__":
    main()
