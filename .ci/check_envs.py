"""Fail unless every built tox env holds exactly the versions of its lock (locks/<set>.txt).

    python3 .ci/check_envs.py [TOX_DIR ...]      default: .tox and each .tox/shard-*

For each env of tox.ini built under a tox dir, `uv pip sync --dry-run` with the env's lock
(its `deps = -r locks/<set>.txt`): the one change uv may propose is to remove docstore itself,
which an env built before tox.ini said `package = skip` may still hold (editable, pointing at
this checkout).
"""

from __future__ import annotations

import configparser
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
UV = ROOT / ".tools/bin/uv"
CHANGE = re.compile(r"^ ([-+~]) (\S+?)==(\S+)", re.M)


def env_locks() -> dict[str, str]:
    """Each tox env's lock file, from its deps (or [testenv]'s)."""
    ini = configparser.ConfigParser(interpolation=None)
    ini.read(ROOT / "tox.ini")
    default = ini["testenv"]["deps"]
    locks: dict[str, str] = {}
    for name, section in ini.items():
        if name.startswith("testenv:"):
            deps = section.get("deps", default).strip()
            match = re.fullmatch(r"-r (locks/[a-z0-9-]+\.txt)", deps)
            if not match:
                sys.exit(f"check_envs: [{name}] deps = {deps!r} is not one lock")
            locks[name.removeprefix("testenv:")] = match.group(1)
    return locks


def main() -> int:
    tox_dirs = [Path(arg).resolve() for arg in sys.argv[1:]] or [
        ROOT / ".tox",
        *sorted((ROOT / ".tox").glob("shard-*")),
    ]
    checked, wrong = 0, 0
    for tox_dir in tox_dirs:
        for env, lock in env_locks().items():
            env_dir = tox_dir / env
            python = env_dir / "bin/python"
            if not python.exists():
                continue
            result = subprocess.run(  # noqa: S603 (our own command line)
                [UV, "pip", "sync", "--dry-run", "--python", python, ROOT / lock],
                capture_output=True,
                text=True,
                check=False,
                cwd=ROOT,  # the lock's `-e ./pytest-realstack` is relative to the project root
            )
            output = result.stdout + result.stderr
            changes = [
                f"{sign} {name}=={version}"
                for sign, name, version in CHANGE.findall(output)
                if (sign, name) != ("-", "docstore")
            ]
            checked += 1
            where = env_dir.relative_to(ROOT) if env_dir.is_relative_to(ROOT) else env_dir
            if result.returncode or changes:
                wrong += 1
                print(f"check_envs: {where} is not {lock}: {', '.join(changes) or output}")
                print("    rebuild it: tox -r -e " + env)
            else:
                print(f"check_envs: {where} holds exactly {lock}")
    if not checked:
        sys.exit("check_envs: no tox env is built")
    return 1 if wrong else 0


if __name__ == "__main__":
    sys.exit(main())
