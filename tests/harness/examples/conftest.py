"""For the probes only (nested runs): with PROBE_REPORT_DIR set, each pytest process (the
xdist controller and every worker) writes what it saw there when its session ends, including
how many bucket listings (ListObjectsV2 requests, by any client) each test made, its
teardown included."""

from __future__ import annotations

import http.client
import json
import os
from pathlib import Path
from typing import Any

import pytest
from realstack import config as harness_config_module
from realstack.stash import CONFIG

REPORT_DIR_VARIABLE = "PROBE_REPORT_DIR"
_current_test = [""]
_listings: dict[str, int] = {}  # test node id -> bucket listings sent while it ran


def _count_listings() -> None:
    """Count each ListObjectsV2 request that leaves this process (http.client's putrequest:
    boto3's requests go through it too), for the test that is running."""
    putrequest = http.client.HTTPConnection.putrequest

    def counted(self: http.client.HTTPConnection, method: str, url: str, *a: Any, **k: Any) -> None:
        if method == "GET" and "list-type=2" in url:
            _listings[_current_test[0]] = _listings.get(_current_test[0], 0) + 1
        putrequest(self, method, url, *a, **k)

    http.client.HTTPConnection.putrequest = counted  # type: ignore[method-assign]


def pytest_configure(config: pytest.Config) -> None:
    if os.environ.get(REPORT_DIR_VARIABLE):
        _count_listings()


def pytest_runtest_logstart(nodeid: str) -> None:
    _current_test[0] = nodeid


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
        "bucket_listings": _listings,
    }
    Path(folder, f"{process}.json").write_text(json.dumps(report))
