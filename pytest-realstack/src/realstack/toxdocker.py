"""Is there a Docker daemon, can it have the images, and which containers did killed tox runs
leave? Standard library only (the docker SDK is imported only when a socket exists), so the
Makefile can ask before every `make test-integration` without importing tox:

    python -m realstack.toxdocker          prints where the daemon answered; exit 1 and the
                                           reason when none did
    python -m realstack.toxdocker images ENV
                                           makes sure the daemon has what tox-docker will need
                                           for tox env ENV (pulling what it lacks); exit 1 and
                                           "cannot pull IMAGE for [docker:NAME] (reason)" when
                                           a pull fails (offline, a registry's rate limit)
    python -m realstack.toxdocker clean    removes the containers of tox runs that were killed
                                           (the [docker:NAME] sections of ./tox.ini)
"""

from __future__ import annotations

import configparser
import os
import re
import sys
import threading
import time
from pathlib import Path
from typing import Any

from .contract import tox_container
from .process import pid_alive

DEFAULT_DOCKER_SOCKET = "/var/run/docker.sock"
# Seconds a call to the daemon may take (ping, version, image lookup), and a pull may go without
# a word of progress: docker-py sends pulls with no timeout at all, so we watch them ourselves.
CALL_TIMEOUT_S = 30
PULL_SILENCE_S = 60


def _first_line(text: str) -> str:
    return (text.strip().splitlines() or [""])[0][:200]


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
        return _first_line(str(error))
    return None


def _daemon_is_local() -> bool:
    return not os.environ.get("DOCKER_HOST", "unix://").startswith(("tcp://", "ssh://", "http"))


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

    dead = set()
    for container in docker.from_env().containers.list(all=True):
        named = tox_container(container.name or "")
        if named and named[0] in container_names and not pid_alive(named[1]):
            dead.add(container.name)
    return remove_containers(dead)


def _tox_ini() -> configparser.ConfigParser:
    ini = configparser.ConfigParser(interpolation=None)
    ini.read(Path.cwd() / "tox.ini")
    return ini


_ENV_SUBSTITUTION = re.compile(r"\{env:(\w+)(?::([^{}]*))?\}")


def _substitute(value: str) -> str | None:
    """`value` with the tox substitutions tox.ini's [docker:NAME] sections use resolved:
    {toxinidir} (here: the working directory), {env:NAME} and {env:NAME:default}. None when
    anything else remains ({env:NAME} unset, {[section]key}, {posargs}, ...): the check then
    leaves that entry to tox-docker, which resolves everything and fails its own way."""
    value = value.strip().replace("{toxinidir}", str(Path.cwd()))
    value = _ENV_SUBSTITUTION.sub(
        lambda m: os.environ.get(m[1], m[0] if m[2] is None else m[2]), value
    )
    return None if "{" in value or "}" in value else value


def _from_images(dockerfile: Path) -> list[str]:
    """The images a build of `dockerfile` pulls: each FROM's, but not `scratch`, an earlier
    stage, or a reference built from ARGs (unresolvable here)."""
    stages: set[str] = set()
    images = []
    for line in dockerfile.read_text().splitlines():
        words = [w for w in line.split() if not w.startswith("--")]  # --platform=...
        if len(words) < 2 or words[0].upper() != "FROM":
            continue
        if words[1].lower() not in stages | {"scratch"} and "$" not in words[1]:
            images.append(words[1])
        if len(words) >= 4 and words[2].upper() == "AS":
            stages.add(words[3].lower())
    return images


def _images_to_have(env: str) -> list[tuple[str, str, bool]]:
    """(section, image, pull even if present) for what tox-docker fetches for tox env `env`
    (tox_docker/plugin.py): an `image =` is pulled only when missing; a `dockerfile =` is built
    with pull=True, which pulls each FROM image on every run."""
    ini = _tox_ini()
    names = re.split(r"[,\s]+", ini.get(f"testenv:{env}", "docker", fallback="").strip())
    wanted = []
    for name in filter(None, names):
        section = f"docker:{name}"
        image = _substitute(ini.get(section, "image", fallback=""))
        dockerfile = _substitute(ini.get(section, "dockerfile", fallback=""))
        if image:
            wanted.append((section, image, False))
        elif dockerfile and Path(dockerfile).is_file():
            wanted += [(section, base, True) for base in _from_images(Path(dockerfile))]
    return wanted


def _repository_and_tag(reference: str) -> tuple[str, str]:
    """`repo:tag@sha256:...` -> (repo, sha256:...), the daemon's pull by digest; `repo:tag` ->
    (repo, tag); `repo` -> (repo, latest). A registry's port (`host:5000/repo`) is no tag."""
    name, _, digest = reference.partition("@")
    repository, tag = name, "latest"
    if ":" in name.rsplit("/", 1)[-1]:
        repository, tag = name.rsplit(":", 1)
    return repository, digest or tag


def _pull(api: Any, reference: str) -> str | None:
    """None when the daemon pulled `reference`, else why not. The pull's stream carries its
    errors (`error`/`errorDetail`) in a 200 answer, so we read it to the end, in a thread: a
    daemon silent for PULL_SILENCE_S ends the wait (a slow pull that reports progress does not)."""
    from docker.errors import APIError

    repository, tag = _repository_and_tag(reference)
    errors: list[str] = []
    heard = [time.monotonic()]

    def consume() -> None:
        try:
            for entry in api.pull(repository, tag=tag, stream=True, decode=True):
                heard[0] = time.monotonic()
                if "error" in entry or "errorDetail" in entry:
                    errors.append(entry.get("error") or entry["errorDetail"].get("message", ""))
        except APIError as error:  # e.g. 500 {"message": "toomanyrequests: ..."}
            errors.append(str(error.explanation or error))
        except Exception as error:  # whatever ends the pull here would end tox-docker's too
            errors.append(str(error) or type(error).__name__)

    worker = threading.Thread(target=consume, daemon=True)
    worker.start()
    while worker.is_alive():
        worker.join(heard[0] + PULL_SILENCE_S - time.monotonic())
        if worker.is_alive() and time.monotonic() - heard[0] >= PULL_SILENCE_S:
            return f"no word from the daemon for {PULL_SILENCE_S} s of the pull"
    return _first_line(errors[0]) if errors else None


def cannot_have_images(env: str) -> str | None:
    """None when the daemon has, or could pull, every image tox-docker will fetch for tox env
    `env`, else which image it cannot pull and why. Stops at the first failure."""
    import docker
    from docker.errors import DockerException, NotFound
    from requests.exceptions import RequestException

    try:
        api = docker.from_env(version="auto", timeout=CALL_TIMEOUT_S).api
    except DockerException as error:
        return f"stopped answering ({_first_line(str(error))})"
    for section, image, always_pulled in _images_to_have(env):
        try:
            if not always_pulled:
                api.inspect_image(image)
                continue
        except NotFound:
            pass
        except (DockerException, RequestException) as error:
            return f"cannot look up {image} for [{section}] ({_first_line(str(error))})"
        print(f"make: pulling {image} for [{section}] ...", file=sys.stderr, flush=True)
        reason = _pull(api, image)
        if reason is not None:
            return f"cannot pull {image} for [{section}] ({reason})"
    return None


def main(argv: list[str]) -> int:
    """The command line above; the Makefile calls both forms."""
    if argv[:1] == ["images"]:
        if len(argv) != 2:
            print("usage: python -m realstack.toxdocker images ENV (a tox env)", file=sys.stderr)
            return 2
        why_not = cannot_have_images(argv[1])
        if why_not:
            print(why_not)
        return 1 if why_not else 0
    why_not = docker_unreachable()
    if argv[:1] == ["clean"]:
        if why_not:
            print(f"clean-leftovers: no Docker daemon ({why_not}); no containers to check.")
            return 0
        names = [s.split(":", 1)[1] for s in _tox_ini().sections() if s.startswith("docker:")]
        for name in remove_leftovers_of_dead_runs(names):
            print(f"clean-leftovers: removed container {name} of a tox run that was killed")
        return 0
    print(why_not or os.environ.get("DOCKER_HOST", f"unix://{DEFAULT_DOCKER_SOCKET}"))
    return 1 if why_not else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
