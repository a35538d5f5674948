"""Is there a Docker daemon, and which containers did killed tox runs leave? Standard library
only (the docker SDK is imported only when a socket exists), so the Makefile can ask before
every `make test-integration` without importing tox:

    python -m realstack.toxdocker          prints where the daemon answered; exit 1 and the
                                           reason when none did
    python -m realstack.toxdocker clean    removes the containers of tox runs that were killed
                                           (the [docker:NAME] sections of ./tox.ini)
"""

from __future__ import annotations

import configparser
import os
import re
import sys
from pathlib import Path

DEFAULT_DOCKER_SOCKET = "/var/run/docker.sock"


def docker_unreachable() -> str | None:
    """None when a Docker daemon answers, else the reason it did not."""
    docker_host = os.environ.get("DOCKER_HOST", "")
    socket_path = docker_host.removeprefix("unix://") if docker_host else DEFAULT_DOCKER_SOCKET
    if (not docker_host or docker_host.startswith("unix://")) and not os.path.exists(socket_path):
        # The common case without Docker, answered without importing the docker SDK (0.15 s).
        return f"no Docker socket at {socket_path}"
    try:
        import docker
    except ImportError:
        return "the docker Python package is not installed"
    try:
        docker.from_env(timeout=5).ping()
    except Exception as error:  # any failure here means "no usable daemon"
        return str(error).splitlines()[0][:200]
    return None


def _daemon_is_local() -> bool:
    return not os.environ.get("DOCKER_HOST", "unix://").startswith(("tcp://", "ssh://", "http"))


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_containers(names: set[str]) -> list[str]:
    import docker
    from docker.errors import APIError

    client = docker.from_env()
    removed = []
    for container in client.containers.list(all=True):
        if container.name in names:
            try:
                container.remove(v=True, force=True)
            except APIError as error:  # already gone, or removal already under way
                if error.status_code not in (404, 409):
                    raise
            removed.append(container.name)
    return removed


def remove_leftovers_of_dead_runs(container_names: list[str]) -> list[str]:
    """Containers `<name>-tox-<pid>` of our names whose tox process is gone."""
    if not _daemon_is_local():
        return []  # pids of another machine mean nothing here
    import docker

    pattern = re.compile(rf"^({'|'.join(map(re.escape, container_names))})-tox-(\d+)$")
    dead = set()
    for container in docker.from_env().containers.list(all=True):
        match = pattern.match(container.name or "")
        if match and not _pid_alive(int(match.group(2))):
            dead.add(container.name)
    return remove_containers(dead)


def main(argv: list[str]) -> int:
    """The command line above; the Makefile calls both forms."""
    why_not = docker_unreachable()
    if argv[:1] == ["clean"]:
        if why_not:
            print(f"clean-leftovers: no Docker daemon ({why_not}); no containers to check.")
            return 0
        ini = configparser.ConfigParser(interpolation=None)
        ini.read(Path.cwd() / "tox.ini")
        names = [s.split(":", 1)[1] for s in ini.sections() if s.startswith("docker:")]
        for name in remove_leftovers_of_dead_runs(names):
            print(f"clean-leftovers: removed container {name} of a tox run that was killed")
        return 0
    print(why_not or os.environ.get("DOCKER_HOST", f"unix://{DEFAULT_DOCKER_SOCKET}"))
    return 1 if why_not else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
