"""GET /health: is the database reachable, and is the bucket?"""

from __future__ import annotations

import logging

import anyio
from fastapi import APIRouter, status
from fastapi.responses import JSONResponse
from sqlalchemy import text

from api.deps import SessionDep, StorageDep

logger = logging.getLogger(__name__)
router = APIRouter(tags=["health"])

CHECK_TIMEOUT_SECONDS = 5.0


@router.get(
    "/health",
    responses={503: {"description": "The database or the bucket is unreachable."}},
)
async def health(session: SessionDep, storage: StorageDep) -> JSONResponse:
    """200 {"database": "ok", "storage": "ok"}; 503 with "unavailable" for the failing one."""
    checks = {"database": "ok", "storage": "ok"}
    try:
        with anyio.fail_after(CHECK_TIMEOUT_SECONDS):
            await session.execute(text("SELECT 1"))
    except Exception as exc:
        # Any failure, whatever its type, means "not usable right now".
        logger.warning("health: database check failed: %s", type(exc).__name__)
        checks["database"] = "unavailable"
    try:
        with anyio.fail_after(CHECK_TIMEOUT_SECONDS):
            await storage.check_bucket()
    except Exception as exc:
        logger.warning("health: storage check failed: %s", type(exc).__name__)
        checks["storage"] = "unavailable"
    failing = [name for name, state in checks.items() if state != "ok"]
    if not failing:
        return JSONResponse(checks)
    body = {**checks, "detail": f"unavailable: {', '.join(failing)}"}
    return JSONResponse(body, status_code=status.HTTP_503_SERVICE_UNAVAILABLE)
