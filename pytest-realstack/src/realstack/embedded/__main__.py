"""`python -m <this package> run|up|down|clean`: the embedded services from the command line.

The only place that reads the environment: it finds the project's [tool.harness] table
from the current directory, resolves the settings once, and passes them on.
"""

from __future__ import annotations

import sys

# Imports live in the functions: a Ctrl-C that lands while they load is caught below.
TYPE_CHECKING = False  # not typing's, for the same reason (type checkers take it as true)
if TYPE_CHECKING:
    import argparse
    from collections.abc import Sequence

EXIT_USAGE = 2
EXIT_INTERRUPTED = 130  # the shell's 128 + SIGINT


def _parser() -> argparse.ArgumentParser:
    import argparse
    from pathlib import Path

    from ..contract import TEST_KEEP_ON_FAILURE

    parser = argparse.ArgumentParser(
        prog=f"python -m {__package__}",
        description="Real PostgreSQL (and S3, if the project uses it) from PyPI wheels, "
        "on free loopback ports, for the tests.",
    )
    parser.add_argument(
        "--project",
        type=Path,
        help="the pyproject.toml holding [tool.harness] (default: the nearest one at or above "
        "the current directory)",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("run", help="start the services, run CMD against them, then clean up")
    run.add_argument(
        "--keep-on-failure",
        action="store_true",
        help="if CMD fails, keep the services up until Ctrl-C "
        f"(also: {TEST_KEEP_ON_FAILURE.name}=1)",
    )
    run.add_argument(
        "--after-ready",
        action="store_true",
        help="start CMD only once the services answer, with all their variables in its "
        "environment (for commands that do not read the ready file, e.g. psql)",
    )
    run.add_argument(
        "--migrated",
        action="store_true",
        help="like --after-ready, and the app's database URL variable names a database of its "
        "own, migrated to head and dropped afterwards (for alembic revision --autogenerate)",
    )
    run.add_argument("cmd", nargs=argparse.REMAINDER, help="-- CMD ARGS...")
    commands.add_parser("up", help="start warm services that outlive this command")
    commands.add_parser("down", help="stop the warm services")
    commands.add_parser("clean", help="remove what killed runs left behind")
    # `up` starts this in a session of its own; not for typing.
    commands.add_parser("supervise", help=argparse.SUPPRESS)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    import os
    from pathlib import Path

    from ..config import embedded_settings
    from ..contract import ContractError
    from ..project import ProjectConfigError, find_pyproject, load_project

    parser = _parser()
    args = parser.parse_args(argv)
    cmd: list[str] = []
    if args.command == "run":
        cmd = args.cmd[1:] if args.cmd[:1] == ["--"] else args.cmd
        if not cmd:
            parser.error("give the command after --, e.g.: run -- pytest")
    try:
        project = load_project(args.project or find_pyproject(Path.cwd()))
        settings = embedded_settings(project, os.environ)
        if args.command == "run":
            from .supervisor import run_command

            keep = args.keep_on_failure or settings.keep_on_failure
            return run_command(
                settings,
                cmd,
                after_ready=args.after_ready,
                migrated=args.migrated,
                keep_on_failure=keep,
            )
        if args.command == "up":
            from .warm import services_up

            return services_up(settings)
        if args.command == "supervise":
            from .warm import supervise

            return supervise(settings, sys.stdout)
        if args.command == "down":
            from .warm import services_down

            return services_down(settings)
        from .leftovers import clean

        return clean(settings, os.environ)
    except (ProjectConfigError, ContractError) as exc:
        print(f"embedded services: {exc}", file=sys.stderr)
        return EXIT_USAGE


if __name__ == "__main__":
    try:
        code = main()
    except KeyboardInterrupt:
        # Ctrl-C while this command was still importing, before it started anything (once
        # servers start, run/up catch it themselves and stop what they started).
        print("embedded services: interrupted before anything was started", file=sys.stderr)
        code = EXIT_INTERRUPTED
    import gc

    gc.freeze()  # the servers are stopped: spare the interpreter's last walk over the heap
    sys.exit(code)
