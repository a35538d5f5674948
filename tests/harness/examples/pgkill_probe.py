"""Run by test_faults_harness.py under its own embedded services; not collected on its own
(examples/).

The first test kills PostgreSQL; the ones after it must fail with a clear error,
and the run must still tear down and end.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from pathlib import Path

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

DEADLINE_S = 10.0


def _kill_postmaster(backend_pid: int) -> bool:
    """SIGKILL the postmaster, the parent of our backend; True once its process is gone."""
    status = Path(f"/proc/{backend_pid}/status").read_text()
    postmaster = int(
        next(line for line in status.splitlines() if line.startswith("PPid:")).split()[1]
    )
    os.kill(postmaster, signal.SIGKILL)
    deadline = time.monotonic() + DEADLINE_S
    while _alive(postmaster) and time.monotonic() < deadline:
        time.sleep(0.02)
    return not _alive(postmaster)


def _alive(pid: int) -> bool:
    """Running, as opposed to gone or a zombie its parent (the launcher) has not reaped yet."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


async def test_1_kill_postgresql(db_session: AsyncSession) -> None:
    backend = await db_session.scalar(text("SELECT pg_backend_pid()"))
    assert await asyncio.to_thread(_kill_postmaster, int(str(backend)))


async def test_2_after_the_kill(db_session: AsyncSession) -> None:
    await db_session.execute(text("SELECT 1"))
