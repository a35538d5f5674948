"""Fixtures of the harness's unit tests: a sample project and its launcher settings."""

from __future__ import annotations

from pathlib import Path

import pytest
from realstack.config import EmbeddedSettings, embedded_settings
from realstack.project import Project

from tests.harness.helpers import write_project


@pytest.fixture
def project(tmp_path: Path) -> Project:
    return write_project(tmp_path / "sample")


@pytest.fixture
def settings(project: Project, tmp_path: Path) -> EmbeddedSettings:
    return embedded_settings(project, {"TEST_HARNESS_RUN_BASE": str(tmp_path / "runs")})
