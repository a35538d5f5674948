"""One env.py snippet: the one the migration error prints is, verbatim, the one the README shows,
and the sample app's env.py runs on it (so every harness run exercises it)."""

from __future__ import annotations

from pathlib import Path
from textwrap import indent

from realstack.migrations import ENV_PY_FIX, ENV_PY_SNIPPET

REPO_ROOT = Path(__file__).resolve().parents[3]
SAMPLE_ENV_PY = REPO_ROOT / "tests" / "harness" / "sample" / "migrations" / "env.py"


def test_the_readme_shows_the_snippet_the_error_prints() -> None:
    readme = (REPO_ROOT / "README.md").read_text()

    assert f"```python\n{ENV_PY_SNIPPET}\n```" in readme
    assert indent(ENV_PY_SNIPPET, "    ") in ENV_PY_FIX


def test_the_snippet_never_calls_the_function_it_defines() -> None:
    online = ENV_PY_SNIPPET[ENV_PY_SNIPPET.index("def run_migrations_online") :]

    assert online.count("run_migrations_online(") == 1
    assert 'config.attributes.get("connection")' in online


def test_the_sample_apps_env_py_runs_on_the_snippet() -> None:
    online = ENV_PY_SNIPPET[ENV_PY_SNIPPET.index("def run_migrations_online") :]

    assert online in SAMPLE_ENV_PY.read_text()
