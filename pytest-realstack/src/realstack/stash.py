"""The keys of what the plugin keeps in pytest's config stash, shared with the fixtures: one
module below both, so neither imports the other to find them."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pytest

from .config import HarnessConfig
from .project import Project

if TYPE_CHECKING:
    from .adapter import AppAdapter

PROJECT = pytest.StashKey[Project]()
CONFIG = pytest.StashKey[HarnessConfig]()
ADAPTER: pytest.StashKey[AppAdapter] = pytest.StashKey()
# Set when pytest_load_initial_conftests resolved (or decided there was nothing to resolve).
EARLY = pytest.StashKey[bool]()
# The run's bucket janitor while it exists (s3_fixtures sets it): what after-test fixtures empty.
RUN_BUCKET = pytest.StashKey[Any]()
