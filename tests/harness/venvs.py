"""Virtual environments for the packaging tests: this env's packages without pytest-realstack
(a team that copies the folder), and the same with the distribution really installed from
its folder by pip (a team that installs it).

Building one from the index would take a minute; instead the new venv's site-packages links
every entry of this env's site-packages but the harness's own (its editable .pth, its
dist-info), so the versions are exactly this env's lock.
"""

from __future__ import annotations

import subprocess
import sys
import sysconfig
from pathlib import Path

DISTRIBUTION = "pytest-realstack"
SOURCE = Path(__file__).resolve().parents[2] / DISTRIBUTION
TIMEOUT_S = 300


def _is_harness(name: str) -> bool:
    return "realstack" in name.lower()


def venv_without_harness(root: Path, *, with_pip: bool = False) -> Path:
    """A venv at `root` with this env's packages but not the harness; its python."""
    command = [sys.executable, "-m", "venv", *([] if with_pip else ["--without-pip"]), str(root)]
    subprocess.run(command, check=True, capture_output=True, timeout=TIMEOUT_S)
    python = root / "bin" / "python"
    site = Path(
        subprocess.run(
            [python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
            check=True,
            capture_output=True,
            text=True,
            timeout=TIMEOUT_S,
        ).stdout.strip()
    )
    ours = Path(sysconfig.get_paths()["purelib"])
    for entry in ours.iterdir():
        target = site / entry.name
        if not _is_harness(entry.name) and not target.exists():
            target.symlink_to(entry)
    return python


def venv_with_harness_installed(root: Path) -> Path:
    """The same, with pytest-realstack installed by `pip install <path>` (not editable: its
    files land in the venv's site-packages); its python."""
    python = venv_without_harness(root, with_pip=True)
    subprocess.run(
        [
            python,
            "-m",
            "pip",
            "install",
            "--quiet",
            "--no-deps",
            "--disable-pip-version-check",
            str(SOURCE),
        ],
        check=True,
        capture_output=True,
        timeout=TIMEOUT_S,
    )
    return python
