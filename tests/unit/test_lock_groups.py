"""Every tox env installs from uv.lock, and the lock covers the harness's own requirements.

The harness core keeps its dependencies in tests/harness/requirements*.txt, so that it stays a
folder a project can copy. pyproject.toml mirrors each file as a dependency group, which is what
uv locks and tox installs; these tests fail when a file and its group disagree.
"""

from __future__ import annotations

import configparser
import re
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[2]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
GROUPS = PYPROJECT["dependency-groups"]
MIRRORS = {
    "requirements.txt": "harness",
    "requirements-s3.txt": "harness-s3",
    "requirements-embedded.txt": "harness-embedded",
    "requirements-embedded-s3.txt": "harness-embedded-s3",
}


def _normalized(lines: list[str]) -> set[tuple[str, frozenset[str], str, str]]:
    parsed = (Requirement(line) for line in lines)
    return {
        (canonicalize_name(r.name), frozenset(r.extras), str(r.specifier), str(r.marker or ""))
        for r in parsed
    }


def _requirements(path: Path) -> list[str]:
    lines = (line.split("#", 1)[0].strip() for line in path.read_text().splitlines())
    return [line for line in lines if line]


def _tox_ini() -> configparser.ConfigParser:
    parser = configparser.ConfigParser(interpolation=None)
    parser.read(ROOT / "tox.ini")
    return parser


def test_every_requirements_file_of_the_core_has_a_mirror_group() -> None:
    files = {path.name for path in (ROOT / "tests/harness").glob("requirements*.txt")}
    assert files == set(MIRRORS)


@pytest.mark.parametrize(("filename", "group"), MIRRORS.items())
def test_each_requirements_file_and_its_group_name_the_same_requirements(
    filename: str, group: str
) -> None:
    in_file = _normalized(_requirements(ROOT / "tests/harness" / filename))
    in_group = _normalized([item for item in GROUPS[group] if isinstance(item, str)])
    assert in_file == in_group, (
        f"tests/harness/{filename} and [dependency-groups] {group} disagree: "
        f"only in the file {sorted(in_file - in_group)}, only in the group "
        f"{sorted(in_group - in_file)}; make them equal, then `make lock`"
    )


def test_the_lock_is_committed() -> None:
    assert (ROOT / "uv.lock").is_file(), "uv.lock is missing: `make lock`, then commit it"


def test_every_env_installs_from_the_lock_and_lists_no_package_of_its_own() -> None:
    ini = _tox_ini()
    assert ini["testenv"]["runner"].strip() == "uv-venv-lock-runner"
    for name, section in ini.items():
        if name == "testenv" or name.startswith("testenv:"):
            assert "deps" not in section, f"[{name}] has deps: a package outside the lock"
            assert section.get("runner", "uv-venv-lock-runner").strip() == "uv-venv-lock-runner"


def test_every_group_an_env_names_exists() -> None:
    ini = _tox_ini()
    named: set[str] = set()
    for section in ini.values():
        for key in ("dependency_groups", "only_groups"):
            for line in section.get(key, "").split():
                if not line.startswith("{"):
                    named.add(line.strip(","))
    assert named
    assert named <= set(GROUPS), sorted(named - set(GROUPS))


def test_the_lock_is_checked_by_the_uv_that_make_bootstraps() -> None:
    makefile = (ROOT / "Makefile").read_text()
    bootstrapped = re.search(r"^TOOL_PINS := .*\buv==(\S+)", makefile, re.M)
    assert bootstrapped, "the Makefile's TOOL_PINS must pin uv"
    assert f"uv=={bootstrapped.group(1)}" in GROUPS["lint"]
