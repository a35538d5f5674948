"""For the probes only (nested runs): with PROBE_REPORT_DIR set, each pytest process (the
xdist controller and every worker) writes what it saw there when its session ends."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from realstack import config as harness_config_module
from realstack.stash import CONFIG

REPORT_DIR_VARIABLE = "PROBE_REPORT_DIR"


def pytest_sessionfinish(session: pytest.Session) -> None:
    folder = os.environ.get(REPORT_DIR_VARIABLE)
    if not folder:
        return
    workerinput = getattr(session.config, "workerinput", None)
    process = workerinput["workerid"] if workerinput else "controller"
    resolved = session.config.stash.get(CONFIG, None)
    report = {
        "pid": os.getpid(),
        "resolutions": harness_config_module.resolutions,
        "run_id": resolved.run_id if resolved else None,
        "database_url": resolved.database_url if resolved else None,
        "per_run": resolved.per_run if resolved else None,
        "tests": session.testscollected,
    }
    Path(folder, f"{process}.json").write_text(json.dumps(report))
