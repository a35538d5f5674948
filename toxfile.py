"""In-tree tox plugin: only what tox-docker 5.0.0 cannot do for itself.

- Docker Engine 29 removed NetworkSettings.Gateway, and tox-docker then crashes
  with KeyError: 'Gateway' and leaks its containers. It skips that lookup when
  TOX_DOCKER_GATEWAY is set in tox's own environment, so we set a default here.
- Without a Docker daemon, tox-docker ends in a long traceback; we fail first,
  with one message that says how to run without Docker.
- Container start-up runs outside tox's try/finally: an error or Ctrl-C after a
  container started leaks it. We remove this run's containers in that case.
"""

from __future__ import annotations

import os
from collections.abc import Generator
from urllib.parse import urlsplit

from tox.plugin import impl
from tox.tox_env.api import ToxEnv
from tox.tox_env.errors import Fail


def _default_gateway() -> str:
    """Where published ports are reachable: the daemon's host for tcp://, else loopback."""
    docker_host = os.environ.get("DOCKER_HOST", "")
    if docker_host.startswith(("tcp://", "http://", "https://")):
        return urlsplit(docker_host).hostname or "127.0.0.1"
    return "127.0.0.1"


os.environ.setdefault("TOX_DOCKER_GATEWAY", _default_gateway())


def _uses_docker(tox_env: ToxEnv) -> bool:
    try:
        return bool(tox_env.conf.load("docker"))
    except KeyError:  # tox-docker is not installed: nothing of ours to do
        return False


def docker_unreachable() -> str | None:
    """None when a Docker daemon answers, else the reason it did not."""
    try:
        import docker
    except ImportError:
        return "the docker Python package is not installed"
    try:
        docker.from_env(timeout=5).ping()
    except Exception as error:  # any failure here means "no usable daemon"
        return str(error).splitlines()[0][:200]
    return None


@impl(wrapper=True, tryfirst=True)
def tox_before_run_commands(tox_env: ToxEnv) -> Generator[None, None, None]:
    """Check the daemon before tox-docker starts anything; remove what it started if it fails."""
    if not _uses_docker(tox_env):
        return (yield)
    reason = docker_unreachable()
    if reason is not None:
        where = os.environ.get("DOCKER_HOST", "unix:///var/run/docker.sock")
        raise Fail(
            f"no Docker daemon answered at {where} ({reason}).\n"
            f"  {tox_env.name} needs Docker for its PostgreSQL and MinIO containers.\n"
            "  Without Docker run `make test-integration` (it picks the embedded services)\n"
            "  or `tox -e integration-embedded`. With Docker, start the daemon or set DOCKER_HOST."
        )
    try:
        return (yield)
    except BaseException:
        # tox-docker's own cleanup runs only after the commands; on an error or
        # Ctrl-C during start-up or the health wait, its containers would leak.
        from tox_docker.plugin import clean_up_containers

        clean_up_containers(tox_env)
        raise


if __name__ == "__main__":
    # `python toxfile.py`: the Makefile's one-line answer to "is there a Docker daemon?"
    import sys

    why_not = docker_unreachable()
    print(why_not or os.environ.get("DOCKER_HOST", "unix:///var/run/docker.sock"))
    sys.exit(1 if why_not else 0)
