"""Warm reuse: `up` keeps services for later runs, `down` stops them; and `clean` removes
what dead runs left, for a sample project written to a temp dir."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
from realstack.config import EmbeddedSettings
from realstack.embedded.launcher import embedded_services
from realstack.embedded.rundir import STATE_FILE, RunState, pause_lock
from realstack.embedded.warm import (
    ServicesFile,
    StaleServicesError,
    load_warm_services,
    resume_left_paused,
    supervise_argv,
    warm_hint,
)
from realstack.process import (
    children,
    cmdline,
    exclusive_lock,
    is_stopped,
    pause_tree,
    processes_running,
    resume_tree,
    start_time,
)
from realstack.project import Project, load_project
from realstack.services import kind

from tests.harness.helpers import write_project
from tests.harness.notes_project import build_project

from .embedded_support import (
    PACKAGE,
    assert_nothing_left,
    cli_env,
    python_in,
    runs_in,
    settings_for,
    wait_for,
)

NEVER_ALIVE_PID = 2**22 + 1


def _cli(project: Project, env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return python_in(project, env, "-m", PACKAGE, *args, timeout_s=120)


def _write_services_file(path: Path, variables: dict[str, str], pid: int = NEVER_ALIVE_PID) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    document = {"format": 1, "supervisor": {"pid": pid, "started": 1}, "variables": variables}
    path.write_text(json.dumps(document))


def _closed_port() -> int:
    """A port nothing listens on: bound, then closed again."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port


def _answers(port: str) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", int(port)), timeout=1.0):
            return True
    except OSError:
        return False


@pytest.mark.parametrize("services", [("postgres", "s3"), ("postgres",)], ids=["pg+s3", "pg"])
def test_services_up_outlives_its_command_and_services_down_stops_them(
    tmp_path: Path, run_base: Path, cache_dir: Path, services: tuple[str, ...]
) -> None:
    project = write_project(tmp_path / "sample", services)
    settings = settings_for(project, run_base, cache_dir)
    env = cli_env(run_base, cache_dir)
    try:
        up = _cli(project, env, "up")
        assert up.returncode == 0, up.stdout + up.stderr

        before = dict(os.environ)
        warm = load_warm_services(settings)
        assert dict(os.environ) == before  # it returns the values, it does not apply them
        assert warm is not None
        assert _answers(warm["POSTGRES_PORT"])
        assert ("MINIO_PORT" in warm) == project.uses_s3
        assert not project.uses_s3 or _answers(warm["MINIO_PORT"])
        published = ServicesFile.read(settings.services_file)
        assert published is not None and published.supervisor is not None
        assert settings.services_file.parent == run_base  # not in the project's checkout
        assert json.loads(settings.services_file.read_text())["project"] == str(project.root)
        supervisor = published.supervisor[0]

        down = _cli(project, env, "down")

        assert down.returncode == 0, down.stdout + down.stderr
        assert not settings.services_file.exists()
        assert start_time(supervisor) is None
        assert not _answers(warm["POSTGRES_PORT"])
        assert runs_in(run_base) == []
    finally:
        if settings.services_file.exists():
            _cli(project, env, "down")


PRINT_PORT = "import os; print('port', os.environ['POSTGRES_PORT'])"


def test_run_uses_the_warm_services_and_leaves_them_running(
    tmp_path: Path, run_base: Path, cache_dir: Path
) -> None:
    project = write_project(tmp_path / "sample", ("postgres", "s3"))
    env = cli_env(run_base, cache_dir)
    try:
        assert _cli(project, env, "up").returncode == 0
        warm = load_warm_services(settings_for(project, run_base, cache_dir))
        assert warm is not None
        runs_before = runs_in(run_base)

        ran = _cli(project, env, "run", "--after-ready", "--", sys.executable, "-c", PRINT_PORT)

        assert ran.returncode == 0, ran.stdout + ran.stderr
        assert ran.stdout.split() == ["port", warm["POSTGRES_PORT"]]
        s3_port = warm[kind("s3").port.name]
        assert (
            f"using the warm services of `python -m realstack.embedded up` (PostgreSQL on port "
            f"{warm['POSTGRES_PORT']}, S3 on port {s3_port}); " in ran.stderr
        )
        assert " down` stops them" in ran.stderr
        assert "ready at" not in ran.stderr  # no server of its own was started
        assert runs_in(run_base) == runs_before
        assert _answers(warm["POSTGRES_PORT"])  # still up for the next run
    finally:
        _cli(project, env, "down")


PRINT_ORIGIN = (
    "from realstack.sources import resolve_for_tool; "
    "config = resolve_for_tool(); print('origin', config.database_origin.name)"
)


def test_a_command_run_on_the_warm_services_trusts_their_variables(
    tmp_path: Path, run_base: Path, cache_dir: Path
) -> None:
    project = write_project(tmp_path / "sample", ("postgres",))
    env = cli_env(run_base, cache_dir)
    try:
        assert _cli(project, env, "up").returncode == 0

        ran = _cli(project, env, "run", "--", sys.executable, "-c", PRINT_ORIGIN)
        elsewhere = {**env, "POSTGRES_HOST": "127.0.0.1", "POSTGRES_PORT": "1"}
        beside = python_in(project, elsewhere, "-c", PRINT_ORIGIN, timeout_s=60)

        # `run -- CMD` hands CMD the warm services' POSTGRES_*, without a ready file: they are
        # recognised as the harness's own, not inspected like a docker-compose .env's.
        assert ran.returncode == 0, ran.stdout + ran.stderr
        assert "using the warm services" in ran.stderr
        assert ran.stdout.split() == ["origin", "SERVICES"]
        # Variables naming another server are not the warm services', whatever file exists.
        assert beside.returncode == 0, beside.stderr
        assert beside.stdout.split() == ["origin", "UNMARKED"]
    finally:
        _cli(project, env, "down")


def test_run_with_a_stale_services_file_says_so_and_starts_its_own(
    tmp_path: Path, run_base: Path, cache_dir: Path
) -> None:
    project = write_project(tmp_path / "sample", ("postgres",))
    closed_port = _closed_port()
    _write_services_file(
        settings_for(project, run_base, cache_dir).services_file,
        {"POSTGRES_HOST": "127.0.0.1", "POSTGRES_PORT": str(closed_port)},
    )

    ran = _cli(
        project,
        cli_env(run_base, cache_dir),
        "run",
        "--after-ready",
        "--",
        sys.executable,
        "-c",
        PRINT_PORT,
    )

    assert ran.returncode == 0, ran.stdout + ran.stderr
    assert "not running" in ran.stderr and "starts services of its own" in ran.stderr
    assert ran.stdout.split()[0] == "port" and ran.stdout.split()[1] != str(closed_port)
    assert runs_in(run_base) == []


def test_a_file_naming_dead_services_is_reported_with_the_fix(
    tmp_path: Path, run_base: Path, cache_dir: Path
) -> None:
    settings = settings_for(write_project(tmp_path / "sample"), run_base, cache_dir)
    closed_port = _closed_port()
    _write_services_file(
        settings.services_file,
        {
            "POSTGRES_HOST": "127.0.0.1",
            "POSTGRES_PORT": str(closed_port),
            "MINIO_HOST": "127.0.0.1",
            "MINIO_PORT": str(closed_port),
        },
    )

    with pytest.raises(StaleServicesError) as stale:
        load_warm_services(settings)

    message = str(stale.value)
    assert "not running" in message and f"POSTGRES_PORT={closed_port}" in message
    assert f"python -m {PACKAGE} up" in message
    assert f"python -m {PACKAGE} down" in message


@pytest.mark.parametrize("content", [b"\x00\xff binary", b"export POSTGRES_PORT=1\n", b"[1, 2]"])
def test_a_services_file_that_is_not_ours_is_named_with_the_fix(
    tmp_path: Path, run_base: Path, cache_dir: Path, content: bytes
) -> None:
    settings = settings_for(write_project(tmp_path / "sample"), run_base, cache_dir)
    settings.services_file.parent.mkdir(parents=True, exist_ok=True)
    settings.services_file.write_bytes(content)

    with pytest.raises(StaleServicesError) as stale:
        load_warm_services(settings)

    assert str(settings.services_file) in str(stale.value)
    assert "fix:" in str(stale.value) and f"`python -m {PACKAGE} down`" in str(stale.value)


def test_only_the_known_variables_are_read_from_the_services_file(
    tmp_path: Path, run_base: Path, cache_dir: Path
) -> None:
    settings = settings_for(write_project(tmp_path / "sample", ("postgres",)), run_base, cache_dir)
    _write_services_file(
        settings.services_file,
        {"POSTGRES_HOST": "127.0.0.1", "POSTGRES_PORT": "1", "LD_PRELOAD": "/tmp/evil.so"},
    )

    published = ServicesFile.read(settings.services_file)

    assert published is not None
    assert published.variables == {"POSTGRES_HOST": "127.0.0.1", "POSTGRES_PORT": "1"}


def test_no_file_means_no_warm_services(tmp_path: Path, run_base: Path, cache_dir: Path) -> None:
    project = write_project(tmp_path / "sample")
    assert load_warm_services(settings_for(project, run_base, cache_dir)) is None


def test_clean_removes_dead_runs_keeps_live_ones_and_needs_no_boto3_without_s3(
    tmp_path: Path, run_base: Path, cache_dir: Path
) -> None:
    project = write_project(tmp_path / "pg-only", ("postgres",))
    check = (
        "import sys\n"
        f"from {PACKAGE}.__main__ import main\n"
        "code = main(['clean'])\n"
        "assert 'boto3' not in sys.modules and 'botocore' not in sys.modules, 'boto3 imported'\n"
        "sys.exit(code)\n"
    )

    with embedded_services(settings_for(project, run_base, cache_dir)) as running:
        dead = run_base / "run-dead"  # made now: starting the services swept the base
        dead.mkdir()
        (dead / STATE_FILE).write_text(RunState(NEVER_ALIVE_PID, 1).dump())
        env = cli_env(run_base, cache_dir) | running.env
        cleaned = python_in(project, env, "-c", check, timeout_s=120)
        assert runs_in(run_base) == [running.run.path]  # the live run is left alone
        assert not dead.exists()

    assert cleaned.returncode == 0, cleaned.stdout + cleaned.stderr
    assert f"removed embedded run directory {dead}" in cleaned.stdout


def _supervisors(settings: EmbeddedSettings) -> list[int]:
    return processes_running(supervise_argv(settings))


def test_two_ups_at_once_start_one_supervisor_and_the_second_says_so(
    tmp_path: Path, run_base: Path, cache_dir: Path
) -> None:
    project = write_project(tmp_path / "sample", ("postgres",))
    settings = settings_for(project, run_base, cache_dir)
    env = cli_env(run_base, cache_dir)
    command = [sys.executable, "-m", PACKAGE, "up"]
    try:
        ups = [
            subprocess.Popen(command, cwd=project.root, env=env, stdout=subprocess.PIPE, text=True)
            for _ in range(2)
        ]
        said = [up.communicate(timeout=120)[0] for up in ups]

        assert [up.returncode for up in ups] == [0, 0]
        assert sum("ready;" in out for out in said) == 1
        assert sum("already running" in out for out in said) == 1
        assert len(_supervisors(settings)) == 1
    finally:
        _cli(project, env, "down")
    assert _supervisors(settings) == []
    assert_nothing_left(run_base, [])


@dataclass(frozen=True)
class Warm:
    """A sample project's warm services, started by `up`, and their one supervisor."""

    project: Project
    settings: EmbeddedSettings
    env: dict[str, str]
    supervisor: int


def _warm_up(tmp_path: Path, run_base: Path, cache_dir: Path) -> Warm:
    return _up(write_project(tmp_path / "sample", ("postgres",)), run_base, cache_dir)


def _up(project: Project, run_base: Path, cache_dir: Path) -> Warm:
    settings = settings_for(project, run_base, cache_dir)
    env = cli_env(run_base, cache_dir)
    assert _cli(project, env, "up").returncode == 0
    (supervisor,) = _supervisors(settings)
    return Warm(project, settings, env, supervisor)


def _warm_notes(tmp_path: Path, run_base: Path, cache_dir: Path, tests: str = "") -> Warm:
    """The notes project (its own tests, or `tests`) with its warm services up."""
    root = build_project(tmp_path / "notes", copy_core=False)
    if tests:
        (root / "tests" / "integration" / "test_notes.py").write_text(tests)
    return _up(load_project(root / "pyproject.toml"), run_base, cache_dir)


def _pytest(warm: Warm) -> tuple[int, str]:
    """`pytest tests/integration` in the project, on its warm services: exit code, output."""
    ran = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:randomly", "tests/integration"],
        cwd=warm.project.root,
        env=warm.env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    return ran.returncode, ran.stdout + ran.stderr


def test_a_stopping_supervisor_leaves_a_services_file_that_names_another(
    tmp_path: Path, run_base: Path, cache_dir: Path
) -> None:
    warm = _warm_up(tmp_path, run_base, cache_dir)
    settings, supervisor = warm.settings, warm.supervisor
    # Another supervisor's file (this test process stands in for it, alive).
    _write_services_file(settings.services_file, {"POSTGRES_PORT": "1"}, pid=os.getpid())
    document = json.loads(settings.services_file.read_text())
    document["supervisor"]["started"] = start_time(os.getpid())
    settings.services_file.write_text(json.dumps(document))
    try:
        os.kill(supervisor, signal.SIGTERM)
        wait_for(lambda: start_time(supervisor) is None, "the supervisor to stop")

        assert settings.services_file.exists()  # not its own: left alone
        assert json.loads(settings.services_file.read_text())["supervisor"]["pid"] == os.getpid()
    finally:
        settings.services_file.unlink(missing_ok=True)
    assert_nothing_left(run_base, [])


def test_clean_leftovers_stops_a_supervisor_no_services_file_names(
    tmp_path: Path, run_base: Path, cache_dir: Path
) -> None:
    warm = _warm_up(tmp_path, run_base, cache_dir)
    supervisor = warm.supervisor
    warm.settings.services_file.unlink()  # untracked now: `down` would not find it

    cleaned = _cli(warm.project, warm.env, "clean")

    assert cleaned.returncode == 0, cleaned.stdout + cleaned.stderr
    assert f"untracked warm-services supervisor, pid {supervisor}" in cleaned.stdout
    assert start_time(supervisor) is None
    assert_nothing_left(run_base, [])


def _warm_postgres(warm: Warm) -> int:
    """The warm PostgreSQL's postmaster: the supervisor's child that leads its process group."""
    (leader,) = [pid for pid in children(warm.supervisor) if "postgres" in " ".join(cmdline(pid))]
    return leader


@contextmanager
def _down_at_the_end(warm: Warm) -> Iterator[None]:
    """`down` when the block ends, however it ends: no warm services outlive the test."""
    try:
        yield
    finally:
        _cli(warm.project, warm.env, "down")


@contextmanager
def _warm_postgres_resumed_at_the_end(warm: Warm) -> Iterator[int]:
    """The warm PostgreSQL's postmaster for a test that pauses it: resumed when the block ends
    (however it ends), then `down`."""
    leader = _warm_postgres(warm)
    with _down_at_the_end(warm):
        try:
            yield leader
        finally:
            resume_tree(leader)


# What a run does first with the database: it hangs on a stopped server, whatever TCP says.
CONNECT = (
    "import asyncio, os, asyncpg; asyncio.run(asyncpg.connect(host='127.0.0.1', "
    "port=int(os.environ['POSTGRES_PORT']), user=os.environ['POSTGRES_USER'], "
    "password=os.environ['POSTGRES_PASSWORD'], database=os.environ['POSTGRES_DB'], timeout=5)); "
    "print('connected')"
)


def test_a_warm_server_left_paused_by_a_killed_run_is_resumed_by_the_next_saying_so(
    tmp_path: Path, run_base: Path, cache_dir: Path
) -> None:
    warm = _warm_up(tmp_path, run_base, cache_dir)
    with _warm_postgres_resumed_at_the_end(warm) as leader:
        pause_tree(leader)  # what a run SIGKILLed inside server_faults.paused() leaves: no lock

        ran = _cli(
            warm.project, warm.env, "run", "--after-ready", "--", sys.executable, "-c", CONNECT
        )

        assert ran.returncode == 0, ran.stdout + ran.stderr
        assert ran.stdout.strip() == "connected"
        assert f"harness: resumed the warm server(s) postgres (pid {leader})" in ran.stderr
        assert ran.stderr.count("resumed") == 1  # one line
        assert not is_stopped(leader)


def test_a_warm_server_another_live_run_has_paused_is_left_paused(
    tmp_path: Path, run_base: Path, cache_dir: Path
) -> None:
    warm = _warm_up(tmp_path, run_base, cache_dir)
    with _warm_postgres_resumed_at_the_end(warm) as leader:
        with exclusive_lock(pause_lock(run_base, leader)) as mine:  # a live run's pause
            assert mine
            pause_tree(leader)

            assert resume_left_paused(run_base, warm.supervisor) == []
            assert is_stopped(leader)
        # The pausing run is gone (its lock with it): the next one resumes the server.
        assert resume_left_paused(run_base, warm.supervisor) == [f"postgres (pid {leader})"]
        assert not is_stopped(leader)


def test_warm_messages_name_the_make_targets_under_make(
    tmp_path: Path, run_base: Path, cache_dir: Path
) -> None:
    project = write_project(tmp_path / "sample", ("postgres",))
    settings = settings_for(project, run_base, cache_dir)
    settings.services_file.parent.mkdir(parents=True, exist_ok=True)
    settings.services_file.write_bytes(b"\x00 not ours")
    env = cli_env(run_base, cache_dir)

    run = ("run", "--after-ready", "--", sys.executable, "-c", "pass")
    plain = _cli(project, env, *run)
    under_make = _cli(project, env | {"MAKELEVEL": "1"}, *run)

    assert f"`python -m {PACKAGE} down` removes it" in plain.stderr, plain.stderr
    assert "`make services-down` removes it" in under_make.stderr, under_make.stderr
    assert "make services" not in plain.stderr


def test_a_warm_postgres_that_does_not_answer_is_named_with_its_file_and_the_fix(
    tmp_path: Path, run_base: Path, cache_dir: Path
) -> None:
    settings = settings_for(write_project(tmp_path / "sample", ("postgres",)), run_base, cache_dir)
    _write_services_file(settings.services_file, {"POSTGRES_PORT": "40123"})

    hint = warm_hint(settings, 40123)

    assert str(settings.services_file) in hint
    assert f"`python -m {PACKAGE} down` stops the warm services" in hint
    assert warm_hint(settings, 40124) == ""  # some other server: not the warm one's doing


DOWN_MID_RUN = """\
import subprocess
import sys

import pytest
from sqlalchemy import text


async def test_1_the_warm_services_are_stopped_mid_run(db_session):
    await db_session.execute(text("SELECT 1"))
    down = [sys.executable, "-m", "realstack.embedded", "down"]
    subprocess.run(down, check=True, timeout=60, capture_output=True)


@pytest.mark.parametrize("n", range(20))
async def test_2_after_it(db_session, n):
    await db_session.execute(text("SELECT 1"))
"""


def test_services_down_during_a_run_ends_it_with_one_summary_line(
    tmp_path: Path, run_base: Path, cache_dir: Path
) -> None:
    warm = _warm_notes(tmp_path, run_base, cache_dir, DOWN_MID_RUN)
    with _down_at_the_end(warm):
        code, output = _pytest(warm)

        assert code == 2, output  # interrupted: not a crash, not a hang
        assert output.count("stopped answering during the run") == 1, output
        assert "test_2_after_it" not in output, output  # not 20 more failures
        assert "Traceback" not in output and "INTERNALERROR" not in output, output


def test_a_pytest_run_resumes_a_warm_server_left_paused_and_says_so_past_the_capture(
    tmp_path: Path, run_base: Path, cache_dir: Path
) -> None:
    warm = _warm_notes(tmp_path, run_base, cache_dir)
    with _warm_postgres_resumed_at_the_end(warm) as leader:
        pause_tree(leader)  # as a run SIGKILLed inside server_faults.paused() leaves it

        code, output = _pytest(warm)

        assert code == 0, output
        assert output.count(f"harness: resumed the warm server(s) postgres (pid {leader})") == 1
        assert not is_stopped(leader)


def test_up_on_a_fresh_machine_makes_the_run_base_and_down_leaves_nothing_there(
    tmp_path: Path, run_base: Path, cache_dir: Path
) -> None:
    """Its lock used to make the base 0700 first, which the server user (as root) may not
    enter: `make services-up` failed as the first command on a new machine."""
    project = write_project(tmp_path / "sample", ("postgres", "s3"))
    fresh = run_base / "never-made"
    env = cli_env(fresh, cache_dir)
    try:
        up = _cli(project, env, "up")
        assert up.returncode == 0, up.stdout + up.stderr
        assert fresh.stat().st_mode & 0o777 == 0o755
    finally:
        down = _cli(project, env, "down")
    assert down.returncode == 0, down.stdout + down.stderr
    assert not fresh.exists()  # no empty base, no lock file left behind
    ran = _cli(project, env, "run", "--", sys.executable, "-c", "pass")
    assert ran.returncode == 0, ran.stdout + ran.stderr
    assert not fresh.exists()
