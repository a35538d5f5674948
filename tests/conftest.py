"""Loads the test harness (tests/harness/): the guard, the services, the fixtures."""

pytest_plugins = ["tests.harness.plugin"]
