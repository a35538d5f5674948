"""The launcher's process handling: port conflicts recognised in the servers' logs, and exit
codes by the shell's convention."""

from __future__ import annotations

import pytest
from realstack.embedded.procs import exit_status, is_port_conflict


@pytest.mark.parametrize(
    "line",
    [
        'LOG:  could not bind IPv4 address "127.0.0.1": Address already in use',
        "E1121 mini.go:1244 Port allocation failed: port 60239 for Master (specified by flag "
        "master.port) is not available on 127.0.0.1 and cannot be used",
    ],
)
def test_port_conflicts_are_recognised_in_both_servers_logs(line: str) -> None:
    assert is_port_conflict(line)


def test_other_start_up_failures_are_not_port_conflicts() -> None:
    assert not is_port_conflict('FATAL:  data directory "/x" has invalid permissions')


def test_a_child_killed_by_a_signal_exits_128_plus_the_signal() -> None:
    assert (exit_status(-2), exit_status(3), exit_status(0)) == (130, 3, 0)
