"""In-tree tox plugin: only what tox-docker 5.0.0 cannot do for itself.

- Docker Engine 29 removed NetworkSettings.Gateway, and tox-docker then crashes
  with KeyError: 'Gateway' and leaks its containers. It skips that lookup when
  TOX_DOCKER_GATEWAY is set in tox's own environment, so we set a default here.
- Without a Docker daemon, tox-docker ends in a long traceback; we fail first,
  with one message that says how to run without Docker.
- Container start-up runs outside tox's try/finally, and its health wait never
  looks at Ctrl-C: an error or an interrupt there leaks the containers. We
  remove them, and we remove the containers of tox runs that were killed.
- SIGTERM (a CI job cancelled) is handled like Ctrl-C, so tox-docker's own
  cleanup runs instead of the process dying with its containers up.
- The test credentials have one home, the [tool.harness] table (through the harness's
  project.py): we export them, and tox.ini hands them to the containers and the tests.
"""

from __future__ import annotations

import importlib
import os
import re
import signal
import sys
import threading
from collections.abc import Generator
from pathlib import Path
from types import FrameType
from urllib.parse import urlsplit

WATCH_INTERVAL_S = 0.2
# Where the harness core lives, as an import path from this file's folder.
HARNESS_PACKAGE = "tests.harness"
ROOT = os.path.dirname(os.path.abspath(__file__))


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


def _remove_containers(names: set[str]) -> list[str]:
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


def _remove_leftovers_of_dead_runs(container_names: list[str]) -> list[str]:
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
    return _remove_containers(dead)


def _main(argv: list[str]) -> int:
    """`python toxfile.py`: is there a Docker daemon? `python toxfile.py clean`: remove the
    containers of tox runs that were killed. The Makefile calls both."""
    why_not = docker_unreachable()
    if argv[:1] == ["clean"]:
        if why_not:
            print(f"clean-leftovers: no Docker daemon ({why_not}); no containers to check.")
            return 0
        import configparser

        ini = configparser.ConfigParser(interpolation=None)
        ini.read(os.path.join(ROOT, "tox.ini"))
        names = [s.split(":", 1)[1] for s in ini.sections() if s.startswith("docker:")]
        for name in _remove_leftovers_of_dead_runs(names):
            print(f"clean-leftovers: removed container {name} of a tox run that was killed")
        return 0
    print(why_not or os.environ.get("DOCKER_HOST", f"unix://{DEFAULT_DOCKER_SOCKET}"))
    return 1 if why_not else 0


# `python toxfile.py [clean]` (the Makefile asks before every `make test-integration`) ends
# here: importing tox below would add 0.25 s to each of those questions.
if __name__ == "__main__":
    sys.exit(_main(sys.argv[1:]))

from tox.plugin import impl  # noqa: E402
from tox.tox_env.api import ToxEnv  # noqa: E402
from tox.tox_env.errors import Fail  # noqa: E402


def _export_test_credentials() -> None:
    """POSTGRES_* and MINIO_ROOT_* from the table, unless you set them yourself."""
    if ROOT not in sys.path:
        sys.path.insert(0, ROOT)
    project_module = importlib.import_module(f"{HARNESS_PACKAGE}.project")
    project = project_module.load_project(project_module.find_pyproject(Path(ROOT)))
    creds = project.credentials
    for name, value in {
        "POSTGRES_USER": creds.pg_user,
        "POSTGRES_PASSWORD": creds.pg_password,
        "POSTGRES_DB": creds.pg_database,
        "MINIO_ROOT_USER": creds.s3_access_key,
        "MINIO_ROOT_PASSWORD": creds.s3_secret_key,
    }.items():
        os.environ.setdefault(name, value)


_export_test_credentials()


def _default_gateway() -> str:
    """Where published ports are reachable: the daemon's host for tcp://, else loopback."""
    docker_host = os.environ.get("DOCKER_HOST", "")
    if docker_host.startswith(("tcp://", "http://", "https://")):
        return urlsplit(docker_host).hostname or "127.0.0.1"
    return "127.0.0.1"


os.environ.setdefault("TOX_DOCKER_GATEWAY", _default_gateway())


def _sigterm_as_keyboard_interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


if (
    threading.current_thread() is threading.main_thread()
    and signal.getsignal(signal.SIGTERM) == signal.SIG_DFL
):
    signal.signal(signal.SIGTERM, _sigterm_as_keyboard_interrupt)


def _container_names(tox_env: ToxEnv) -> list[str]:
    try:
        return [str(conf.name) for conf in tox_env.conf.load("docker")]
    except KeyError:  # tox-docker is not installed: nothing of ours to do
        return []


def _watch_for_interrupt(tox_env: ToxEnv, names: set[str], done: threading.Event) -> None:
    """tox-docker's health wait ignores Ctrl-C: remove the containers, which ends the wait."""
    while not done.wait(WATCH_INTERVAL_S):
        if getattr(tox_env, "_interrupted", False):
            _remove_containers(names)


@impl(wrapper=True, tryfirst=True)
def tox_before_run_commands(tox_env: ToxEnv) -> Generator[None, None, None]:
    """Check the daemon before tox-docker starts anything; remove what it started if it fails."""
    container_names = _container_names(tox_env)
    if not container_names:
        return (yield)
    reason = docker_unreachable()
    if reason is not None:
        where = os.environ.get("DOCKER_HOST", "unix:///var/run/docker.sock")
        raise Fail(
            f"no Docker daemon answered at {where} ({reason}).\n"
            f"  {tox_env.name} needs Docker for its containers ({', '.join(container_names)}).\n"
            "  Without Docker run `make test-integration` (it picks the embedded services)\n"
            "  or `tox -e integration-embedded`. With Docker, start the daemon or set DOCKER_HOST."
        )
    for name in _remove_leftovers_of_dead_runs(container_names):
        print(f"{tox_env.name}: removed container {name} left by a tox run that was killed")

    from tox_docker.config import runas_name

    ours = {runas_name(name) for name in container_names}
    done = threading.Event()
    watcher = threading.Thread(target=_watch_for_interrupt, args=(tox_env, ours, done), daemon=True)
    watcher.start()
    try:
        return (yield)
    except BaseException as error:
        removed = _remove_containers(ours)
        if getattr(tox_env, "_interrupted", False):
            raise Fail(f"interrupted while starting containers; removed {removed}") from None
        raise Fail(
            f"container start-up failed ({type(error).__name__}: {error}); removed {removed}"
        ) from error
    finally:
        done.set()
        watcher.join()
