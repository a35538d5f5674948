"""tox's in-tree plugin: the harness's tox hooks (realstack.toxplugin), which fill tox-docker's
gaps and export the test credentials from [tool.harness]. tox must find pytest-realstack in its
own environment: `make tools` installs it there; a plain tox wants `pip install ./pytest-realstack`
beside it. A project that copied the harness's folder has it beside this file."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.append(str(Path(__file__).resolve().parent))  # a copied realstack/ beside this file
try:
    from realstack.toxplugin import tox_add_core_config, tox_before_run_commands
except ModuleNotFoundError as exc:
    if exc.name not in {"realstack", "realstack.toxplugin"}:
        raise
    raise SystemExit(
        "toxfile.py: tox's own environment cannot import realstack (pytest-realstack), which "
        "holds the tox hooks.\n  fix:  `make tools`, or `pip install ./pytest-realstack` into the "
        "environment that runs tox"
    ) from None

__all__ = ["tox_add_core_config", "tox_before_run_commands"]
