"""A run's directory and state file, and the sweep of the runs whose owner died."""

from __future__ import annotations

import os
from pathlib import Path

from realstack.embedded.rundir import Child, RunState, sweep_dead_runs
from realstack.process import start_time

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
