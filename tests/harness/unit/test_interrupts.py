"""Ctrl-C at any moment of `python -m realstack.embedded ...` ends it with one line, never a
traceback. The moment is made deterministic: an import hook raises KeyboardInterrupt where the
signal would land, while the command imports its own modules (before it starts anything)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[3]
# Raise KeyboardInterrupt when MODULE is first imported, then run the command as `-m` would.
INJECT = """
import importlib.abc, runpy, sys

module = sys.argv[1]

class Interrupt(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name == module:
            raise KeyboardInterrupt
        return None

sys.meta_path.insert(0, Interrupt())
sys.argv = ["realstack.embedded", *sys.argv[2:]]
runpy.run_module("realstack.embedded", run_name="__main__", alter_sys=True)
"""


@pytest.mark.parametrize(
    "module", ["argparse", "realstack.project", "realstack.config", "realstack.contract"]
)
def test_ctrl_c_while_the_command_imports_ends_it_in_one_line(module: str) -> None:
    done = subprocess.run(
        [
            sys.executable,
            "-c",
            INJECT,
            module,
            "--project",
            str(REPO_ROOT / "pyproject.toml"),
            "down",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )

    assert done.returncode == 130, done.stdout + done.stderr
    assert "Traceback" not in done.stderr, done.stderr
    assert done.stderr.strip() == "embedded services: interrupted before anything was started"
