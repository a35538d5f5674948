"""GET /health: is the database reachable, and is the bucket? Answers within HEALTH_TIMEOUT
whatever either server does: both checks run at once, each cut at the deadline."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

import anyio
from fastapi import APIRouter, status
from fastapi.responses import JSONResponse
from sqlalchemy import text

from api.deps import SessionDep, SettingsDep, StorageDep

logger = logging.getLogger(__name__)
router = APIRouter(tags=["health"])


@router.get(
    "/health",
    responses={503: {"description": "The database or the bucket is unreachable."}},
)
async def health(session: SessionDep, storage: StorageDep, settings: SettingsDep) -> JSONResponse:
    """200 {"database": "ok", "storage": "ok"}; 503 with "unavailable" for the failing one."""
    checks = {"database": "unavailable", "storage": "unavailable"}

    async def database() -> None:
        await session.execute(text("SELECT 1"))

    async def storage_check() -> None:
        await storage.check_bucket()

    async def check(name: str, probe: Callable[[], Awaitable[None]]) -> None:
        try:
            with anyio.fail_after(settings.health_timeout):
                await probe()
        except Exception as exc:
            # Any failure, whatever its type, means "not usable right now".
            logger.warning("health: %s check failed: %s", name, type(exc).__name__)
        else:
            checks[name] = "ok"

    async with anyio.create_task_group() as group:
        group.start_soon(check, "database", database)
        group.start_soon(check, "storage", storage_check)
    failing = [name for name, state in checks.items() if state != "ok"]
    if not failing:
        return JSONResponse(checks)
    body = {**checks, "detail": f"unavailable: {', '.join(failing)}"}
    return JSONResponse(body, status_code=status.HTTP_503_SERVICE_UNAVAILABLE)
