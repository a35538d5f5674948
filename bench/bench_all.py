"""Every benchmark in one process, on the embedded services: prints two Markdown tables (the
figures, then the targets) and writes bench/results.json. All figures are medians.

Run from the repo root: `.venv/bin/python bench/bench_all.py` (or `tox -e bench`, `make bench`).
BENCH_RUNS (default 5) sets the runs for the start-up figures (pytest, imports, services, the
first test, make), BENCH_SUITE_RUNS (default 1) those of the integration suite,
BENCH_ISOLATION_TESTS (default 100) the tests per isolation strategy, BENCH_SETUP_RUNS
(default 10) the per-run setups of each kind, BENCH_OVERHEAD_TESTS (default 200) the empty
tests per fixture variant and BENCH_OVERHEAD_RUNS (default 3) the runs of them.
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

from realstack import (
    EmbeddedSettings,
    embedded_services,
    embedded_settings,
    find_pyproject,
    load_project,
    load_warm_services,
    resolve_config,
    start_embedded_services,
)

from bench import bench_make, bench_pytest
from bench.bench_isolation import TESTS, CheckResult, MethodResult, measure_isolation
from bench.bench_overhead import (
    OVERHEAD_RUNS,
    OVERHEAD_TESTS,
    VARIANTS,
    OverheadResult,
    measure_overhead,
)
from bench.bench_overhead import where_it_goes as overhead_goes_to
from bench.bench_setup import (
    CHAIN_REVISIONS,
    SETUP_RUNS,
    SetupResult,
    measure_chain,
    measure_docstore,
)
from bench.bench_upload import UploadResult, measure_upload

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results.json"
RUNS = int(os.environ.get("BENCH_RUNS", "5"))
# One run of each by default: the app's suite alone takes over a minute per run.
SUITE_RUNS = int(os.environ.get("BENCH_SUITE_RUNS", "1"))
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


def start_seconds(
    settings: EmbeddedSettings, runs: int, *, use_cached_cluster: bool = True
) -> float:
    samples = []
    for _ in range(runs):
        started = time.perf_counter()
        running = start_embedded_services(
            settings, use_cached_cluster=use_cached_cluster, report=None
        )
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
    step(f"guard exit, pytest baseline and the stack's imports (median of {RUNS})")
    figures["guard_exit_s"] = bench_pytest.guard_exit_s(RUNS)
    figures["pytest_baseline_s"] = bench_pytest.pytest_baseline_s(RUNS)
    figures["stack_import_s"] = bench_pytest.stack_import_s(RUNS)
    # Diagnostic: how much of the guard's time is plugins that merely happen to be installed.
    details["guard_exit_only_asyncio_plugin_s"] = bench_pytest.guard_exit_s(
        RUNS, only_needed_plugins=True
    )
    step(f"services start, cold and from the template (median of {RUNS})")
    start_embedded_services(settings, report=None).stop()  # builds or warms the template cache
    figures["services_cold_start_s"] = start_seconds(settings, RUNS, use_cached_cluster=False)
    figures["services_template_start_s"] = start_seconds(settings, RUNS)

    # A cold cluster (initdb), not a copy of the launcher's cached one: it holds no migrated
    # template yet, so the bench times their builds, and it is never saved back into the cache,
    # so the generated chain's template cannot end up in everyone's cached cluster.
    with embedded_services(settings, use_cached_cluster=False, report=None) as running:
        # Only the launcher's variables: a TEST_DATABASE_URL of yours is not the bench's target.
        config = resolve_config(project, running.env)
        step(f"per-run setup, {CHAIN_REVISIONS} generated migrations (median of {SETUP_RUNS})")
        chain: SetupResult = asyncio.run(measure_chain(config.database_url, config.run_id))
        figures["setup_migrate_ms_200"] = chain.migrate_ms
        figures["setup_template_ms_200"] = chain.template_ms
        figures["template_build_ms_200"] = chain.template_build_ms
        details["setup_chain"] = vars(chain)
        step(f"per-run setup, docstore's migrations (median of {SETUP_RUNS})")
        docstore: SetupResult = asyncio.run(measure_docstore(config))
        figures["setup_template_ms_docstore"] = docstore.template_ms
        details["setup_docstore"] = vars(docstore)
        step(f"warm services: pytest {bench_pytest.FIRST_TEST_FILE} (median of {RUNS})")
        first = bench_pytest.first_test(RUNS, running.env)
        figures["first_test_warm_s"] = first.body_s
        details["first_test_warm"] = vars(first)
        step(
            f"empty tests with and without the harness's fixtures ({OVERHEAD_TESTS} each, "
            f"{OVERHEAD_RUNS} runs)"
        )
        overhead: OverheadResult = measure_overhead(running.env)
        figures["harness_per_test_overhead_ms"] = overhead.overhead_ms["client_bucket"]
        details["harness_per_test_overhead"] = vars(overhead)
        step(f"isolation strategies ({TESTS} tests each)")
        methods: list[MethodResult]
        check: CheckResult
        methods, check = asyncio.run(measure_isolation(config))
        for m in methods:
            figures[ISOLATION_KEYS[m.name]] = m.overhead_ms
        details["isolation"] = {m.name: vars(m) for m in methods}
        figures["after_test_check_ms"] = check.check_ms
        figures["after_test_counts_only_ms"] = check.counts_only_ms
        details["after_test_check"] = vars(check)
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
    if load_warm_services(settings) is None:
        step(f"make test-integration with one file, cold (median of {RUNS})")
        cold = bench_make.one_file(RUNS)
        figures["one_file_make_cold_s"] = cold.wall_s
        details["one_file_make_cold"] = vars(cold)
        step(f"make test-integration with one file, warm services (median of {RUNS})")
        with bench_make.warm_services():
            warm = bench_make.one_file(RUNS)
    else:  # yours are up: they stay, and the cold figure is not taken
        step(f"make test-integration with one file, your warm services (median of {RUNS})")
        warm = bench_make.one_file(RUNS)
    figures["one_file_make_s"] = warm.wall_s
    details["one_file_make"] = vars(warm)
    return figures, details


ROWS: list[tuple[str, str, str]] = [
    ("guard_exit_s", "`pytest tests/integration` refused on a SQLite URL (exit 4)", f"{RUNS}"),
    ("pytest_baseline_s", "`pytest --version`, same env", f"{RUNS}"),
    ("stack_import_s", f'`python -c "{bench_pytest.STACK_IMPORT}"`', f"{RUNS}"),
    ("services_cold_start_s", "PostgreSQL + SeaweedFS ready, cold initdb", f"{RUNS}"),
    ("services_template_start_s", "PostgreSQL + SeaweedFS ready, cached template", f"{RUNS}"),
    ("isolation_overhead_ms", "SAVEPOINT (default), setup + teardown", f"{TESTS} tests"),
    ("commit_mode_overhead_ms", "real commits + stamped TRUNCATE", f"{TESTS} tests"),
    ("truncate_overhead_ms", "plain session + TRUNCATE ... CASCADE", f"{TESTS} tests"),
    ("drop_create_overhead_ms", "create_all + drop_all", f"{TESTS} tests"),
    ("template_clone_overhead_ms", "pytest-postgresql DatabaseJanitor clone", f"{TESTS} tests"),
    (
        "after_test_check_ms",
        "after each database test: open transactions, catalogs' and tables' xmin sums",
        f"{TESTS} tests",
    ),
    (
        "after_test_counts_only_ms",
        "the same check on row counts only (before issue 19; missed DDL and UPDATEs)",
        f"{TESTS} tests",
    ),
    ("suite_wall_s", "`pytest tests/integration -m integration`, serial", f"{SUITE_RUNS}"),
    ("suite_wall_xdist2_s", "`pytest tests/integration -m integration -n 2`", f"{SUITE_RUNS}"),
    ("upload_200mb_peak_rss_mb", "API peak RSS growth, 200 MB upload", "1 run"),
    (
        "setup_migrate_ms_200",
        f"per-run setup, {CHAIN_REVISIONS} generated migrations: CREATE DATABASE, connect, "
        "upgrade head",
        f"{SETUP_RUNS}",
    ),
    (
        "setup_template_ms_200",
        "per-run setup, the same chain: CREATE DATABASE ... TEMPLATE (FILE_COPY), connect",
        f"{SETUP_RUNS}",
    ),
    (
        "template_build_ms_200",
        f"building that template once (ensure_template: {CHAIN_REVISIONS} migrations, drift check)",
        "1 run",
    ),
    (
        "setup_template_ms_docstore",
        "per-run setup, docstore's template: CREATE DATABASE ... TEMPLATE, connect",
        f"{SETUP_RUNS}",
    ),
    (
        "first_test_warm_s",
        f"warm services, `pytest {bench_pytest.FIRST_TEST_FILE}` until its first test's body "
        "starts (all its fixtures set up)",
        f"{RUNS}",
    ),
    (
        "harness_per_test_overhead_ms",
        "empty test with `client` + `db_session` + `s3_bucket`, minus one requesting nothing "
        "(setup + call + teardown)",
        f"{OVERHEAD_RUNS} x {OVERHEAD_TESTS} tests",
    ),
    (
        "one_file_make_s",
        f"`make test-integration ARGS={bench_make.ONE_FILE}`, wall, in the inner loop (warm "
        "services: `make services-up` first)",
        f"{RUNS}",
    ),
    (
        "one_file_make_cold_s",
        "the same without warm services (the launcher starts and stops its servers)",
        f"{RUNS}",
    ),
]


def targets(f: dict[str, float]) -> list[tuple[str, str, bool]]:
    ratio = f["template_clone_overhead_ms"] / f["isolation_overhead_ms"]
    guard_delta = f["guard_exit_s"] - f["pytest_baseline_s"]
    setup_ratio = f["setup_migrate_ms_200"] / f["setup_template_ms_200"]
    first_limit = f["pytest_baseline_s"] + f["stack_import_s"] + 0.3
    return [
        (
            "isolation_overhead_ms ≤ 1.0",
            f"{f['isolation_overhead_ms']:.2f}",
            f["isolation_overhead_ms"] <= 1.0,
        ),
        ("template_clone / isolation ≥ 100", f"{ratio:.0f}x", ratio >= 100),
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
        (
            "setup_migrate_ms_200 / setup_template_ms_200 ≥ 20",
            f"{setup_ratio:.0f}x",
            setup_ratio >= 20,
        ),
        (
            "setup_template_ms_200 ≤ 100",
            f"{f['setup_template_ms_200']:.1f}",
            f["setup_template_ms_200"] <= 100,
        ),
        (
            "first_test_warm_s ≤ pytest_baseline_s + stack_import_s + 0.3",
            f"{f['first_test_warm_s']:.2f} vs {first_limit:.2f}",
            f["first_test_warm_s"] <= first_limit,
        ),
        ("one_file_make_s ≤ 2.5", f"{f['one_file_make_s']:.2f}", f["one_file_make_s"] <= 2.5),
        (
            "harness_per_test_overhead_ms ≤ 2",
            f"{f['harness_per_test_overhead_ms']:.2f}",
            f["harness_per_test_overhead_ms"] <= 2,
        ),
    ]


def print_tables(figures: dict[str, float], details: dict[str, Any]) -> list[tuple[str, str, bool]]:
    print("| figure | what | median of | value |")
    print("| --- | --- | --- | ---: |")
    for key, what, runs in ROWS:
        codes = details.get(key, {}).get("exit_codes", [])
        failed = f" (suite FAILED, exit codes {codes})" if any(codes) else ""
        value = (
            f"{figures[key]:.3f}" if key in figures else "not measured (your warm services are up)"
        )
        print(f"| `{key}` | {what}{failed} | {runs} | {value} |")
    bodies = ", ".join(f"{n} {m['body_ms']:.2f}" for n, m in details["isolation"].items())
    print(f"\nTest body alone (median ms, for context): {bodies}.")
    print(
        "Guard exit with only pytest-asyncio auto-loaded (diagnostic, median of "
        f"{RUNS}): {details['guard_exit_only_asyncio_plugin_s']:.3f} s."
    )
    print_context(details)
    checks = targets(figures)
    print("\n| target | value | result |")
    print("| --- | ---: | --- |")
    for name, value, ok in checks:
        print(f"| {name} | {value} | {'PASS' if ok else 'FAIL'} |")
    return checks


def print_context(details: dict[str, Any]) -> None:
    """The figures behind the new rows: splits and the other variants (all medians)."""
    chain, docstore = details["setup_chain"], details["setup_docstore"]
    for r in (chain, docstore):
        print(
            f"Per-run setup, {r['project']} ({r['revisions']} revisions, median of {r['runs']}): "
            f"migrate {r['migrate_ms']:.1f} ms (of which CREATE DATABASE with its stamp and "
            f"settings {r['create_ms']:.1f} ms), template {r['template_ms']:.1f} ms (of which "
            f"the clone with its stamp and settings {r['clone_ms']:.1f} ms, the rest is the "
            f"first connection to it) ({r['migrate_ms'] / r['template_ms']:.0f}x); built once in "
            f"{r['template_build_ms']:.0f} ms; the drift check a run without a template adds: "
            f"{r['drift_check_ms']:.1f} ms."
        )
    first = details["first_test_warm"]
    print(
        f"Warm `pytest {bench_pytest.FIRST_TEST_FILE}` (median of {first['runs']}): with "
        f"`--collect-only` it takes {first['collect_only_s']:.2f} s; the first test is "
        f"announced after {first['announced_s']:.2f} s, its body starts after "
        f"{first['body_s']:.2f} s (its setup phase, the run's database, bucket and app "
        f"included: {first['first_setup_s']:.2f} s), whole command {first['wall_s']:.2f} s. "
        "That setup phase's fixtures taking 5 % or more of it (each includes what it "
        "requests in its body): "
        + ", ".join(
            f"`{n}` ({scope}) {sec * 1000:.0f} ms"
            for n, scope, sec in first["first_setup_fixtures"]
        )
        + "."
    )
    o = details["harness_per_test_overhead"]
    variants = "; ".join(
        f"{' + '.join(fixtures) or 'nothing'} {o['per_test_ms'][v]:.2f} ms "
        f"(+{o['overhead_ms'][v]:.2f})"
        for v, fixtures in VARIANTS.items()
    )
    print(
        f"Empty test, per test (median of {o['runs']} runs' medians of {o['tests']} tests), "
        f"requesting: {variants}."
    )
    print(f"Where it goes (median ms per fixture): {overhead_goes_to(OverheadResult(**o))}.")
    for key, how in (("one_file_make", "warm services"), ("one_file_make_cold", "cold")):
        if key not in details:
            continue
        m = details[key]
        print(
            f"One-file make, {how} (median of {m['runs']}): pytest's header after "
            f"{m['header_s']:.2f} s (make, tox, the launcher, pytest's start-up), its summary "
            f"after {m['summary_s']:.2f} s (collection, the run's setup, the tests), the end "
            f"after {m['wall_s']:.2f} s (pytest's exit, any servers stopped, tox's exit); "
            f"tox's own split: setup {m['tox_setup_s']:.2f} s (the env checked against its "
            f"lock), command {m['tox_cmd_s']:.2f} s."
        )


def main() -> int:
    meta: dict[str, Any] = {
        "measured_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "machine": machine(),
    }
    figures, details = measure()
    checks = print_tables(figures, details)
    meta["loadavg_at_end"] = os.getloadavg()
    m = meta["machine"]
    print(
        f"\nMachine: {m['nproc']} cores ({m['cpu']}), Python {m['python']}; load average "
        f"(1/5/15 min) {'/'.join(f'{x:.1f}' for x in m['loadavg_at_start'])} at the start, "
        f"{'/'.join(f'{x:.1f}' for x in meta['loadavg_at_end'])} at the end."
    )
    results = {
        **figures,
        "measured_at": meta["measured_at"],
        "machine": meta["machine"],
        "meta": {
            "runs": RUNS,
            "suite_runs": SUITE_RUNS,
            "isolation_tests": TESTS,
            "setup_runs": SETUP_RUNS,
            "overhead_tests": OVERHEAD_TESTS,
            "overhead_runs": OVERHEAD_RUNS,
            **meta,
        },
        "targets": {name: ok for name, _, ok in checks},
        "details": details,
    }
    RESULTS.write_text(json.dumps(results, indent=2, default=str) + "\n")
    sys.stdout.flush()  # the tables first, then this line on stderr
    print(f"\nwrote {RESULTS.relative_to(ROOT)}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
