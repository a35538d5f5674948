"""The probe app's adapter: what a FastAPI service of another shape writes."""

from __future__ import annotations

from fastapi import FastAPI
from realstack import RunTargets

from tests.harness.probe_app.app import create_app as create_probe_app
from tests.harness.probe_app.app import current_user, get_sessionmaker
from tests.harness.sample.models import Base
from tests.harness.sample.settings import Settings

metadata = Base.metadata
session_dependency = get_sessionmaker
session_dependency_yields = "sessionmaker"  # routes do `async with maker.begin() as session`


def create_app(run: RunTargets) -> FastAPI:
    app = create_probe_app(Settings.from_targets(run))
    app.dependency_overrides[current_user] = lambda: "probe-user"
    return app
