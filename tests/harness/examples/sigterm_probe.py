"""Run by integration/test_signals.py in a nested run: pause the run's PostgreSQL, say where
(PROBE_MARKER), and wait there for the SIGTERM the test sends."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

from realstack import ServerFaults

WAIT_S = 60


def test_paused_when_the_run_is_terminated(server_faults: ServerFaults) -> None:
    with server_faults.paused("postgres") as server:
        leader = int(server.description.rsplit(" ", 1)[1])  # "embedded postgres, process group N"
        marker = Path(os.environ["PROBE_MARKER"])
        marker.write_text(json.dumps({"pid": os.getpid(), "leader": leader}))
        time.sleep(WAIT_S)  # the SIGTERM arrives here
