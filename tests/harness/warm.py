"""Warm services for the inner loop: `make services-up` keeps the embedded servers running
and writes their variables to .services.env, which the conftest reads; `make services-down`
stops them. Standard library only at import time: the conftest reads the file before
collection.
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import sys
import time
from collections.abc import Mapping
from pathlib import Path

from tests.harness.procs import proc_start_time

PROJECT_ROOT = Path(__file__).resolve().parents[2]
SERVICES_FILE = PROJECT_ROOT / ".services.env"
PID_KEY = "DOCSTORE_SERVICES_PID"
PID_START_KEY = "DOCSTORE_SERVICES_PID_START"
STOP_TIMEOUT_S = 30.0
PORT_KEYS = ("POSTGRES_PORT", "MINIO_PORT")


class StaleServicesError(RuntimeError):
    """.services.env names services that no longer run."""


def read_services_file(path: Path = SERVICES_FILE) -> dict[str, str]:
    values = {}
    for line in path.read_text().splitlines():
        line = line.strip().removeprefix("export ")
        if line and not line.startswith("#") and "=" in line:
            key, _, value = line.partition("=")
            values[key.strip()] = value.strip().strip("'")
    return values


def _supervisor_alive(values: Mapping[str, str]) -> bool:
    try:
        pid, started = int(values[PID_KEY]), int(values[PID_START_KEY])
    except (KeyError, ValueError):
        return False
    return proc_start_time(pid) == started  # same pid and not a reused one


def _port_answers(host: str, port: str) -> bool:
    try:
        with socket.create_connection((host, int(port)), timeout=1.0):
            return True
    except (OSError, ValueError):
        return False


def load_warm_services(path: Path = SERVICES_FILE) -> dict[str, str] | None:
    """The contract variables from a live .services.env; None without one; raise if stale."""
    if not path.exists():
        return None
    values = read_services_file(path)
    dead = [] if _supervisor_alive(values) else [f"supervisor pid {values.get(PID_KEY, '?')}"]
    for key, host_key in zip(PORT_KEYS, ("POSTGRES_HOST", "MINIO_HOST"), strict=True):
        if not _port_answers(values.get(host_key, "127.0.0.1"), values.get(key, "")):
            dead.append(f"{key}={values.get(key, '?')}")
    if dead:
        raise StaleServicesError(
            f"{path} names warm services that are not running ({', '.join(dead)} not answering).\n"
            "  fix:  `make services-up` to start them again, or `make services-down` to remove "
            "the file and use a fresh set per run."
        )
    return {k: v for k, v in values.items() if k not in {PID_KEY, PID_START_KEY}}


def _write_services_file(env: Mapping[str, str], path: Path) -> None:
    pid = os.getpid()
    lines = [
        "# Written by `make services-up`; removed by `make services-down`.",
        "# The integration tests use these services while this file exists.",
        *(f"export {key}='{value}'" for key, value in env.items()),
        f"export {PID_KEY}={pid}",
        f"export {PID_START_KEY}={proc_start_time(pid)}",
    ]
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write("\n".join(lines) + "\n")
    os.replace(tmp, path)


def _supervise(report_fd: int, path: Path) -> None:
    """The detached process: start the servers, publish the file, wait for `down`."""
    from tests.harness.services import start_embedded_services

    with os.fdopen(report_fd, "w") as report:
        try:
            running = start_embedded_services(report=report)
        except Exception as error:
            report.write(f"ERROR {error}\n")
            return
        # Blocked only now: the servers must not inherit a blocked mask.
        stop_signals = {signal.SIGTERM, signal.SIGINT, signal.SIGHUP}
        signal.pthread_sigmask(signal.SIG_BLOCK, stop_signals)
        _write_services_file(running.env, path)
        report.write(f"READY {path}\n")
    try:
        signal.sigwait(stop_signals)
    finally:
        path.unlink(missing_ok=True)
        running.stop()


def services_up(path: Path = SERVICES_FILE) -> int:
    try:
        if load_warm_services(path) is not None:
            print(f"services-up: already running ({path}); `make services-down` stops them.")
            return 0
    except StaleServicesError:
        path.unlink()
    read_fd, write_fd = os.pipe()
    if os.fork() == 0:  # the supervisor: its own session, so the terminal's Ctrl-C spares it
        os.close(read_fd)
        os.setsid()
        devnull = os.open(os.devnull, os.O_RDWR)
        for fd in (0, 1, 2):
            os.dup2(devnull, fd)
        try:
            _supervise(write_fd, path)
        finally:
            os._exit(0)
    os.close(write_fd)
    with os.fdopen(read_fd) as report:
        for line in report:
            if line.startswith("READY"):
                print(f"services-up: ready; the tests use them while {path.name} exists.")
                print("  `make services-down` stops them.")
                return 0
            if line.startswith("ERROR"):
                print(f"services-up: {line.removeprefix('ERROR ').strip()}", file=sys.stderr)
                return 3
            print(line, end="", file=sys.stderr)
    print("services-up: the supervisor exited before the services were ready", file=sys.stderr)
    return 3


def services_down(path: Path = SERVICES_FILE) -> int:
    if not path.exists():
        print("services-down: no warm services (no .services.env).")
        return 0
    values = read_services_file(path)
    if not _supervisor_alive(values):
        path.unlink()
        print("services-down: the services were already gone; removed the stale file.")
        return 0
    pid = int(values[PID_KEY])
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + STOP_TIMEOUT_S
    while proc_start_time(pid) is not None and time.monotonic() < deadline:
        time.sleep(0.05)
    if proc_start_time(pid) is not None:
        print(
            f"services-down: supervisor {pid} did not stop in {STOP_TIMEOUT_S:g} s", file=sys.stderr
        )
        return 1
    print("services-down: stopped; the tests start their own services again.")
    return 0


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.harness.warm")
    parser.add_argument("command", choices=["up", "down"])
    parser.add_argument("--file", type=Path, default=SERVICES_FILE, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    return services_up(args.file) if args.command == "up" else services_down(args.file)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
