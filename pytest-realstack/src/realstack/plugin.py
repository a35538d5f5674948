"""The harness as a pytest plugin: read [tool.harness], resolve and guard the targets once,
before any conftest is imported, then register the fixtures and the app adapter.

Installed, pytest loads it through the `pytest11` entry point named `realstack.plugin`, and
`pytest_load_initial_conftests` guards and redirects the app's database variable before the
first conftest. Copied (or with plugin autoloading disabled), the root conftest loads it with
`pytest_plugins = ["realstack.plugin"]`: that hook then never fires, and `pytest_configure`
does the same work, after refusing a run whose guarded conftests were already imported (they
could have read the app's real database URL); `-p realstack.plugin` makes it early again.
Only cheap imports at module level: the guard must decide before anything heavy loads.
"""

from __future__ import annotations

import atexit
import dataclasses
import gc
import glob
import inspect
import itertools
import os
import re
import signal
import sys
import threading
import warnings
from collections.abc import Callable, Generator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import pytest

from . import contract
from .config import HarnessConfig, resolve_config
from .guard import GuardError
from .project import Project, ProjectConfigError, find_pyproject, load_project
from .sources import find_services
from .stash import ADAPTER, CONFIG, EARLY, PROJECT

if TYPE_CHECKING:
    pass

PLUGIN_NAME = __name__  # what `-p` and `pytest_plugins` name, and the entry point's name
WORKER_INPUT_KEY = "harness_config"
# Why a test may not run (set at collection on an xdist worker, which cannot stop the run).
_REFUSED = pytest.StashKey[str]()
_GUARDED = pytest.StashKey[bool]()  # the test is under a guarded path (decided once, collected)
# The modules of the harness's fixtures this run registered: a fixture of the same name
# defined elsewhere replaces one of them (_warn_replaced_fixtures).
_FIXTURE_MODULES = pytest.StashKey[frozenset[str]]()
MARKERS = (
    "integration: needs the real services (set automatically for the guarded paths)",
    "real_commits: the test commits for real instead of rolling back a SAVEPOINT; "
    "its rows are removed afterwards",
)


class ReplacedFixtureWarning(pytest.PytestWarning):
    """A fixture of the project's own replaces one of the harness's for guarded tests."""


class _Refusal(Exception):
    """Why the run cannot start; str() names the cause and the fix."""

    def __init__(self, message: object, code: pytest.ExitCode = pytest.ExitCode.USAGE_ERROR):
        super().__init__(str(message))
        self.code = code


def _find_project(config: pytest.Config) -> Project | None:
    """The project's table; None when no pyproject.toml at or above the run has one (the
    plugin is installed, but this project does not use it: it stays out of the way)."""
    inipath = config.inipath
    start = inipath if inipath is not None and inipath.name == "pyproject.toml" else None
    try:
        pyproject = find_pyproject(start or config.rootpath)
    except ProjectConfigError:
        return None
    return load_project(pyproject)


def _could_select_integration(markexpr: str) -> bool:
    """Whether `-m markexpr` could select a test marked integration, whatever other markers it
    has: every assignment of the expression's other names is tried (True on doubt)."""
    try:
        from _pytest.mark.expression import Expression
    except ImportError:  # pragma: no cover - private API moved; be safe and guard
        return True
    try:
        expression = Expression.compile(markexpr)
    except Exception:  # pytest reports a malformed expression itself
        return True
    others = sorted(set(re.findall(r"[\w.:+-]+", markexpr)) - {"and", "or", "not", "integration"})
    if len(others) > 12:
        return True
    for values in itertools.product((False, True), repeat=len(others)):
        marks = dict(zip(others, values, strict=True)) | {"integration": True}

        def matcher(name: str, /, **kwargs: object) -> bool:
            return bool(marks.get(name, False))  # noqa: B023 (evaluated before the next one)

        if expression.evaluate(matcher):
            return True
    return False


def selects_guarded(
    project: Project, markexpr: str, args: Sequence[str], invocation_dir: Path
) -> bool:
    """True when a run of these paths, with this -m expression, could collect guarded tests."""
    if markexpr and not _could_select_integration(markexpr):
        return False
    return any(project.is_guarded(Path(invocation_dir, a.split("::", 1)[0])) for a in args)


def _early_args(config: pytest.Config) -> list[str]:
    """The run's paths before pytest decides them (config.args is not set yet): the raw
    arguments, else `testpaths` when run from the rootdir, else the current directory."""
    namespace = config.known_args_namespace
    args = [str(a) for a in (namespace.file_or_dir or [])]
    if args:
        return args
    invocation_dir = config.invocation_params.dir
    if invocation_dir == config.rootpath:
        testpaths = [str(p) for p in config.getini("testpaths")]
        found = [hit for pattern in testpaths for hit in sorted(glob.glob(pattern, recursive=True))]
        if found:
            return found
    return [str(invocation_dir)]


def _check_pytest_settings(config: pytest.Config, project: Project) -> None:
    from .pytest_settings import PytestSettingsError, check_asyncio_settings

    try:
        check_asyncio_settings(config, project.root)
    except PytestSettingsError as exc:
        raise _Refusal(exc) from None


def _import_fixtures() -> None:
    """The heavy imports (SQLAlchemy, Alembic, httpx), while the launcher's servers boot."""
    from . import fixtures  # noqa: F401


def _resolve(
    config: pytest.Config, project: Project, add_cleanup: Callable[[Callable[[], None]], None]
) -> HarnessConfig:
    from .embedded.procs import HarnessSetupError, ServiceStartError
    from .embedded.readiness import ServicesNotReadyError
    from .embedded.warm import StaleServicesError

    env = dict(os.environ)
    try:
        published = find_services(
            project,
            env,
            add_cleanup=add_cleanup,
            before_wait=_import_fixtures,
            tell=lambda line: _tell(config, line),
        )
        return resolve_config(project, env | published, published=published)
    except KeyboardInterrupt:
        raise _Refusal(
            "interrupted while the services started; nothing was left running",
            pytest.ExitCode.INTERRUPTED,
        ) from None
    except (
        GuardError,
        contract.ContractError,
        ServicesNotReadyError,
        StaleServicesError,
        ServiceStartError,
        HarnessSetupError,
    ) as refusal:
        raise _Refusal(refusal) from None


def _choose_per_run(config: pytest.Config, resolved: HarnessConfig) -> HarnessConfig:
    """One look at the server: refuse a database the tests must not use, and decide whether
    each run gets a database or a schema of its own (said once, on the fallback)."""
    from .safety import choose_per_run

    notes: list[str] = []
    try:
        per_run = choose_per_run(resolved, notes)
    except GuardError as refusal:
        raise _Refusal(f"{refusal}{_warm_hint(resolved)}") from None
    for note in notes:
        _tell(config, note)
    return dataclasses.replace(resolved, per_run=per_run)


def _raise_keyboard_interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def _sigterm_like_ctrl_c(config: pytest.Config) -> None:
    """SIGTERM (a CI job cancelled, `kill`) ends a guarded run the way Ctrl-C does: fixtures
    torn down, a paused server resumed, the run's database and bucket dropped. Left alone when
    something else already handles it."""
    if (
        threading.current_thread() is threading.main_thread()
        and signal.getsignal(signal.SIGTERM) == signal.SIG_DFL
    ):
        signal.signal(signal.SIGTERM, _raise_keyboard_interrupt)
        config.add_cleanup(_sigterm_default)


def _sigterm_default() -> None:
    signal.signal(signal.SIGTERM, signal.SIG_DFL)


def _warm_hint(resolved: HarnessConfig) -> str:
    """When the server that refused or did not answer is this checkout's warm one, how to
    replace it (embedded/warm.py); "" otherwise."""
    from urllib.parse import urlsplit

    from .config import embedded_settings
    from .embedded.warm import warm_hint

    try:
        settings = embedded_settings(resolved.project, os.environ)
        return warm_hint(settings, urlsplit(resolved.database_url).port)
    except (contract.ContractError, ValueError):
        return ""


def _tell(config: pytest.Config, line: str) -> None:
    """Write a line for the person running the tests, past pytest's capture: in the early hook,
    what is captured would only show in the first collector's report, and only if it failed."""
    capture = config.pluginmanager.getplugin("capturemanager")
    if capture is None:
        sys.stderr.write(line + "\n")
        return
    with capture.global_and_fixture_disabled():
        sys.stderr.write(line + "\n")


def _drop_templates_if_asked(config: pytest.Config, resolved: HarnessConfig) -> None:
    """TEST_REBUILD_TEMPLATE=1: drop the project's templates before any test, here where the
    run resolves (an xdist worker never does), so the run's first build is afresh and every
    worker clones that one. A run on schemas has no template: each one migrates its own."""
    if not resolved.rebuild_template or resolved.per_run != "database":
        return
    import asyncio

    from sqlalchemy.exc import DBAPIError

    from .migrations import MigrationError
    from .templates import drop_project_templates, template_prefix

    variable, project = contract.TEST_REBUILD_TEMPLATE.name, resolved.project
    try:
        dropped = asyncio.run(
            drop_project_templates(
                resolved.database_url, project, wait_s=resolved.services_timeout_s
            )
        )
    except MigrationError as exc:  # another run's build outlasted the wait: names the fix
        raise _Refusal(f"{variable}=1: {exc}") from None
    except (DBAPIError, OSError) as exc:
        raise _Refusal(
            f"{variable}=1: the migrated templates of {project.name} could not be dropped: {exc}"
            f"\n  fix:  drop them by hand as their owner (their names start with "
            f"{template_prefix(project)}), or unset {variable}"
        ) from None
    _tell(
        config,
        f"harness: {variable}=1: dropped {len(dropped)} migrated template(s) of "
        f"{project.name}{': ' if dropped else ''}{', '.join(dropped)}; this run builds its own",
    )


def _resolve_guarded(config: pytest.Config, project: Project) -> None:
    """Resolve, guard and look at the server once, then point the app's own database variable
    at the guarded test database: an app that reads its URL at import finds it there, never
    yours. Servers started here stop with the run, or at once if this fails."""
    _sigterm_like_ctrl_c(config)
    cleanups: list[Callable[[], None]] = []
    # What follows imports the app's stack: ~200k objects that live as long as the run. The
    # collector would walk that growing heap again and again meanwhile, for garbage that
    # imports hardly make (importing the same modules alone: 1.35 s with it, 1.01 s without;
    # inside pytest, where much is imported before, 0.01-0.1 s). It runs again afterwards.
    gc.disable()
    try:
        resolved = _choose_per_run(config, _resolve(config, project, cleanups.append))
        _drop_templates_if_asked(config, resolved)
    except BaseException:
        for cleanup in reversed(cleanups):
            cleanup()
        raise
    finally:
        gc.enable()
    for cleanup in cleanups:
        config.add_cleanup(cleanup)
    config.stash[CONFIG] = resolved
    os.environ[project.app_database_url_variable] = resolved.database_url


@pytest.hookimpl(tryfirst=True)
def pytest_load_initial_conftests(early_config: pytest.Config) -> None:
    """Installed (entry point or `-p`): guard and redirect before any conftest is imported.

    An xdist worker resolves nothing (it takes the controller's result in pytest_configure;
    its environment already holds the redirect); --help and --version do nothing here."""
    config = early_config
    namespace = config.known_args_namespace
    if os.environ.get("PYTEST_XDIST_WORKER") or namespace.help or namespace.version:
        return
    config.stash[EARLY] = True
    try:
        project = _find_project(config)
        if project is None:
            return
        config.stash[PROJECT] = project
        args = _early_args(config)
        if not selects_guarded(
            project, namespace.markexpr or "", args, config.invocation_params.dir
        ):
            return
        _check_pytest_settings(config, project)
        _resolve_guarded(config, project)
    except ProjectConfigError as exc:
        raise pytest.UsageError(str(exc)) from None
    except _Refusal as refusal:
        if refusal.code == pytest.ExitCode.INTERRUPTED:
            sys.stderr.write(f"{refusal}\n")
            raise SystemExit(int(refusal.code)) from None
        raise pytest.UsageError(str(refusal)) from None


class _XdistController:
    """Hands the controller's resolved configuration to each worker: they never resolve."""

    def __init__(self, resolved: HarnessConfig) -> None:
        self.resolved = resolved

    def pytest_configure_node(self, node: Any) -> None:
        node.workerinput[WORKER_INPUT_KEY] = self.resolved.to_json()


def _register_fixtures(config: pytest.Config, project: Project) -> None:
    """Each of the project's services' fixtures (services/), fault injection, and the app's
    adapter, whose own fixtures become the app's tests' too."""
    import importlib

    from . import faults
    from .adapter import AdapterError, load_adapter
    from .services import kinds_of

    modules = [faults]
    for kind in kinds_of(project):
        module = importlib.import_module(kind.fixtures)
        config.pluginmanager.register(module, f"harness-{kind.name}-fixtures")
        modules.append(module)
    config.pluginmanager.register(faults, "harness-faults")
    config.stash[_FIXTURE_MODULES] = frozenset(module.__name__ for module in modules)
    try:
        adapter = load_adapter(project)
    except AdapterError as exc:
        raise _Refusal(exc) from None
    config.stash[ADAPTER] = adapter
    config.pluginmanager.register(adapter.module, "harness-app-adapter")


def _skip_the_final_collection() -> None:
    """At exit, after pytest's own last collection (which reports unraisable exceptions): the
    app stack leaves ~200k objects, and the interpreter's shutdown would walk them all once
    more (0.35 s of every run, measured here). gc.freeze() takes them out of that walk;
    Python never promised __del__ at exit, and what pytest wrote is flushed and closed."""
    gc.freeze()


def _conftests_imported_early(config: pytest.Config, project: Project) -> list[str]:
    """The guarded paths' conftest modules that pytest imported before this plugin could
    redirect the app's database variable (copy mode, or autoloading disabled)."""
    found = []
    for plugin in config.pluginmanager.get_plugins():
        path = getattr(plugin, "__file__", None)
        if path and Path(path).name == "conftest.py" and _inside_guarded(project, Path(path)):
            found.append(str(path))
    return sorted(found)


def _inside_guarded(project: Project, path: Path) -> bool:
    path = path.resolve()
    return any(path == guarded or guarded in path.parents for guarded in project.guarded_paths)


def _refuse_conftests_imported_early(config: pytest.Config, project: Project) -> None:
    from .pytest_settings import project_settings_table

    early = _conftests_imported_early(config, project)
    if early:
        raise _Refusal(
            "the harness was loaded after these conftests of the guarded paths were imported: "
            + ", ".join(early)
            + f"\n  They could have read {project.app_database_url_variable} (your real database) "
            "before the harness pointed it at the test database, so no test runs.\n"
            f"  fix:  load the harness before any conftest: install pytest-realstack (its "
            f"entry point does), or add `-p {PLUGIN_NAME}` to addopts in "
            f"{project_settings_table(config, project.root).table} (copy mode, or "
            "PYTEST_DISABLE_PLUGIN_AUTOLOAD=1)"
        )


def pytest_configure(config: pytest.Config) -> None:
    for line in MARKERS:
        config.addinivalue_line("markers", line)
    try:
        _configure(config)
    except ProjectConfigError as exc:
        pytest.exit(str(exc), returncode=pytest.ExitCode.USAGE_ERROR)
    except _Refusal as refusal:
        pytest.exit(str(refusal), returncode=refusal.code)


def _requested_explicitly(config: pytest.Config) -> bool:
    """True when a conftest's `pytest_plugins` or a `-p` names this plugin (not only the entry
    point, which loads it in every run of the environment, harness project or not)."""
    if PLUGIN_NAME in (config.known_args_namespace.plugins or []):
        return True
    return any(
        PLUGIN_NAME in (getattr(plugin, "pytest_plugins", None) or ())
        for plugin in config.pluginmanager.get_plugins()
        if str(getattr(plugin, "__file__", None) or "").endswith("conftest.py")
    )


def _configure(config: pytest.Config) -> None:
    workerinput = getattr(config, "workerinput", None)
    project = config.stash.get(PROJECT, None) or _find_project(config)
    if project is None:
        if _requested_explicitly(config):
            find_pyproject(config.rootpath)  # raises, naming the table to add
        return
    config.stash[PROJECT] = project
    if CONFIG not in config.stash:
        if workerinput is not None:
            if WORKER_INPUT_KEY not in workerinput:
                return  # the controller's run selects no guarded path
            from_controller = HarnessConfig.from_json(project, workerinput[WORKER_INPUT_KEY])
            config.stash[CONFIG] = from_controller
            os.environ[project.app_database_url_variable] = from_controller.database_url
        elif not config.stash.get(EARLY, False):
            # Loaded too late for the early hook: copy mode, or plugin autoloading disabled.
            if config.option.help or config.option.version:
                return
            markexpr = config.getoption("markexpr", "") or ""
            if not selects_guarded(project, markexpr, config.args, config.invocation_params.dir):
                return
            _refuse_conftests_imported_early(config, project)
            _check_pytest_settings(config, project)
            _resolve_guarded(config, project)
    resolved = config.stash.get(CONFIG, None)
    if resolved is None:
        return
    _sigterm_like_ctrl_c(config)
    if workerinput is None and config.pluginmanager.hasplugin("xdist"):
        config.pluginmanager.register(_XdistController(resolved), "harness-xdist")
    atexit.register(_skip_the_final_collection)
    gc.disable()
    try:
        _register_fixtures(config, project)
    finally:
        gc.enable()


def _add_after_test_checks(item: pytest.Item) -> None:
    """Give a test that uses the run's database or bucket its after-test checks, first in its
    fixtures so they are set up before and torn down after all the others (fixtures.py,
    _after_db_test; s3_fixtures.py, _after_s3_test). Tests that use neither pay nothing."""
    names: list[str] | None = getattr(item, "fixturenames", None)
    if names is None:
        return
    if "_run_store" in names:
        after = "_after_db_test"
    elif "_run_bucket" in names:
        after = "_after_s3_test"
    else:
        return
    if names[:1] != [after]:  # parametrized tests share one list
        if after in names:
            names.remove(after)
        names.insert(0, after)


def pytest_itemcollected(item: pytest.Item) -> None:
    """A guarded test is marked integration as it is collected, before `-m` selects: so
    `-m "not integration"` deselects it even in a run that resolved no services."""
    project = item.config.stash.get(PROJECT, None)
    item.stash[_GUARDED] = project is not None and project.is_guarded(item.path)
    if item.stash[_GUARDED]:
        item.add_marker(pytest.mark.integration)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    project = config.stash.get(PROJECT, None)
    resolved = config.stash.get(CONFIG, None)
    if project is None or resolved is None:
        return
    from .pytest_settings import anyio_refusal, tests_for_anyio_runner

    guarded = [item for item in items if item.stash.get(_GUARDED, False)]
    marked = tests_for_anyio_runner(config, guarded)
    if marked:
        refusal = anyio_refusal(config, project.root, marked)
        if getattr(config, "workerinput", None) is None:
            pytest.exit(refusal, returncode=pytest.ExitCode.USAGE_ERROR)
        for item in marked:  # an xdist worker that exits crashes: each such test fails instead
            item.stash[_REFUSED] = refusal
    for item in items:
        _add_after_test_checks(item)
        if item.stash.get(_GUARDED, False) and item.get_closest_marker("timeout") is None:
            # pytest-timeout's signal method fails the test where it hangs and lets the
            # teardown (and the rest of the run) go on; its thread method would end the run.
            item.add_marker(pytest.mark.timeout(resolved.test_timeout_s, method="signal"))
    _warn_replaced_fixtures(config, guarded)


def _warn_replaced_fixtures(config: pytest.Config, guarded: list[pytest.Item]) -> None:
    """Warn once per run about each fixture of the project's (a conftest's, a test module's, the
    adapter's) that replaces one of the harness's for guarded tests, e.g. an old conftest's
    `engine` on its own database. A warning, not a refusal: a team may override `client` on
    purpose. One that asks for the harness's (`def client(client)`) extends it: not said.
    Each winning definition is judged once, however many tests share it."""
    harness = config.stash.get(_FIXTURE_MODULES, frozenset())
    judged: set[object] = set()
    for item in guarded:
        info = getattr(item, "_fixtureinfo", None)  # pytest's own view of the test's fixtures
        for name, definitions in getattr(info, "name2fixturedefs", {}).items():
            if not definitions or definitions[-1] in judged or name.startswith("_"):
                continue
            winner = definitions[-1]  # the closest definition: the one the test gets
            judged.add(winner)
            theirs = [d for d in definitions if getattr(d.func, "__module__", None) in harness]
            if not theirs or theirs[-1] is winner or name in winner.argnames:
                continue
            where, filename, lineno = _defined_at(config, winner.func)
            gives = _first_sentence(inspect.getdoc(theirs[-1].func) or "")
            warnings.warn_explicit(
                ReplacedFixtureWarning(
                    f"the fixture {name!r} defined at {where} replaces the harness's own "
                    f"{name} in guarded tests (e.g. {item.nodeid}): they get yours, not the "
                    "harness's.\n"
                    "  fix: delete it, or rename it if you meant a fixture of your own; the "
                    f"harness's {name} gives {gives or 'what the README says of it'}"
                ),
                category=ReplacedFixtureWarning,
                filename=filename,
                lineno=lineno,
            )


def _defined_at(config: pytest.Config, func: Callable[..., Any]) -> tuple[str, str, int]:
    """Where a fixture's function is defined: "path:line" (relative to the rootdir when under
    it), and the file and line apart."""
    func = inspect.unwrap(func)
    try:
        filename = inspect.getsourcefile(func) or inspect.getfile(func)
        lineno = func.__code__.co_firstlineno
    except (TypeError, AttributeError):
        return repr(func), "<unknown>", 0
    path = Path(filename)
    shown = path.relative_to(config.rootpath) if path.is_relative_to(config.rootpath) else path
    return f"{shown}:{lineno}", filename, lineno


def _first_sentence(doc: str) -> str:
    """A docstring's first sentence, to follow "gives": lowercased, without the stop, and
    without what it says of the harness's own files ("(fixtures.py, ...)")."""
    sentence = doc.split("\n\n", 1)[0].replace("\n", " ").split(". ", 1)[0].rstrip(".")
    sentence = re.sub(r"\s*\([^()]*\.py\b[^()]*\)", "", sentence)
    if sentence[1:2].islower():
        sentence = sentence[0].lower() + sentence[1:]
    return sentence


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    refusal = item.stash.get(_REFUSED, None)
    if refusal is not None:
        pytest.fail(refusal, pytrace=False)


def pytest_collection_finish(session: pytest.Session) -> None:
    """Every module the run needs is imported by now: ~200k objects (the app stack, the
    tests) that live until the end. gc.freeze() moves them out of the collector's way, so
    Python's full collections during the run, and pytest's last one at the end, walk only
    what the tests create (0.1 s per full collection here). Garbage the tests make is still
    collected, and still reported by pytest's unraisable-exception check."""
    if CONFIG in session.config.stash:
        gc.freeze()


def _where_async_tests_hang(excinfo: pytest.ExceptionInfo[BaseException]) -> str:
    """The awaits the event loop's tasks were stuck in when pytest-timeout fired: for an async
    test its traceback ends in the loop's selector, not in the test."""
    import asyncio
    import traceback

    loops = {
        id(loop): loop
        for frame, _ in traceback.walk_tb(excinfo.tb)
        if isinstance(loop := frame.f_locals.get("self"), asyncio.AbstractEventLoop)
    }
    stacks = []
    for loop in loops.values():
        for task in asyncio.all_tasks(loop):
            frames, awaited = [], cast(object, task.get_coro())
            while (frame := getattr(awaited, "cr_frame", None)) is not None:
                frames.append((frame, frame.f_lineno))
                awaited = getattr(awaited, "cr_await", None)
            stacks.append("".join(traceback.StackSummary.extract(frames).format()))
    return "\n".join(stacks)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    """A lock wait that gave up gets an explanation in the test's report: why, and the fix;
    an async test stopped by pytest-timeout, the await where it hung."""
    report = yield
    if call.excinfo is not None and CONFIG in item.config.stash:
        from .janitor import TEST_LOCK_TIMEOUT
        from .leaks import is_lock_timeout, lock_timeout_explanation

        if is_lock_timeout(call.excinfo.value):
            report.sections.append(
                ("harness: lock timeout", lock_timeout_explanation(TEST_LOCK_TIMEOUT))
            )
        if str(call.excinfo.value).startswith("Timeout (>"):
            where = _where_async_tests_hang(call.excinfo)
            if where:
                report.sections.append(("harness: where the test hung", where))
        if report.failed and not item.session.shouldstop:
            gone = _services_gone(item.config.stash[CONFIG], call.excinfo.value)
            if gone:
                item.session.shouldstop = gone
                # The cause is the service, not the test: its last error, not the trace.
                error = call.excinfo.value
                report.longrepr = f"{type(error).__name__}: {str(error).splitlines()[0][:300]}"
    return report


def _services_gone(resolved: HarnessConfig, error: BaseException) -> str:
    """When a test failed on a connection and a service of the run no longer accepts any
    (stopped by `make services-down`, crashed, killed): one line that ends the run, instead of
    the same failure for every test after it. "" otherwise."""
    from .services import endpoints_down

    seen: set[int] = set()
    connection_error = False
    current: BaseException | None = error
    while current is not None and id(current) not in seen and not connection_error:
        seen.add(id(current))
        module = type(current).__module__
        connection_error = isinstance(current, OSError) or module.startswith(_CLIENT_MODULES)
        current = current.__cause__ or current.__context__
    down = endpoints_down(resolved) if connection_error else []
    if not down:
        return ""
    return (
        f"harness: {' and '.join(down)} stopped answering during the run: the warm services "
        "were stopped (their `down`), or a server crashed or was killed. The run stops here "
        "rather than fail every test after it. fix: start the services again (or let the run "
        "start its own) and rerun"
    )


# Where a lost connection surfaces, besides OSError.
_CLIENT_MODULES = ("asyncpg", "sqlalchemy", "botocore", "urllib3", "httpx", "httpcore")
