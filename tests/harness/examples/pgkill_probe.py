"""Run by test_faults_harness.py under its own embedded services; not collected on its own
(examples/).

The first test kills PostgreSQL: the run must stop there with one line saying why, rather
than fail the 21 tests after it the same way, and still tear down and end.
"""

from __future__ import annotations

import asyncio
import os
import signal

import psutil
import pytest
from realstack.process import poll_until
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

DEADLINE_S = 10.0


def _kill_postmaster(backend_pid: int) -> bool:
    """SIGKILL the postmaster, the parent of our backend; True once its process is gone."""
    postmaster = psutil.Process(backend_pid).ppid()
    os.kill(postmaster, signal.SIGKILL)
    return bool(poll_until(lambda: not _alive(postmaster), timeout_s=DEADLINE_S, interval_s=0.02))


def _alive(pid: int) -> bool:
    """Running, as opposed to gone or a zombie its parent (the launcher) has not reaped yet."""
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


async def test_1_kill_postgresql(db_session: AsyncSession) -> None:
    backend = await db_session.scalar(text("SELECT pg_backend_pid()"))
    assert await asyncio.to_thread(_kill_postmaster, int(str(backend)))


async def test_2_after_the_kill(db_session: AsyncSession) -> None:
    await db_session.execute(text("SELECT 1"))


@pytest.mark.parametrize("n", range(20))
async def test_3_and_more_after_the_kill(db_session: AsyncSession, n: int) -> None:
    await db_session.execute(text("SELECT 1"))
