"""xdist workers share one set of services, each with its own database and bucket, and take
the controller's resolved configuration instead of resolving again."""

from __future__ import annotations

import asyncio
import json
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

from realstack.config import HarnessConfig
from realstack.stamps import RunNames
from sqlalchemy.ext.asyncio import AsyncEngine

from tests.harness.helpers import names_for, run_leftovers
from tests.harness.nested import EXAMPLES, run_nested_pytest

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client


async def _leftovers(admin: AsyncEngine, s3_client: S3Client, child_run: str) -> list[str]:
    stores = await run_leftovers(admin, child_run)
    buckets = await asyncio.to_thread(s3_client.list_buckets)
    dashed = child_run.replace("_", "-").lower()
    return stores + [b["Name"] for b in buckets.get("Buckets", []) if dashed in b["Name"]]


def _reports(folder: Path) -> dict[str, dict[str, Any]]:
    """What each process of the nested run wrote at its session's end (examples/conftest.py)."""
    return {p.stem: json.loads(p.read_text()) for p in folder.glob("*.json")}


async def test_two_workers_share_the_services_but_not_their_data(
    harness_config: HarnessConfig, admin: AsyncEngine, s3_client: S3Client, run_names: RunNames
) -> None:
    child_run = names_for(run_names, "xdist").run_id
    probe = str(EXAMPLES / "xdist_probe.py")
    result = await run_nested_pytest(harness_config, ["-n", "2", "-v", probe], run_id=child_run)

    assert result.returncode == 0, result.stdout + result.stderr
    assert re.search(r"\[gw0\] .*PASSED", result.stdout)
    assert re.search(r"\[gw1\] .*PASSED", result.stdout)
    assert await _leftovers(admin, s3_client, child_run) == []  # every worker cleaned up


async def test_workers_take_the_controllers_targets_and_never_resolve(
    harness_config: HarnessConfig,
    admin: AsyncEngine,
    s3_client: S3Client,
    run_names: RunNames,
    tmp_path: Path,
) -> None:
    child_run = names_for(run_names, "resolve").run_id
    probe = str(EXAMPLES / "fixtures_probe.py")
    result = await run_nested_pytest(
        harness_config,
        ["-n", "2", probe],
        run_id=child_run,
        env={"PROBE_REPORT_DIR": str(tmp_path)},
    )
    reports = _reports(tmp_path)

    assert result.returncode == 0, result.stdout + result.stderr
    assert sorted(reports) == ["controller", "gw0", "gw1"]
    assert reports["controller"]["resolutions"] == 1
    assert reports["gw0"]["resolutions"] == reports["gw1"]["resolutions"] == 0
    assert len({r["pid"] for r in reports.values()}) == 3
    assert {r["run_id"] for r in reports.values()} == {child_run}
    assert len({r["database_url"] for r in reports.values()}) == 1
    assert {r["per_run"] for r in reports.values()} == {"database"}  # decided once, taken
    assert await _leftovers(admin, s3_client, child_run) == []
