"""The harness's own tier loads the harness like any project does."""

pytest_plugins = ["realstack.plugin"]
