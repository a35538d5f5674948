"""Start-up time of the embedded services: median of 5 runs per scenario, in-process.

Run from the repo root: `.venv/bin/python bench/bench_services.py`.
"""

from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.harness.services import start_embedded_services

RUNS = 5
SCENARIOS: dict[str, dict[str, Any]] = {
    "postgres, cold (initdb, no template)": {"s3": False, "use_template": False},
    "postgres, from the cached template": {"s3": False},
    "s3 (seaweedfs)": {"postgres": False},
    "both in parallel (template)": {},
    "both in parallel (cold initdb)": {"use_template": False},
}


def time_start(options: dict[str, Any]) -> tuple[float, float]:
    started = time.perf_counter()
    running = start_embedded_services(report=None, **options)
    ready = time.perf_counter() - started
    started = time.perf_counter()
    running.stop()
    return ready, time.perf_counter() - started


def main() -> None:
    start_embedded_services(report=None).stop()  # warm the template cache and the page cache
    rows = []
    for name, options in SCENARIOS.items():
        samples = [time_start(options) for _ in range(RUNS)]
        ready = statistics.median(s[0] for s in samples)
        stop = statistics.median(s[1] for s in samples)
        rows.append((name, ready * 1000, stop * 1000))
    print(f"| scenario (median of {RUNS}) | ready, ms | stop + cleanup, ms |")
    print("| --- | ---: | ---: |")
    for name, ready_ms, stop_ms in rows:
        print(f"| {name} | {ready_ms:.0f} | {stop_ms:.0f} |")


if __name__ == "__main__":
    main()
