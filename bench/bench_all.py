"""Every benchmark in one process, on the embedded services: prints two Markdown tables (the
figures, then the targets) and writes bench/results.json. All figures are medians.

Run from the repo root: `.venv/bin/python bench/bench_all.py` (or `tox -e bench`).
BENCH_RUNS (default 5) sets the runs for the start-up figures, BENCH_SUITE_RUNS (default 3)
those of the integration suite, BENCH_ISOLATION_TESTS (default 100) the tests per strategy.
"""

from __future__ import annotations

import asyncio
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench import bench_pytest
from bench.bench_isolation import TESTS, MethodResult, measure_isolation
from bench.bench_upload import UploadResult, measure_upload
from tests.harness.config import EmbeddedSettings, embedded_settings, resolve_config
from tests.harness.embedded.launcher import embedded_services, start_embedded_services
from tests.harness.project import find_pyproject, load_project

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results.json"
RUNS = int(os.environ.get("BENCH_RUNS", "5"))
SUITE_RUNS = int(os.environ.get("BENCH_SUITE_RUNS", "3"))
ISOLATION_KEYS = {
    "savepoint": "isolation_overhead_ms",
    "commit_mode": "commit_mode_overhead_ms",
    "truncate": "truncate_overhead_ms",
    "drop_create": "drop_create_overhead_ms",
    "template_clone": "template_clone_overhead_ms",
}


def machine() -> dict[str, Any]:
    cpu = "unknown"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    return {
        "nproc": os.cpu_count(),
        "cpu": cpu,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "loadavg_at_start": os.getloadavg(),
    }


def start_seconds(settings: EmbeddedSettings, runs: int, *, use_template: bool = True) -> float:
    samples = []
    for _ in range(runs):
        started = time.perf_counter()
        running = start_embedded_services(settings, use_template=use_template, report=None)
        samples.append(time.perf_counter() - started)
        running.stop()
    return statistics.median(samples)


def step(name: str) -> None:
    print(f"bench: {name} ...", file=sys.stderr, flush=True)


def measure() -> tuple[dict[str, float], dict[str, Any]]:
    project = load_project(find_pyproject(ROOT))
    settings = embedded_settings(project, os.environ)
    figures: dict[str, float] = {}
    details: dict[str, Any] = {}
    step(f"guard exit and pytest baseline (median of {RUNS})")
    figures["guard_exit_s"] = bench_pytest.guard_exit_s(RUNS)
    figures["pytest_baseline_s"] = bench_pytest.pytest_baseline_s(RUNS)
    # Diagnostic: how much of the guard's time is plugins that merely happen to be installed.
    details["guard_exit_only_asyncio_plugin_s"] = bench_pytest.guard_exit_s(
        RUNS, only_needed_plugins=True
    )
    step(f"services start, cold and from the template (median of {RUNS})")
    start_embedded_services(settings, report=None).stop()  # builds or warms the template cache
    figures["services_cold_start_s"] = start_seconds(settings, RUNS, use_template=False)
    figures["services_template_start_s"] = start_seconds(settings, RUNS)

    with embedded_services(settings, report=None) as running:
        # Only the launcher's variables: a TEST_DATABASE_URL of yours is not the bench's target.
        config = resolve_config(project, running.env)
        step(f"isolation strategies ({TESTS} tests each)")
        methods: list[MethodResult] = asyncio.run(measure_isolation(config))
        for m in methods:
            figures[ISOLATION_KEYS[m.name]] = m.overhead_ms
        details["isolation"] = {m.name: vars(m) for m in methods}
        step("200 MB upload through uvicorn (one run)")
        # serve() puts uvicorn's log tail into the error if it fails to start.
        upload: UploadResult = asyncio.run(measure_upload(config))
        figures["upload_200mb_peak_rss_mb"] = upload.peak_rss_growth_mb
        details["upload"] = vars(upload)
        step(f"integration suite, serial and -n 2 (median of {SUITE_RUNS} each)")
        for key, extra in (("suite_wall_s", []), ("suite_wall_xdist2_s", ["-n", "2"])):
            wall, codes, failure = bench_pytest.suite_wall_s(SUITE_RUNS, running.env, extra)
            figures[key] = wall
            details[key] = {"exit_codes": codes}
            if failure:
                print(
                    f"bench: {key}: the suite failed (exit codes {codes}):\n{failure}",
                    file=sys.stderr,
                )
    return figures, details


ROWS: list[tuple[str, str, str]] = [
    ("guard_exit_s", "`pytest tests/integration` refused on a SQLite URL (exit 4)", f"{RUNS}"),
    ("pytest_baseline_s", "`pytest --version`, same env", f"{RUNS}"),
    ("services_cold_start_s", "PostgreSQL + SeaweedFS ready, cold initdb", f"{RUNS}"),
    ("services_template_start_s", "PostgreSQL + SeaweedFS ready, cached template", f"{RUNS}"),
    ("isolation_overhead_ms", "SAVEPOINT (default), setup + teardown", f"{TESTS} tests"),
    ("commit_mode_overhead_ms", "real commits + stamped TRUNCATE", f"{TESTS} tests"),
    ("truncate_overhead_ms", "plain session + TRUNCATE ... CASCADE", f"{TESTS} tests"),
    ("drop_create_overhead_ms", "create_all + drop_all", f"{TESTS} tests"),
    ("template_clone_overhead_ms", "pytest-postgresql DatabaseJanitor clone", f"{TESTS} tests"),
    ("suite_wall_s", "`pytest tests/integration -m integration`, serial", f"{SUITE_RUNS}"),
    ("suite_wall_xdist2_s", "`pytest tests/integration -m integration -n 2`", f"{SUITE_RUNS}"),
    ("upload_200mb_peak_rss_mb", "API peak RSS growth, 200 MB upload", "1 run"),
]


def targets(f: dict[str, float]) -> list[tuple[str, str, bool]]:
    ratio = f["template_clone_overhead_ms"] / f["isolation_overhead_ms"]
    guard_delta = f["guard_exit_s"] - f["pytest_baseline_s"]
    return [
        (
            "isolation_overhead_ms ≤ 1.0",
            f"{f['isolation_overhead_ms']:.2f}",
            f["isolation_overhead_ms"] <= 1.0,
        ),
        ("template_clone / isolation ≥ 50", f"{ratio:.0f}x", ratio >= 50),
        ("guard_exit_s - pytest_baseline_s ≤ 0.3", f"{guard_delta:.2f}", guard_delta <= 0.3),
        ("guard_exit_s < 2", f"{f['guard_exit_s']:.2f}", f["guard_exit_s"] < 2),
        (
            "upload_200mb_peak_rss_mb ≤ 50",
            f"{f['upload_200mb_peak_rss_mb']:.1f}",
            f["upload_200mb_peak_rss_mb"] <= 50,
        ),
        (
            "suite_wall_xdist2_s < suite_wall_s",
            f"{f['suite_wall_xdist2_s']:.1f} vs {f['suite_wall_s']:.1f}",
            f["suite_wall_xdist2_s"] < f["suite_wall_s"],
        ),
    ]


def print_tables(figures: dict[str, float], details: dict[str, Any]) -> list[tuple[str, str, bool]]:
    print("| figure | what | median of | value |")
    print("| --- | --- | --- | ---: |")
    for key, what, runs in ROWS:
        codes = details.get(key, {}).get("exit_codes", [])
        failed = f" (suite FAILED, exit codes {codes})" if any(codes) else ""
        print(f"| `{key}` | {what}{failed} | {runs} | {figures[key]:.3f} |")
    bodies = ", ".join(f"{n} {m['body_ms']:.2f}" for n, m in details["isolation"].items())
    print(f"\nTest body alone (median ms, for context): {bodies}.")
    print(
        "Guard exit with only pytest-asyncio auto-loaded (diagnostic, median of "
        f"{RUNS}): {details['guard_exit_only_asyncio_plugin_s']:.3f} s."
    )
    checks = targets(figures)
    print("\n| target | value | result |")
    print("| --- | ---: | --- |")
    for name, value, ok in checks:
        print(f"| {name} | {value} | {'PASS' if ok else 'FAIL'} |")
    return checks


def main() -> int:
    meta: dict[str, Any] = {
        "measured_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "machine": machine(),
    }
    figures, details = measure()
    checks = print_tables(figures, details)
    meta["loadavg_at_end"] = os.getloadavg()
    results = {
        **figures,
        "measured_at": meta["measured_at"],
        "machine": meta["machine"],
        "meta": {"runs": RUNS, "suite_runs": SUITE_RUNS, "isolation_tests": TESTS, **meta},
        "targets": {name: ok for name, _, ok in checks},
        "details": details,
    }
    RESULTS.write_text(json.dumps(results, indent=2, default=str) + "\n")
    print(f"\nwrote {RESULTS.relative_to(ROOT)}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
