"""Start-up time of the embedded services: median of 5 runs per scenario, in-process.

Run from the repo root: `.venv/bin/python bench/bench_services.py`.
PostgreSQL always starts (the launcher has no S3-only mode); "postgres only" is the project
with `services = ["postgres"]`.
"""

from __future__ import annotations

import os
import statistics
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from realstack import (
    EmbeddedSettings,
    embedded_settings,
    find_pyproject,
    load_project,
    start_embedded_services,
)

ROOT = Path(__file__).resolve().parents[1]
RUNS = 5


@dataclass(frozen=True)
class Scenario:
    name: str
    settings: EmbeddedSettings
    use_cached_cluster: bool = True


def scenarios() -> list[Scenario]:
    project = load_project(find_pyproject(ROOT))
    both = embedded_settings(project, os.environ)
    postgres_only = embedded_settings(
        replace(project, services=frozenset({"postgres"})), os.environ
    )
    return [
        Scenario(
            "postgres only, cold (initdb, no cached cluster)",
            postgres_only,
            use_cached_cluster=False,
        ),
        Scenario("postgres only, from the cached cluster", postgres_only),
        Scenario("both in parallel (cached cluster)", both),
        Scenario("both in parallel (cold initdb)", both, use_cached_cluster=False),
    ]


def time_start(scenario: Scenario) -> tuple[float, float]:
    started = time.perf_counter()
    running = start_embedded_services(
        scenario.settings, use_cached_cluster=scenario.use_cached_cluster, report=None
    )
    ready = time.perf_counter() - started
    started = time.perf_counter()
    running.stop()
    return ready, time.perf_counter() - started


def main() -> None:
    measured = scenarios()
    # Warm the template cache and the page cache.
    start_embedded_services(measured[-1].settings, report=None).stop()
    rows = []
    for scenario in measured:
        samples = [time_start(scenario) for _ in range(RUNS)]
        ready = statistics.median(s[0] for s in samples)
        stop = statistics.median(s[1] for s in samples)
        rows.append((scenario.name, ready * 1000, stop * 1000))
    print(f"| scenario (median of {RUNS}) | ready, ms | stop + cleanup, ms |")
    print("| --- | ---: | ---: |")
    for name, ready_ms, stop_ms in rows:
        print(f"| {name} | {ready_ms:.0f} | {stop_ms:.0f} |")


if __name__ == "__main__":
    main()
