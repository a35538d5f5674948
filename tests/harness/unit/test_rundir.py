"""A run's directory and state file, and the sweep of the runs whose owner died."""

from __future__ import annotations

import os
from pathlib import Path

from realstack.embedded.rundir import Child, RunDir, RunState, sweep_dead_runs, tidy_base
from realstack.process import exclusive_lock, start_time

from tests.harness.helpers import make_run_dir

NEVER_ALIVE_PID = 2**22 + 1  # above pid_max: never a live process


def test_the_run_state_round_trips() -> None:
    state = RunState(1, 2.5, [Child(3, 4.25, "weed")], ["/tmp/x.sock"])
    assert RunState.load(state.dump()) == state


def test_the_sweep_removes_runs_of_dead_owners_and_keeps_live_ones(tmp_path: Path) -> None:
    dead = make_run_dir(tmp_path, "run-dead", NEVER_ALIVE_PID, 123)
    me = os.getpid()
    live = make_run_dir(tmp_path, "run-live", me, start_time(me) or 0.0)
    reused = make_run_dir(tmp_path, "run-reused", me, (start_time(me) or 0.0) + 1)
    being_created = tmp_path / "run-new"
    being_created.mkdir()

    removed = sweep_dead_runs(tmp_path)

    assert sorted(removed) == sorted([dead, reused])
    assert live.exists() and being_created.exists()


def test_tidy_base_removes_free_locks_and_the_empty_base_and_keeps_the_rest(
    tmp_path: Path,
) -> None:
    base = tmp_path / "docstore-harness-0"
    base.mkdir()
    (base / "services-abc.lock").touch()
    (base / "paused-42.lock").touch()
    tidy_base(base)
    assert not base.exists()

    base.mkdir()
    held, other = base / "services-abc.lock", base / "services-abc.json"
    other.write_text("{}")
    with exclusive_lock(held) as mine:
        assert mine
        tidy_base(base)  # a lock in use, and a file that is no lock: both stay
    assert sorted(p.name for p in base.iterdir()) == ["services-abc.json", "services-abc.lock"]


def test_the_last_run_leaves_no_base_and_the_next_makes_it_again_for_the_server_user(
    tmp_path: Path,
) -> None:
    base = tmp_path / "base"
    run = RunDir.create(base, None)
    run.remove()
    assert not base.exists()  # its run was the last: nothing left
    again = RunDir.create(base, None)
    assert again.path.parent == base and base.stat().st_mode & 0o777 == 0o755
    again.remove()
