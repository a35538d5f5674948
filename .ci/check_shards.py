"""Fail unless the shards' junit files together hold exactly the whole suite, each test once.

    python3 .ci/check_shards.py --expected reports/integration.xml SHARD.xml [SHARD.xml ...]
    python3 .ci/check_shards.py --expected ids.txt SHARD.xml [SHARD.xml ...]

--expected is the unsharded run's junit file, or a list of pytest node ids, one per line (what
`pytest --collect-only -q` prints). A test is named as junit names it: classname and name.
Standard library only, like check_junit.py: it runs before any env exists.
"""

from __future__ import annotations

import argparse
import re
import sys
import xml.etree.ElementTree as ET
from collections import Counter
from pathlib import Path

TestId = tuple[str, str]


def junit_ids(report: Path) -> list[TestId]:
    """Every testcase of a junit file, as (classname, name), duplicates kept."""
    root = ET.parse(report).getroot()
    return [(case.get("classname", ""), case.get("name", "")) for case in root.iter("testcase")]


def nodeid_to_junit(nodeid: str) -> TestId:
    """pytest's junitxml naming (mangle_test_address): the path dotted, `.py` dropped."""
    path, bracket, params = nodeid.partition("[")
    names = path.split("::")
    names[0] = re.sub(r"\.py$", "", names[0].replace("/", "."))
    names[-1] += bracket + params
    return ".".join(names[:-1]), names[-1]


def expected_ids(source: Path) -> list[TestId]:
    if source.suffix == ".xml":
        return junit_ids(source)
    lines = (line.strip() for line in source.read_text().splitlines())
    return [nodeid_to_junit(line) for line in lines if "::" in line]


def show(ids: list[TestId], limit: int = 20) -> str:
    shown = [f"    {classname}::{name}" for classname, name in sorted(ids)[:limit]]
    if len(ids) > limit:
        shown.append(f"    ... and {len(ids) - limit} more")
    return "\n".join(shown)


def check(expected: list[TestId], shards: dict[Path, list[TestId]]) -> list[str]:
    """The problems found; none means the shards' union is exactly the expected suite."""
    problems = []
    if not shards:
        return ["no shard report given"]
    want = Counter(expected)
    if not want:
        problems.append("the expected suite holds no test")
    repeated_in_expected = [test for test, count in want.items() if count > 1]
    if repeated_in_expected:
        problems.append(
            f"{len(repeated_in_expected)} test id(s) appear twice in the expected suite "
            "itself, so they cannot be told apart:\n" + show(repeated_in_expected)
        )
    got: Counter[TestId] = Counter()
    for report, ids in shards.items():
        if not ids:
            problems.append(f"{report} holds no test")
        got.update(ids)
    lost = [test for test in want if test not in got]
    twice = [test for test, count in got.items() if count > 1]
    unknown = [test for test in got if test not in want]
    if lost:
        problems.append(f"{len(lost)} test(s) ran in no shard:\n" + show(lost))
    if twice:
        problems.append(f"{len(twice)} test(s) ran in more than one shard:\n" + show(twice))
    if unknown:
        problems.append(
            f"{len(unknown)} test(s) ran that the suite does not hold:\n" + show(unknown)
        )
    return problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--expected", type=Path, required=True)
    parser.add_argument("shards", type=Path, nargs="*")
    args = parser.parse_args(argv)
    for path in [args.expected, *args.shards]:
        if not path.is_file():
            print(f"check_shards: {path} is missing", file=sys.stderr)
            return 1
    expected = expected_ids(args.expected)
    shards = {report: junit_ids(report) for report in args.shards}
    sizes = ", ".join(f"{report.name}: {len(ids)}" for report, ids in shards.items())
    print(f"check_shards: {len(expected)} tests expected ({args.expected}); shards {sizes}")
    problems = check(expected, shards)
    for problem in problems:
        print(f"check_shards: {problem}", file=sys.stderr)
    if problems:
        return 1
    print(f"check_shards: the {len(shards)} shards ran every test of the suite exactly once")
    return 0


if __name__ == "__main__":
    sys.exit(main())
