"""`make test-integration SHARD=i/n`: the argument is checked strictly before anything runs, and
a shard that holds no test ends well, saying so."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
RULE = "whole numbers without leading zeros, 1 <= i <= n <= 1000"


def _make(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["make", "--no-print-directory", *args],
        cwd=ROOT,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@pytest.mark.parametrize("shard", ["1/2", "2/2", "1/1000", "1000/1000", "17/99"])
def test_a_well_formed_shard_is_taken(shard: str) -> None:
    result = _make("_shard", f"SHARD={shard}")

    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == shard.split("/")


@pytest.mark.parametrize(
    "shard",
    [
        "1/",
        "/2",
        "1/99999999999999999999",
        "2/02",
        "07/9",
        "0/2",
        "3/2",
        "1/1001",
        "x/2",
        "1/2/3",
        "-1/2",
    ],
)
def test_anything_else_is_refused_with_the_rule_and_the_value_seen(shard: str) -> None:
    result = _make("_shard", f"SHARD={shard}")

    assert result.returncode == 2
    assert RULE in result.stderr and f"(got '{shard}')" in result.stderr
    assert result.stdout == ""


def _stub_tox(tmp_path: Path, code: int) -> Path:
    tox = tmp_path / "tox"
    tox.write_text(f"#!/bin/sh\nexit {code}\n")
    tox.chmod(0o755)
    return tox


def test_a_shard_that_holds_no_test_exits_0_saying_so(tmp_path: Path) -> None:
    # pytest (through tox) exits 5 when a shard's share of the tests is empty.
    tox = _stub_tox(tmp_path, 5)

    result = _make("test-integration", "SHARD=999/1000", "BACKEND=embedded", f"TOX={tox}")

    assert result.returncode == 0, result.stderr
    assert "make: shard 999 of 1000 holds no test" in result.stderr


def test_a_shard_that_fails_keeps_its_exit_code(tmp_path: Path) -> None:
    tox = _stub_tox(tmp_path, 1)

    result = _make("test-integration", "SHARD=1/2", "BACKEND=embedded", f"TOX={tox}")

    assert result.returncode != 0
    assert "holds no test" not in result.stderr
