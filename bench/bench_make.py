"""Wall time of `make test-integration` with the tox env already created, and how soon the
first integration test starts: median of 5, measured from outside as a user would see it.

Run from the repo root: `python3 bench/bench_make.py` (or `make bench-services`).
"""

from __future__ import annotations

import os
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RUNS = int(os.environ.get("BENCH_RUNS", "5"))
# pytest -v prints a test's node id when the test starts, before its result.
FIRST_TEST = re.compile(rb"tests/integration/\S+::\S+ ")


def one_run() -> tuple[float, float]:
    # ARGS replaces the default path, so name it: the same tests as a plain `make test-integration`.
    command = ["make", "test-integration", "BACKEND=embedded", "ARGS=-v tests/integration"]
    started = time.perf_counter()
    first_test: float | None = None
    seen = b""
    with subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT) as p:
        assert p.stdout is not None
        while chunk := os.read(p.stdout.fileno(), 4096):
            if first_test is None:
                seen += chunk
                if FIRST_TEST.search(seen):
                    first_test = time.perf_counter() - started
        code = p.wait()
    wall = time.perf_counter() - started
    if code != 0 or first_test is None:
        sys.exit(f"bench_make: `{' '.join(command)}` failed (exit {code}); run it to see why")
    return wall, first_test


def main() -> None:
    one_run()  # creates the tox env and warms caches; not counted
    samples = [one_run() for _ in range(RUNS)]
    print(f"| make test-integration, env created (median of {RUNS}) | seconds |")
    print("| --- | ---: |")
    print(f"| first integration test starts | {statistics.median(s[1] for s in samples):.2f} |")
    print(f"| whole command (wall) | {statistics.median(s[0] for s in samples):.2f} |")


if __name__ == "__main__":
    main()
