"""Write, or check, the hashed locks in locks/: one per set of [tool.locks] in pyproject.toml.

    python .ci/locks.py [--uv UV] [--upgrade-package NAME ...] [--upgrade]   write them: make lock
    python .ci/locks.py [--uv UV] --check                     fail if one is stale: make lint

Each lock is `uv pip compile --universal --generate-hashes --python-version <the lowest Python of
requires-python>`: every platform, every file's hash, and no index URL (uv writes none unless
asked), so no lock names a host; a lock that would contain "://" is refused. The one unhashed
line is the harness's own distribution, a path source of [tool.uv.sources] installed editable
(`-e ./pytest-realstack`); its dependencies are hashed like every other. locks/all.txt
resolves every extra and every dependency group at once, and every other set is compiled with
it as constraints (-c locks/all.txt), so a package has the same version in every lock.

uv prefers the versions already in a lock: relocking after a changed bound moves only what the
change needs, and --upgrade-package moves one package (and what it drags along) to the newest
version its bounds allow.

uv runs in a temporary copy of pyproject.toml and locks/, with the same relative paths, so the
files it writes there are those `make lock` would write. --check compares their requirement
lines (name, version, markers, hashes; not the header or the `# via` comments) with the
committed locks, and names the fix when they differ.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import re
import shutil
import subprocess
import sys
import tempfile
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LOCKS = "locks"
ALL = "all"
FIX = "fix: make lock"
# What the locks were made from: any change to a bound in pyproject.toml makes them stale, even
# one that the locked versions still satisfy (the next `make lock` may pick other versions).
INPUTS = "inputs.sha256"


def _requirements_of(project: dict[str, object]) -> dict[str, object]:
    return {
        "dependencies": project.get("dependencies", []),
        "optional-dependencies": project.get("optional-dependencies", {}),
        "requires-python": project.get("requires-python", ""),
    }


def inputs_digest(pyproject: dict[str, object]) -> str:
    """What the locks depend on: this pyproject's requirements, groups and sets, and those of
    each path source (the harness's own distribution)."""
    project = pyproject["project"]
    tool = pyproject.get("tool", {})
    assert isinstance(project, dict) and isinstance(tool, dict)
    inputs = {
        **_requirements_of(project),
        "dependency-groups": pyproject.get("dependency-groups", {}),
        "locks": tool.get("locks", {}),
    }
    for folder in path_sources(pyproject):
        source = tomllib.loads((ROOT / folder / "pyproject.toml").read_text())["project"]
        inputs[f"source:{folder}"] = _requirements_of(source)
    return hashlib.sha256(json.dumps(inputs, sort_keys=True).encode()).hexdigest()


def lock_sets(pyproject: dict[str, object]) -> dict[str, list[str]]:
    """Each lock's name and what `uv pip compile` gets as its sources, all.txt first."""
    project = pyproject["project"]
    groups = pyproject.get("dependency-groups", {})
    tool = pyproject.get("tool", {})
    assert isinstance(project, dict) and isinstance(groups, dict) and isinstance(tool, dict)
    sets = {ALL: ["pyproject.toml", "--all-extras", *(f"--group={name}" for name in groups)]}
    for name, spec in tool.get("locks", {}).items():
        if name == ALL or not re.fullmatch(r"[a-z0-9][a-z0-9-]*", name):
            sys.exit(f"locks: [tool.locks.{name}]: a set needs a plain name, and not {ALL!r}")
        unknown = set(spec) - {"project", "extras", "groups"}
        if unknown:
            sys.exit(f"locks: [tool.locks.{name}] has unknown keys {sorted(unknown)}")
        with_project = spec.get("project", True)
        extras = spec.get("extras", [])
        if not with_project and extras:
            sys.exit(f"locks: [tool.locks.{name}] has extras, but project = false")
        for extra in extras:
            if extra not in project.get("optional-dependencies", {}):
                sys.exit(f"locks: [tool.locks.{name}] names extra {extra!r}, not in pyproject.toml")
        for group in spec.get("groups", []):
            if group not in groups:
                sys.exit(f"locks: [tool.locks.{name}] names group {group!r}, not in pyproject.toml")
        sets[name] = [
            *(["pyproject.toml"] if with_project else []),
            *(f"--extra={extra}" for extra in extras),
            *(f"--group={group}" for group in spec.get("groups", [])),
        ]
    return sets


def path_sources(pyproject: dict[str, object]) -> list[str]:
    """The folders of [tool.uv.sources] that are local paths (installed editable: `-e ./dir`)."""
    tool = pyproject.get("tool", {})
    assert isinstance(tool, dict)
    sources = tool.get("uv", {}).get("sources", {})
    return [spec["path"] for spec in sources.values() if isinstance(spec, dict) and "path" in spec]


def python_version(pyproject: dict[str, object]) -> str:
    project = pyproject["project"]
    assert isinstance(project, dict)
    match = re.fullmatch(r">=\s*(\d+\.\d+)", str(project.get("requires-python", "")).strip())
    if not match:
        sys.exit("locks: requires-python must be '>=X.Y' (the locks are compiled for X.Y and up)")
    return match.group(1)


def requirement_lines(text: str) -> list[str]:
    """The lock's entries, one string each (requirement, markers and hashes), comments aside."""
    entries: list[str] = []
    current: list[str] = []
    for raw in text.splitlines():
        line = raw.split(" #", 1)[0].strip() if not raw.lstrip().startswith("#") else ""
        if not line:
            continue
        continued = line.endswith("\\")
        current.append(line.removesuffix("\\").strip())
        if not continued:
            entries.append(" ".join(part for part in current if part))
            current = []
    if current:
        entries.append(" ".join(part for part in current if part))
    return entries


def _pins(entries: list[str]) -> set[str]:
    """The entries without their hashes: `name==version ; markers`."""
    return {entry.split(" --hash", 1)[0] for entry in entries}


def _without_editables(lines: list[str]) -> list[str]:
    """The lock's lines less each `-e` entry and the `# via` comments under it."""
    kept: list[str] = []
    dropping = False
    for line in lines:
        if line.startswith("-e "):
            dropping = True
        elif not (dropping and line.startswith("    #")):
            dropping = False
            kept.append(line)
    return kept


def compile_all(uv: str, work: Path, extra: list[str], upgrade_all: bool) -> None:
    """Compile every lock in `work` (a copy of pyproject.toml and locks/), all.txt first."""
    pyproject = tomllib.loads((work / "pyproject.toml").read_text())
    flags = [
        "--universal",
        "--generate-hashes",
        f"--python-version={python_version(pyproject)}",
        "--custom-compile-command=make lock",
        # The same answer on every machine: no uv.toml of the user's or the project's.
        "--no-config",
        "--quiet",
    ]
    editables = {f"-e {folder}": f"-e ./{folder}" for folder in path_sources(pyproject)}
    for name, sources in lock_sets(pyproject).items():
        target = f"{LOCKS}/{name}.txt"
        constraints = [] if name == ALL else [f"--constraints={LOCKS}/{ALL}.txt"]
        upgrade = ["--upgrade"] if upgrade_all and name == ALL else []
        command = [uv, "pip", "compile", *sources, *constraints, *flags, *extra, *upgrade]
        result = subprocess.run(  # noqa: S603 (our own command line)
            [*command, f"--output-file={target}"],
            cwd=work,
            capture_output=True,
            text=True,
            check=False,
        )
        if result.returncode:
            sys.stderr.write(result.stdout + result.stderr)
            sys.exit(
                f"locks: uv could not compile {target} (above); the bounds in pyproject.toml "
                f"may not fit together: {' '.join(command[1:])}"
            )
        text = (work / target).read_text()
        if "://" in text:
            sys.exit(f"locks: {target} would name a URL (an index or a file); the locks name none")
        # uv writes a path source as `-e dir`; `./dir` can never be read as a package's name.
        # all.txt serves only as the others' constraints, and a constraint must name a package:
        # it keeps the path source's dependencies but not its editable line.
        lines = [editables.get(line, line) for line in text.splitlines()]
        if name == ALL:
            lines = _without_editables(lines)
        (work / target).write_text("\n".join(lines) + "\n")


def check(names: list[str], strays: list[str], locks: Path, fresh: Path, digest: str) -> int:
    """Compare the committed locks with the fresh ones; print what is stale and the fix."""
    stale = 0
    recorded = (locks / INPUTS).read_text().strip() if (locks / INPUTS).is_file() else ""
    if recorded != digest:
        print(
            "the dependencies in pyproject.toml changed since the locks were made "
            f"({LOCKS}/{INPUTS}); {FIX}"
        )
        stale += 1
    for name in names:
        path = locks / f"{name}.txt"
        if not path.is_file():
            print(f"{LOCKS}/{name}.txt is missing; {FIX}")
            stale += 1
            continue
        old = requirement_lines(path.read_text())
        new = requirement_lines((fresh / f"{name}.txt").read_text())
        if old == new:
            continue
        stale += 1
        print(f"{LOCKS}/{name}.txt is out of date with pyproject.toml; {FIX}")
        gone, come = sorted(_pins(old) - _pins(new)), sorted(_pins(new) - _pins(old))
        for line in gone:
            print(f"    - {line}")
        for line in come:
            print(f"    + {line}")
        if not gone and not come:
            print("    (the same versions, other hashes)")
    for stray in strays:
        print(f"{LOCKS}/{stray} belongs to no set of [tool.locks]; {FIX} (removes it)")
        stale += 1
    if stale:
        return 1
    print(f"locks: {len(names)} locks up to date with pyproject.toml ({LOCKS}/)")
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--uv", default="uv", help="the uv to run (default: uv on PATH)")
    parser.add_argument("--check", action="store_true", help="fail if a lock is out of date")
    parser.add_argument(
        "--upgrade-package", action="append", default=[], metavar="NAME", help="upgrade NAME"
    )
    parser.add_argument("--upgrade", action="store_true", help="upgrade every package")
    args = parser.parse_args()
    if args.check and (args.upgrade_package or args.upgrade):
        parser.error("--check upgrades nothing")
    found = shutil.which(args.uv)
    if found is None:
        sys.exit(f"locks: {args.uv} not found")
    uv = str(Path(found).resolve())  # uv runs in a temporary directory
    extra = [f"--upgrade-package={name}" for name in args.upgrade_package]

    locks = ROOT / LOCKS
    with tempfile.TemporaryDirectory(prefix="locks-") as tmp:
        work = Path(tmp)
        shutil.copy2(ROOT / "pyproject.toml", work / "pyproject.toml")
        # Path sources ([tool.uv.sources]: the harness's own distribution) at the same relative
        # place, so uv reads their metadata and writes the same `-e ./<dir>` line.
        for folder in path_sources(tomllib.loads((ROOT / "pyproject.toml").read_text())):
            (work / folder).parent.mkdir(parents=True, exist_ok=True)
            (work / folder).symlink_to(ROOT / folder, target_is_directory=True)
        # The committed locks are uv's preferences: it keeps their versions where it can.
        if locks.is_dir():
            shutil.copytree(locks, work / LOCKS)
        else:
            (work / LOCKS).mkdir()
        compile_all(uv, work, extra, args.upgrade)
        names = list(lock_sets(tomllib.loads((ROOT / "pyproject.toml").read_text())))
        wanted = {f"{name}.txt" for name in names} | {INPUTS}
        digest = inputs_digest(tomllib.loads((ROOT / "pyproject.toml").read_text()))
        strays = sorted(path.name for path in locks.glob("*") if path.name not in wanted)
        if args.check:
            return check(names, strays, locks, work / LOCKS, digest)
        locks.mkdir(exist_ok=True)
        for name in names:
            shutil.copyfile(work / LOCKS / f"{name}.txt", locks / f"{name}.txt")
        for stray in strays:
            (locks / stray).unlink()
            print(f"locks: removed {LOCKS}/{stray} (no set of [tool.locks] names it)")
        (locks / INPUTS).write_text(digest + "\n")
        print(f"locks: wrote {', '.join(f'{LOCKS}/{name}.txt' for name in names)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
