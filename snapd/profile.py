"""Start-up profiling: where the seconds before the first test go.

Two recorders, inert until started, so a snapshot can use them while it builds:

- :class:`ImportRecorder` times every module load. It wraps importlib's ``_find_and_load``,
  the function CPython calls for each import of a module not yet in ``sys.modules`` (the span
  ``-X importtime`` measures), so ``import x``, ``from x import y`` and
  ``importlib.import_module`` are all seen, pytest's assertion-rewriting loader included.
  Each load gets its parent load, the module whose code asked for it, and its file.
- :class:`Profiler` adds phase marks and a pytest plugin that times
  ``pytest_load_initial_conftests`` (conftests), ``pytest_collection`` and every fixture's
  setup, and turns it all into one dict, the ``profile`` object of ``docs/stats.md``.

``python -m snapd.profile --out FILE [--origin T] [--top N] -- PYTEST_ARGS`` is one
instrumented cold start, what ``snapd stats --cold`` runs: pytest's configuration, conftests
and collection of ``PYTEST_ARGS``, then the session-scoped fixtures the collected tests use,
set up as the session snapshot sets them up; no test runs. That is the work every cold
``pytest ARGS`` does before its first test, and the work snapd's session snapshot saves.

Example (a session snapshot's build)::

    profiler = Profiler(rootdir="/src/app")
    profiler.start()
    pytest.main(["-qq"], plugins=[snapshot_plugin, profiler.plugin()])
    ...  # set up session fixtures
    profiler.finish()  # marks "fixtures", stops recording, measures memory
    profiler.result()["phases"]
"""

from __future__ import annotations

import _thread
import os
import sys
import time
from dataclasses import dataclass, field
from typing import Any

# Phase names, in the order a pytest start-up goes through them.
INTERPRETER = "interpreter"  # process start until the profiler starts (python, site)
PLUGINS = "plugins"  # importing pytest, loading plugins, reading the config files
CONFTEST = "conftest"  # pytest_load_initial_conftests: the initial conftest.py files
CONFIGURE = "configure"  # option parsing, pytest_configure, pytest_sessionstart
COLLECTION = "collection"  # pytest_collection: test modules imported, items made
FIXTURES = "fixtures"  # session-scoped fixtures of the collected tests set up
ERROR = "error"  # pytest gave up before the fixtures (usage or collection error)

KINDS = ("project", "third_party", "stdlib")
# Frames of the import machinery itself: the importer is the first frame outside them.
_MACHINERY = ("importlib", "_frozen_importlib")
# The arguments the session snapshot runs pytest with: output off, quiet.
COLD_ARGS = ("-s", "-qq")


@dataclass
class ImportEvent:
    """One module load: ``start``/``end`` are ``time.monotonic()`` values."""

    name: str
    parent: int  # index of the load this one happened inside, -1 at top level
    depth: int
    start: float
    importer: str  # the module whose code asked for it
    end: float = 0.0
    path: str | None = None  # the module's file (or a namespace package's first folder)
    failed: bool = False


class ImportRecorder:
    """Times module loads between :meth:`start` and :meth:`stop`, on the starting thread only.

    Example:
        >>> recorder = ImportRecorder()
        >>> recorder.start()
        >>> import wave  # doctest: +SKIP
        >>> recorder.stop()
        >>> [e.name for e in recorder.events]  # doctest: +SKIP
        ['wave', 'audioop', ...]
    """

    def __init__(self) -> None:
        self.events: list[ImportEvent] = []
        self._stack: list[int] = []
        self._owner = 0
        self._active = False
        self._original: Any = None
        self._hook: Any = None

    def start(self) -> None:
        """Begin recording: wrap ``_find_and_load`` (restored by :meth:`stop`)."""
        bootstrap = sys.modules["_frozen_importlib"]
        if self._hook is None:
            self._original = bootstrap._find_and_load
            self._hook = self._load
            # CPython looks the function up on this module for every import: swapping it is
            # enough, and needs no meta-path finder that pytest's own finder could shadow.
            # (setattr: typeshed's ModuleType does not declare the attribute.)
            setattr(bootstrap, "_find_and_load", self._hook)  # noqa: B010
        self._owner = _thread.get_ident()
        self._active = True

    def stop(self) -> None:
        """Stop recording; unwrap unless another tool wrapped on top of us since."""
        self._active = False
        bootstrap = sys.modules["_frozen_importlib"]
        if self._hook is not None and bootstrap.__dict__.get("_find_and_load") is self._hook:
            setattr(bootstrap, "_find_and_load", self._original)  # noqa: B010
            self._hook = None

    def _load(self, name: str, import_: Any) -> Any:
        if not self._active or name in sys.modules or _thread.get_ident() != self._owner:
            return self._original(name, import_)
        parent = self._stack[-1] if self._stack else -1
        event = ImportEvent(name, parent, len(self._stack), time.monotonic(), _importer())
        self._stack.append(len(self.events))
        self.events.append(event)
        try:
            module = self._original(name, import_)
        except BaseException:
            event.failed = True
            raise
        finally:
            event.end = time.monotonic()
            self._stack.pop()
        event.path = _module_path(module)
        return module


def _importer() -> str:
    """The module whose code is importing: the first frame outside the import machinery."""
    frame = sys._getframe(2)  # 0 is us, 1 is the wrapper
    while frame is not None:
        name = str(frame.f_globals.get("__name__", ""))
        # A parent package's load runs inside its submodule's, under our wrapper's frame.
        if not name.startswith(_MACHINERY) and frame.f_code is not _WRAPPER_CODE:
            return name
        frame = frame.f_back  # type: ignore[assignment]
    return ""


_WRAPPER_CODE = ImportRecorder._load.__code__


def _module_path(module: Any) -> str | None:
    path = getattr(module, "__file__", None)
    if isinstance(path, str):
        return path
    folders = list(getattr(module, "__path__", None) or [])  # a namespace package
    return str(folders[0]) if folders else None


def classify(path: str | None, rootdir: str | None) -> str:
    """``project``, ``third_party`` or ``stdlib`` for a module file.

    Installed packages count as third-party even inside the project (a ``.venv`` there).

    Example:
        >>> classify("/src/app/.venv/lib/python3.11/site-packages/six.py", "/src/app")
        'third_party'
        >>> classify("/src/app/app/models.py", "/src/app")
        'project'
        >>> classify(None, "/src/app")  # built-in and frozen modules
        'stdlib'
    """
    if not path:
        return "stdlib"
    path = os.path.abspath(path)
    parts = path.split(os.sep)
    if "site-packages" in parts or "dist-packages" in parts:
        return "third_party"
    if path.startswith(_stdlib_dirs()):
        return "stdlib"
    if rootdir and path.startswith(os.path.join(os.path.abspath(rootdir), "")):
        return "project"
    return "third_party"


_STDLIB: tuple[str, ...] = ()


def _stdlib_dirs() -> tuple[str, ...]:
    global _STDLIB
    if not _STDLIB:  # worked out once: classify runs for each of thousands of modules
        import sysconfig

        paths = sysconfig.get_paths()
        keys = ("stdlib", "platstdlib")
        _STDLIB = tuple(os.path.join(paths[k], "") for k in keys if paths.get(k))
    return _STDLIB


@dataclass
class FixtureTiming:
    """One fixture's setup (``pytest_fixture_setup``), in ``time.monotonic()`` values."""

    name: str
    scope: str
    location: str
    start: float
    end: float = 0.0
    error: str | None = None


@dataclass
class Profiler:
    """Imports, phases and fixtures of one pytest start-up, as one dict.

    ``origin`` is the moment the start-up began (``time.monotonic()``, comparable across
    processes on Linux); by default, :meth:`start`.
    """

    rootdir: str | None = None
    origin: float | None = None
    imports: ImportRecorder = field(default_factory=ImportRecorder)
    marks: list[tuple[str, float]] = field(default_factory=list)
    fixtures: list[FixtureTiming] = field(default_factory=list)
    failed_fixtures: list[dict[str, str]] = field(default_factory=list)
    tests_collected: int | None = None
    memory: dict[str, int | None] | None = None
    pytest_version: str | None = None
    finished: bool = False

    def start(self) -> None:
        """Start recording imports; the first phase begins at ``origin``."""
        if self.origin is None:
            self.origin = time.monotonic()
        self.imports.start()

    def stop(self) -> None:
        """Stop recording imports (phase marks and fixture timings stay)."""
        self.imports.stop()

    def mark(self, phase: str) -> None:
        """End the phase called ``phase`` now; the next one begins."""
        self.marks.append((phase, time.monotonic()))

    def finish(self, phase: str = FIXTURES, measure: bool = True) -> None:
        """End the last phase, stop recording and, with ``measure``, take this process's
        memory (that imports psutil: a snapshot measured from outside can skip it).
        Idempotent."""
        if self.finished:
            return
        self.finished = True
        self.mark(phase)
        self.stop()
        if measure:
            self.memory = memory_of(os.getpid())

    def plugin(self, prewarm: bool = False) -> object:
        """The pytest plugin that marks phases and times fixtures.

        With ``prewarm``, its ``pytest_runtestloop`` sets up the collected tests' session
        fixtures and ends the run instead of running tests (what ``--cold`` measures).
        """
        plain, cold = _plugin_classes()
        return (cold if prewarm else plain)(self)

    def result(self, top: int = 15) -> dict[str, Any]:
        """Everything recorded, as the ``profile`` object of the stats schema (docs/stats.md)."""
        origin = self.origin if self.origin is not None else time.monotonic()
        end = self.marks[-1][1] if self.marks else time.monotonic()
        events = _summarise(self.imports.events, self.rootdir)
        return {
            "python": ".".join(map(str, sys.version_info[:3])),
            "pytest": self.pytest_version,
            "rootdir": self.rootdir,
            "total_seconds": _round(end - origin),
            "phases": _phases(self.marks, origin, events),
            "imports": _imports(events, origin, top),
            "fixtures": [_fixture(f, origin) for f in self.fixtures],
            "tests_collected": self.tests_collected,
            "failed_fixtures": list(self.failed_fixtures),
            "memory": self.memory,
            "teardown_seconds": None,
        }


@dataclass
class _Summary:
    """An import event with its self time and kind worked out."""

    event: ImportEvent
    cumulative: float
    self_time: float
    kind: str


def _summarise(events: list[ImportEvent], rootdir: str | None) -> list[_Summary]:
    children = [0.0] * len(events)
    for event in events:
        if event.parent >= 0:
            children[event.parent] += event.end - event.start
    kinds = _kinds(events, rootdir)
    return [
        _Summary(e, e.end - e.start, max(0.0, e.end - e.start - children[i]), kinds[i])
        for i, e in enumerate(events)
    ]


def _kinds(events: list[ImportEvent], rootdir: str | None) -> list[str]:
    # A failed import has no file: it takes its top-level package's kind, if that loaded.
    by_name = {e.name: classify(e.path, rootdir) for e in events if not e.failed}
    return [
        by_name.get(e.name) or by_name.get(e.name.split(".")[0]) or "third_party" for e in events
    ]


def _round(seconds: float) -> float:
    return round(max(0.0, seconds), 6)


def _by_kind(summaries: list[_Summary]) -> dict[str, float]:
    totals = dict.fromkeys(KINDS, 0.0)
    for s in summaries:
        totals[s.kind] += s.self_time
    return {k: _round(v) for k, v in totals.items()}


def _phases(
    marks: list[tuple[str, float]], origin: float, events: list[_Summary]
) -> list[dict[str, Any]]:
    """Consecutive phases between marks, each with the import time spent inside it."""
    phases = []
    begin = origin
    for name, end in marks:
        inside = [s for s in events if begin <= s.event.start < end]
        phases.append(
            {
                "name": name,
                "start": _round(begin - origin),
                "seconds": _round(end - begin),
                "imports": _by_kind(inside),
            }
        )
        begin = end
    return phases


def _imports(events: list[_Summary], origin: float, top: int) -> dict[str, Any]:
    slowest = sorted(events, key=lambda s: s.self_time, reverse=True)[:top]
    return {
        # Distinct names: `import a.b` whose package imports a.b itself loads a.b inside an
        # event for a.b, as -X importtime also shows.
        "count": len({s.event.name for s in events}),
        "failed": sum(s.event.failed for s in events),
        "seconds": _by_kind(events),
        "slowest": [_slow(s) for s in slowest],
        "packages": _packages(events)[:top],
        "events": [_event(s, origin) for s in events],
    }


def _slow(s: _Summary) -> dict[str, Any]:
    return {
        "name": s.event.name,
        "self_seconds": _round(s.self_time),
        "cumulative_seconds": _round(s.cumulative),
        "kind": s.kind,
        "importer": s.event.importer,
    }


def _event(s: _Summary, origin: float) -> dict[str, Any]:
    return {
        "name": s.event.name,
        "parent": s.event.parent,
        "depth": s.event.depth,
        "start": _round(s.event.start - origin),
        "seconds": _round(s.cumulative),
        "self_seconds": _round(s.self_time),
        "kind": s.kind,
        "importer": s.event.importer,
        "failed": s.event.failed,
    }


def _packages(events: list[_Summary]) -> list[dict[str, Any]]:
    """Self time summed by top-level package: ``numpy`` rather than its 200 modules."""
    totals: dict[str, dict[str, Any]] = {}
    for s in events:
        top = s.event.name.split(".")[0]
        entry = totals.setdefault(top, {"name": top, "modules": set(), "seconds": 0.0})
        entry.setdefault("kind", s.kind)
        entry["modules"].add(s.event.name)
        entry["seconds"] += s.self_time
    ranked = sorted(totals.values(), key=lambda p: p["seconds"], reverse=True)
    return [{**p, "modules": len(p["modules"]), "seconds": _round(p["seconds"])} for p in ranked]


def _fixture(f: FixtureTiming, origin: float) -> dict[str, Any]:
    return {
        "name": f.name,
        "scope": f.scope,
        "location": f.location,
        "start": _round(f.start - origin),
        "seconds": _round(f.end - f.start),
        "error": f.error,
    }


def memory_of(pid: int) -> dict[str, int | None] | None:
    """RSS, USS and PSS of a process in bytes (``None`` where the kernel does not tell).

    USS is what the process alone holds; PSS shares the pages it has in common with its
    forks: summed over snapd's processes, PSS is their real footprint.

    Example:
        >>> sorted(memory_of(os.getpid()) or {})
        ['pss', 'rss', 'uss']
    """
    import psutil

    try:
        info = psutil.Process(pid).memory_full_info()
    except (psutil.Error, OSError):
        try:
            return {"rss": int(psutil.Process(pid).memory_info().rss), "uss": None, "pss": None}
        except (psutil.Error, OSError):
            return None
    return {
        "rss": int(info.rss),
        "uss": int(getattr(info, "uss", 0)) or None,
        "pss": int(getattr(info, "pss", 0)) or None,
    }


_CLASSES: tuple[type, type] | None = None


def _plugin_classes() -> tuple[type, type]:
    """The plugin classes, made on first use: importing pytest here at module import would
    put its import time outside the profile, and this module must stay cheap to import."""
    global _CLASSES
    if _CLASSES is None:
        _CLASSES = _make_plugin_classes()
    return _CLASSES


def _make_plugin_classes() -> tuple[type, type]:
    import pytest

    class PhasePlugin:
        """Marks the phases of a pytest start-up and times each fixture's setup."""

        def __init__(self, profiler: Profiler) -> None:
            self.profiler = profiler
            profiler.pytest_version = pytest.__version__

        @pytest.hookimpl(wrapper=True)
        def pytest_load_initial_conftests(self, early_config: pytest.Config) -> Any:
            self.profiler.mark(PLUGINS)
            try:
                return (yield)
            finally:
                self.profiler.mark(CONFTEST)

        @pytest.hookimpl(wrapper=True)
        def pytest_collection(self, session: pytest.Session) -> Any:
            self.profiler.mark(CONFIGURE)
            if self.profiler.rootdir is None:
                self.profiler.rootdir = str(session.config.rootpath)
            try:
                return (yield)
            finally:
                self.profiler.mark(COLLECTION)
                self.profiler.tests_collected = len(getattr(session, "items", []))

        @pytest.hookimpl(wrapper=True)
        def pytest_fixture_setup(self, fixturedef: Any, request: pytest.FixtureRequest) -> Any:
            timing = FixtureTiming(
                fixturedef.argname,
                str(fixturedef.scope),
                _location(fixturedef.func, self.profiler.rootdir),
                time.monotonic(),
            )
            self.profiler.fixtures.append(timing)
            try:
                return (yield)
            except BaseException as error:
                timing.error = f"{type(error).__name__}: {error}"[:500]
                raise
            finally:
                timing.end = time.monotonic()

    class ColdPlugin(PhasePlugin):
        """Also sets up the session fixtures instead of running tests."""

        @pytest.hookimpl(tryfirst=True)
        def pytest_runtestloop(self, session: pytest.Session) -> bool | None:
            if session.testsfailed:
                # Collection errors: pytest's own loop reports them ("Interrupted").
                self.profiler.finish(ERROR)
                return None
            from snapd.snapshot import prewarm

            failed = prewarm.session_fixtures(session).failed
            self.profiler.failed_fixtures.extend({"name": n, "error": e} for n, e in failed)
            self.profiler.finish(FIXTURES)
            return True

    return PhasePlugin, ColdPlugin


def _location(func: Any, rootdir: str | None) -> str:
    """``path:line`` of a fixture function, relative to the rootdir when inside it."""
    code = getattr(func, "__code__", None)
    if code is None:
        return getattr(func, "__qualname__", repr(func))
    path = code.co_filename
    if rootdir and path.startswith(os.path.join(rootdir, "")):
        path = os.path.relpath(path, rootdir)
    return f"{path}:{code.co_firstlineno}"


def main(argv: list[str] | None = None) -> int:
    """``python -m snapd.profile --out FILE [--origin T] [--top N] -- PYTEST_ARGS``.

    Writes the profile of one cold start, plus pytest's exit code and the teardown time,
    as JSON to FILE. ``--origin`` is the parent's ``time.monotonic()`` just before it
    started this process, so the interpreter's own start-up is measured too.
    """
    options, pytest_args = _parse(sys.argv[1:] if argv is None else argv)
    origin = float(options.get("--origin") or time.monotonic())
    # Like the `pytest` console script (and the base snapshot): its bin folder, not the cwd,
    # comes first on sys.path, so the project imports exactly what a plain pytest run does.
    import sysconfig

    sys.path[0] = sysconfig.get_path("scripts")
    profiler = Profiler(origin=origin)
    profiler.mark(INTERPRETER)
    profiler.start()
    code = _run_pytest(profiler, pytest_args)
    profiler.finish(ERROR)  # a no-op unless pytest gave up before the fixtures
    ended = time.monotonic()
    data = profiler.result(int(options.get("--top") or 15))
    data["exit_code"] = code
    data["teardown_seconds"] = _round(ended - profiler.marks[-1][1])
    import json

    with open(options["--out"], "w", encoding="utf-8") as out:
        json.dump(data, out)
    return 0


def _run_pytest(profiler: Profiler, args: list[str]) -> int:
    import pytest

    try:
        return int(pytest.main([*args, *COLD_ARGS], plugins=[profiler.plugin(prewarm=True)]))
    except SystemExit as stopped:  # a plugin that exits instead of returning
        return stopped.code if isinstance(stopped.code, int) else 1
    except Exception:  # pytest reports its own errors: this is a crash around it
        import traceback

        traceback.print_exc()
        return int(pytest.ExitCode.INTERNAL_ERROR)


def _parse(argv: list[str]) -> tuple[dict[str, str], list[str]]:
    """Our options up to ``--``, then pytest's arguments (no argparse: it costs start-up)."""
    options: dict[str, str] = {}
    rest = list(argv)
    while rest and rest[0] != "--":
        name = rest.pop(0)
        if name not in ("--out", "--origin", "--top") or not rest:
            raise SystemExit(f"usage: python -m snapd.profile --out FILE ... -- ARGS ({name}?)")
        options[name] = rest.pop(0)
    if "--out" not in options:
        raise SystemExit("usage: python -m snapd.profile --out FILE [--origin T] -- ARGS")
    return options, rest[1:]


@dataclass
class ColdRun:
    """What ``run_cold`` saw: the profile, pytest's exit code and its output."""

    profile: dict[str, Any]
    exit_code: int
    output: str


def run_cold(args: list[str], top: int = 15, timeout: float | None = None) -> ColdRun:
    """Profile one cold start of ``pytest ARGS`` in a fresh interpreter, in the cwd.

    Example:
        >>> run = run_cold(["tests/test_api.py"])  # doctest: +SKIP
        >>> run.profile["total_seconds"]  # doctest: +SKIP
        6.43
    """
    import json
    import subprocess
    import tempfile

    with tempfile.TemporaryDirectory(prefix="snapd-stats-") as folder:
        out = os.path.join(folder, "profile.json")
        # -c rather than -m, so this module is `snapd.profile` (an importer name), not __main__.
        boot = "from snapd.profile import main; main()"
        command = [sys.executable, "-c", boot, "--out", out, "--top", str(top)]
        origin = time.monotonic()
        done = subprocess.run(
            [*command, "--origin", repr(origin), "--", *args],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            timeout=timeout,
        )
        try:
            with open(out, encoding="utf-8") as f:
                profile = json.load(f)
        except (OSError, ValueError) as error:
            raise RuntimeError(f"the profiled run failed:\n{done.stdout}") from error
    code = int(profile.pop("exit_code"))
    return ColdRun(profile, code, done.stdout)


if __name__ == "__main__":
    sys.exit(main())
