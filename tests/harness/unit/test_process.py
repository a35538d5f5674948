"""The process layer: identity across pid reuse, trees, pause and resume, the one wait with a
deadline, ports and atomic files."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from realstack.process import (
    LOCK_ATTEMPTS,
    apoll_until,
    choose_ports,
    cmdline,
    descendants,
    exclusive_lock,
    is_same_process,
    is_stopped,
    pause_tree,
    poll_until,
    resume_tree,
    start_time,
    write_atomic,
)

from tests.harness.helpers import dead_pid

# A shell that starts a sleeping child and waits: a leader with a tree below it.
TREE = "sleep 30 & wait"


@pytest.fixture
def tree() -> Iterator[subprocess.Popen[bytes]]:
    leader = subprocess.Popen(["sh", "-c", TREE], start_new_session=True)
    try:
        assert poll_until(lambda: descendants(leader.pid), timeout_s=10)
        yield leader
    finally:
        os.killpg(leader.pid, signal.SIGKILL)
        leader.wait()


def test_a_live_process_is_itself_and_a_reused_pid_is_not() -> None:
    me = os.getpid()
    started = start_time(me)

    assert started is not None
    assert is_same_process(me, started)
    assert not is_same_process(me, started + 1)  # same pid, another start: a reused pid


def test_a_gone_process_has_no_start_time_and_is_not_the_same() -> None:
    pid = dead_pid()

    assert start_time(pid) is None
    assert not is_same_process(pid, 1.7e9)
    assert cmdline(pid) == []


def test_a_start_time_in_clock_ticks_written_before_psutil_only_checks_the_pid() -> None:
    assert is_same_process(os.getpid(), 12345)
    assert not is_same_process(dead_pid(), 12345)


def test_the_command_line_is_the_processs_argv() -> None:
    code = "import time; print('up', flush=True); time.sleep(30)"
    child = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout is not None
        assert child.stdout.readline() == "up\n"  # exec'd: no longer the forked parent's copy
        assert cmdline(child.pid)[1:] == ["-c", code]
    finally:
        child.kill()
        child.wait()


def test_a_paused_tree_is_stopped_down_to_its_children_and_resumed(
    tree: subprocess.Popen[bytes],
) -> None:
    children = descendants(tree.pid)

    pause_tree(tree.pid)
    paused = poll_until(lambda: all(is_stopped(pid) for pid in {tree.pid, *children}), timeout_s=10)
    resume_tree(tree.pid)
    resumed = poll_until(
        lambda: not any(is_stopped(pid) for pid in {tree.pid, *children}), timeout_s=10
    )

    assert children and paused and resumed


def test_a_gone_process_is_not_stopped() -> None:
    assert not is_stopped(dead_pid())


def test_poll_until_returns_the_first_truthy_value() -> None:
    answers = iter([0, None, "", "ready"])

    assert poll_until(lambda: next(answers), timeout_s=5, interval_s=0.001) == "ready"


def test_poll_until_gives_up_at_its_deadline_after_a_last_call() -> None:
    calls: list[float] = []

    def never() -> bool:
        calls.append(time.monotonic())
        return False

    started = time.monotonic()
    found = poll_until(never, timeout_s=0.2, interval_s=0.05)

    assert found is None
    assert calls[-1] - started >= 0.2
    assert time.monotonic() - started < 2


def test_poll_until_sleeps_with_the_given_wait_which_an_event_ends_early() -> None:
    stop = threading.Event()
    stop.set()
    answers = iter([False, True])

    started = time.monotonic()
    assert poll_until(lambda: next(answers), timeout_s=60, interval_s=30, wait=stop.wait)
    assert time.monotonic() - started < 5


def test_the_async_twin_waits_for_a_condition_with_a_deadline() -> None:
    answers = iter([False, False, 7])

    async def condition() -> int | bool:
        return next(answers)

    async def never() -> bool:
        return False

    assert asyncio.run(apoll_until(condition, timeout_s=5, interval_s=0.001)) == 7
    assert asyncio.run(apoll_until(never, timeout_s=0.05, interval_s=0.01)) is None


def test_chosen_ports_are_distinct_even_if_the_chooser_repeats() -> None:
    handed = iter([5, 5, 6, 5, 7])
    assert choose_ports(3, lambda: next(handed)) == [5, 6, 7]


def test_an_atomic_write_leaves_the_whole_file_and_no_temporary_one(tmp_path: Path) -> None:
    target = tmp_path / "state.json"
    write_atomic(target, "old")

    write_atomic(target, "new", 0o644)

    assert target.read_text() == "new"
    assert target.stat().st_mode & 0o777 == 0o644
    assert [p.name for p in tmp_path.iterdir()] == ["state.json"]


def test_a_lock_whose_file_its_holder_replaced_is_not_held_twice(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The holder unlinks the file as it lets go and the next taker makes a new one; a
    process that opened the old file before that must not then hold a lock of its own."""
    import fcntl

    path = tmp_path / "x.lock"
    real_flock = fcntl.flock
    other: list[int] = []

    def replaced_meanwhile(fd: int, operation: int) -> None:
        if not other:  # between our open() and flock(): unlinked, and a new one taken
            path.unlink()
            other.append(os.open(path, os.O_RDWR | os.O_CREAT, 0o600))
            real_flock(other[0], fcntl.LOCK_EX)
        real_flock(fd, operation)

    monkeypatch.setattr(fcntl, "flock", replaced_meanwhile)
    try:
        with exclusive_lock(path) as got:
            assert not got  # the new file's holder has it
    finally:
        os.close(other[0])
    with exclusive_lock(path) as got:
        assert got


def test_a_lock_file_replaced_at_every_try_is_given_up_after_a_bound(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import fcntl

    path = tmp_path / "x.lock"
    real_flock = fcntl.flock
    tries: list[int] = []

    def always_replaced(fd: int, operation: int) -> None:
        tries.append(fd)
        path.unlink()
        path.touch()  # a new file at the path, every time
        real_flock(fd, operation)

    monkeypatch.setattr(fcntl, "flock", always_replaced)
    with exclusive_lock(path) as got:
        assert not got

    assert len(tries) == LOCK_ATTEMPTS
