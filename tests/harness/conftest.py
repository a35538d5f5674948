"""The harness's own tier loads the harness like any project does."""

# pytester: nested pytest runs of the tier (test_guard.py).
pytest_plugins = ["realstack.plugin", "pytester"]
