"""A team that copies the harness's folder (pytest-realstack/src/realstack) lints it with its own
ruff configuration at its project root. The folder carries its own (realstack/ruff.toml), which
ruff takes for the files under it, so the copy stays clean whatever the team's rules are.

    python .ci/check_copy_lint.py [RUFF]      run by `make lint` (tox -e lint)

Checks a copy under a new user's configuration (line length 88, rules E/W/F/I/B/C4/UP) with
`ruff check` and `ruff format --check`; exits 1 and prints ruff's findings otherwise.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CORE = ROOT / "pytest-realstack" / "src" / "realstack"
NEW_USERS_CONFIG = """\
[project]
name = "their-service"
version = "0.1.0"
requires-python = ">=3.11"

[tool.ruff]
line-length = 88

[tool.ruff.lint]
select = ["E", "W", "F", "I", "B", "C4", "UP"]
"""


def main() -> int:
    found = shutil.which(sys.argv[1] if len(sys.argv) > 1 else "ruff")
    if found is None:
        sys.exit("check_copy_lint: ruff not found")
    ruff = str(Path(found).resolve())  # it runs in the copy's directory
    with tempfile.TemporaryDirectory(prefix="copy-lint-") as tmp:
        project = Path(tmp)
        (project / "pyproject.toml").write_text(NEW_USERS_CONFIG)
        shutil.copytree(CORE, project / "realstack", ignore=shutil.ignore_patterns("__pycache__"))
        failed = 0
        for command in ([ruff, "check", "."], [ruff, "format", "--check", "."]):
            result = subprocess.run(  # noqa: S603 (our own command line)
                command, cwd=project, capture_output=True, text=True, check=False
            )
            if result.returncode:
                failed += 1
                print(f"check_copy_lint: `{' '.join(command[1:])}` on a copy of {CORE.name}/:")
                print(result.stdout + result.stderr)
    if failed:
        print("check_copy_lint: the copied folder is not clean under a new user's ruff config")
        return 1
    print(f"check_copy_lint: a copy of {CORE.name}/ is clean under a new user's ruff config")
    return 0


if __name__ == "__main__":
    sys.exit(main())
