"""PostgreSQL, the service every project has. Its target is TEST_DATABASE_URL or the POSTGRES_*
variables (contract.resolve_database), refused unless guard.check_database_target passes; each
run gets its own database or schema (janitor.py), each test a SAVEPOINT (isolation.py, through
the fixtures of realstack.fixtures), and what killed runs left is swept (sweeps.py)."""

from __future__ import annotations

from collections.abc import Mapping

from ..contract import POSTGRES_HOST, POSTGRES_PORT, resolve_database
from ..guard import mask_url
from ..project import Project
from ..sweeps import sweep_dead_stores
from . import ServiceKind


async def sweep_dead(project: Project, env: Mapping[str, str], include_kept: bool) -> list[str]:
    url = resolve_database(project, env).url
    if url is None:
        return []
    return await sweep_dead_stores(url, project, include_kept=include_kept)


def where(project: Project, env: Mapping[str, str]) -> str:
    url = resolve_database(project, env).url
    return mask_url(url) if url else ""


KIND = ServiceKind(
    name="postgres",
    describe="PostgreSQL",
    host=POSTGRES_HOST,
    port=POSTGRES_PORT,
    embedded_program="postgres",
    fixtures="realstack.fixtures",
    sweep_dead=sweep_dead,
    where=where,
    endpoint=lambda config: config.database_url,
)
