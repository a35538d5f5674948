""".ci/check_shards.py: the shards' union must be exactly the suite, each test once."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest
from _pytest.junitxml import mangle_test_address

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / ".ci" / "check_shards.py"


def _junit(path: Path, *ids: str) -> Path:
    cases = "".join(
        f'<testcase classname="{classname}" name="{name}" time="0.1"/>'
        for classname, _, name in (test.partition("::") for test in ids)
    )
    path.write_text(
        f'<?xml version="1.0"?><testsuites><testsuite name="pytest" tests="{len(ids)}">'
        f"{cases}</testsuite></testsuites>"
    )
    return path


def _run(*args: Path | str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(SCRIPT), *map(str, args)], capture_output=True, text=True, check=False
    )


SUITE = ("t.test_a::test_one", "t.test_a::test_two[x-1]", "t.test_b.TestC::test_three")


def test_shards_that_split_the_suite_exactly_pass(tmp_path: Path) -> None:
    full = _junit(tmp_path / "integration.xml", *SUITE)
    one = _junit(tmp_path / "integration-shard-1-of-2.xml", SUITE[0], SUITE[2])
    two = _junit(tmp_path / "integration-shard-2-of-2.xml", SUITE[1])
    result = _run("--expected", full, one, two)
    assert result.returncode == 0, result.stderr
    assert "ran every test of the suite exactly once" in result.stdout


@pytest.mark.parametrize(
    ("shard_one", "shard_two", "message"),
    [
        ((SUITE[0],), (SUITE[1],), "1 test(s) ran in no shard:\n    t.test_b.TestC::test_three"),
        ((SUITE[0], SUITE[2]), (SUITE[1], SUITE[2]), "1 test(s) ran in more than one shard"),
        ((*SUITE,), ("t.test_a::test_new",), "1 test(s) ran that the suite does not hold"),
        ((*SUITE,), (), "integration-shard-2-of-2.xml holds no test"),
    ],
    ids=["lost", "twice", "unknown", "empty-shard"],
)
def test_a_lost_duplicated_or_foreign_test_fails_and_is_named(
    tmp_path: Path, shard_one: tuple[str, ...], shard_two: tuple[str, ...], message: str
) -> None:
    full = _junit(tmp_path / "integration.xml", *SUITE)
    one = _junit(tmp_path / "integration-shard-1-of-2.xml", *shard_one)
    two = _junit(tmp_path / "integration-shard-2-of-2.xml", *shard_two)
    result = _run("--expected", full, one, two)
    assert result.returncode == 1
    assert message in result.stderr


def test_collected_node_ids_are_named_as_junit_names_them(tmp_path: Path) -> None:
    ids = tmp_path / "ids.txt"
    ids.write_text(
        "tests/integration/test_a.py::test_one\n"
        "tests/integration/test_a.py::test_two[a::b-1.py]\n"
        "tests/integration/test_b.py::TestC::test_three\n"
        "\n3 tests collected in 0.1s\n"
    )
    shard = _junit(
        tmp_path / "integration-shard-1-of-1.xml",
        "tests.integration.test_a::test_one",
        "tests.integration.test_a::test_two[a::b-1.py]",
        "tests.integration.test_b.TestC::test_three",
    )
    result = _run("--expected", ids, shard)
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize(
    "nodeid",
    [
        "tests/integration/test_a.py::test_one",
        "tests/integration/test_a.py::test_two[a::b-1.py]",
        "tests/integration/test_b.py::TestC::test_three[x/y]",
    ],
)
def test_the_naming_is_pytests_own(nodeid: str) -> None:
    spec = importlib.util.spec_from_file_location("check_shards", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    names = mangle_test_address(nodeid)
    assert module.nodeid_to_junit(nodeid) == (".".join(names[:-1]), names[-1])


def test_a_missing_report_is_named(tmp_path: Path) -> None:
    result = _run("--expected", tmp_path / "integration.xml", tmp_path / "shard.xml")
    assert result.returncode == 1
    assert "integration.xml is missing" in result.stderr
