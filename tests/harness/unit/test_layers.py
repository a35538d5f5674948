"""The package's layers: every module is in exactly one layer of its import contracts
(pytest-realstack/.importlinter, which `make lint` runs), so none escapes them."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]
CHECK = ROOT / ".ci" / "check_layers.py"
CONFIG = ROOT / "pytest-realstack" / ".importlinter"
SRC = ROOT / "pytest-realstack" / "src"


def _check(config: Path = CONFIG, src: Path = SRC) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(CHECK), "--config", str(config), "--src", str(src)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_every_module_of_the_package_is_in_exactly_one_layer() -> None:
    result = _check()
    assert result.returncode == 0, result.stdout + result.stderr


def test_a_module_in_no_layer_is_named(tmp_path: Path) -> None:
    shutil.copytree(SRC, tmp_path / "src", ignore=shutil.ignore_patterns("__pycache__"))
    (tmp_path / "src" / "realstack" / "stray.py").write_text('"""In no layer."""\n')

    result = _check(src=tmp_path / "src")

    assert result.returncode == 1
    assert "realstack.stray is in no layer" in result.stdout


def test_a_module_two_layers_claim_is_named(tmp_path: Path) -> None:
    config = tmp_path / ".importlinter"
    text = CONFIG.read_text().replace("    process\n", "    process : stamps\n")
    config.write_text(text)

    result = _check(config=config)

    assert result.returncode == 1
    assert "realstack.stamps is in 2 layers" in result.stdout
