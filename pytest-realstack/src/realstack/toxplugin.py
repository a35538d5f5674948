"""The tox hooks: only what tox-docker 5.0.0 cannot do for itself. A project's toxfile.py
imports them (`from realstack.toxplugin import *`); tox must find this package in its own
environment (`make tools` installs it there).

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
- The test credentials have one home, the [tool.harness] table (project.py): we export
  them, and tox.ini hands them to the containers and the tests.
- Once the containers are healthy we mark what tox-docker passes (TEST_TOX_DOCKER_SERVICES:
  each container and the variables it set for it), so the tests can tell its throwaway
  servers from POSTGRES_* set elsewhere (a docker-compose .env), which they inspect.
"""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Generator
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from tox.plugin import impl
from tox.report import HandledError
from tox.tox_env.api import ToxEnv
from tox.tox_env.errors import Fail

from .contract import TEST_TOX_DOCKER_SERVICES, ToxDockerMark, credential_variables
from .project import ProjectConfigError, find_pyproject, load_project
from .toxdocker import docker_unreachable, remove_containers, remove_leftovers_of_dead_runs

if TYPE_CHECKING:
    from tox.config.sets import ConfigSet
    from tox.session.state import State

__all__ = ["tox_add_core_config", "tox_before_run_commands"]

WATCH_INTERVAL_S = 0.2


@impl
def tox_add_core_config(core_conf: ConfigSet, state: State) -> None:
    """POSTGRES_* and MINIO_ROOT_* from the table, unless you set them yourself: before any
    env's set_env reads them."""
    try:
        project = load_project(find_pyproject(Path(core_conf["tox_root"])))
    except ProjectConfigError as exc:
        raise HandledError(f"toxfile.py (realstack.toxplugin): {exc}") from None
    for name, value in credential_variables(project.credentials, with_s3=True).items():
        os.environ.setdefault(name, value)


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
            remove_containers(names)


def _tox_docker_mark(tox_env: ToxEnv) -> ToxDockerMark:
    """What tox-docker put into the env's set_env for each of its containers (tox_docker's
    get_env_vars): the host variable and one variable per `expose` entry."""
    # tox_docker.tox4 is a stale copy the 5.0.0 wheel ships; the plugin is tox_docker.plugin.
    from tox_docker.config import parse_container_config
    from tox_docker.plugin import get_host_env_var

    set_env = tox_env.conf["set_env"]
    containers = {}
    for docker_conf in tox_env.conf.load("docker"):
        container = parse_container_config(docker_conf)
        names = [get_host_env_var(container), *(port.env_var for port in container.expose)]
        values = {n: set_env.load(n) for n in names if n in set_env}
        if values:  # an entry without variables vouches for nothing
            containers[container.runas_name] = values
    return ToxDockerMark.of(containers)


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
            "  Without Docker run the tests on the embedded services: `tox -e "
            "integration-embedded`, or `python -m realstack.embedded run -- pytest`.\n"
            "  With Docker, start the daemon or set DOCKER_HOST."
        )
    for name in remove_leftovers_of_dead_runs(container_names):
        print(f"{tox_env.name}: removed container {name} left by a tox run that was killed")

    from tox_docker.config import runas_name

    ours = {runas_name(name) for name in container_names}
    done = threading.Event()
    watcher = threading.Thread(target=_watch_for_interrupt, args=(tox_env, ours, done), daemon=True)
    watcher.start()
    try:
        outcome = yield
        set_env = tox_env.conf["set_env"]
        set_env.update({TEST_TOX_DOCKER_SERVICES.name: str(_tox_docker_mark(tox_env))})
        return outcome
    except BaseException as error:
        removed = remove_containers(ours)
        if getattr(tox_env, "_interrupted", False):
            raise Fail(f"interrupted while starting containers; removed {removed}") from None
        raise Fail(
            f"container start-up failed ({type(error).__name__}: {error}); removed {removed}"
        ) from error
    finally:
        done.set()
        watcher.join()
