"""The session snapshot: forked from the base, it runs pytest over the project far enough to
hold everything a request needs, then serves from inside its own session.

Its pytest run (capture off, quiet, output to the daemon log) loads config and conftests,
collects every test (importing test modules under assertion rewriting), and sets up the
session-scoped fixtures the collected tests use. Instead of running tests, its
``pytest_runtestloop`` reports ``ready`` with the file set and serves until stopped; then it
tears the session fixtures down and exits without the rest of pytest's shutdown.
"""

from __future__ import annotations

import gc
import logging
import os
import socket
import sys
import time
import traceback
import types
from collections.abc import Generator
from pathlib import Path
from typing import NoReturn

import pytest

from snapd import fileset, forks, profile, protocol
from snapd.snapshot import imports, lifetime, prewarm, probe, record, reuse, serve

base_modules: dict[str, types.ModuleType] = {}
_CONFIG_NAMES = ("pytest.ini", ".pytest.ini", "pyproject.toml", "tox.ini", "setup.cfg")
_SNAPSHOT_ARGS = ["-s", "-qq"]


def build(control: socket.socket, message: protocol.Message) -> NoReturn:
    lifetime.die_with_parent(int(message["parent"]))
    reuse.rootdir = message["rootdir"]
    plugin = SessionPlugin(
        control,
        Path(message["rootdir"]),
        message.get("preload", []),
        message["after_fork"],
        list(message["args"]),
    )
    os.chdir(message["cwd"])
    record.start(plugin.progress)
    imports.start()
    plugin.profiler.start()
    try:
        plugins = [plugin, plugin.profiler.plugin()]
        code = int(pytest.main([*message["args"], *_SNAPSHOT_ARGS], plugins=plugins))
        reason = f"pytest ended with exit code {code} before collection finished"
    except BaseException:
        reason = traceback.format_exc()
    # Only a run that never reached the serve loop gets here. What it read says when to retry.
    record.stop()
    files, _ = record.collect(set(_session_files()))
    failure = {"op": "failed", "layer": "session", "pid": os.getpid(), "reason": reason}
    protocol.send(control, {**failure, "files": files})
    os._exit(0)


class SessionPlugin:
    def __init__(
        self,
        control: socket.socket,
        rootdir: Path,
        preload: list[str],
        after_fork: list[str],
        args: list[str],
    ) -> None:
        self.control = control
        self.rootdir = rootdir
        self.preload = preload
        self.after_fork = tuple(after_fork)
        # The arguments the snapshot's session was started with, less snapd's own.
        self.args = args
        self.phase = "loading config and conftests"
        self.root_handlers = list(logging.root.handlers)
        # The build's breakdown (for `snapd stats`): from the fork to the fixtures set up.
        self.profiler = profile.Profiler(rootdir=str(rootdir), origin=time.monotonic())

    def progress(self, modules: int) -> None:
        protocol.send(self.control, {"op": "progress", "phase": self.phase, "modules": modules})

    @pytest.hookimpl(wrapper=True)
    def pytest_load_initial_conftests(
        self, early_config: pytest.Config
    ) -> Generator[None, object, object]:
        """Keep pytest-cov from measuring in this snapshot.

        pytest-cov starts here, after erasing the coverage data in the project: ``.coverage``
        and every ``.coverage.*`` file. A snapshot building in the background would erase the
        data of a run served meanwhile from the base (its combine then fails on a file that
        vanished), or the ``.coverage`` of the user's last run. Runs with coverage are never
        served from this snapshot (``_needs_fresh_imports`` reads the full options, where
        ``no_cov`` is still the user's), so its measuring would serve nothing.
        """
        namespace = early_config.known_args_namespace
        if getattr(namespace, "cov_source", None):
            namespace.no_cov = True
        return (yield)

    @pytest.hookimpl(tryfirst=True)
    def pytest_collection(self) -> None:
        self.phase = "collecting"

    @pytest.hookimpl(tryfirst=True)
    def pytest_runtestloop(self, session: pytest.Session) -> bool:
        self.phase = "setting up session fixtures"
        self.progress(len(sys.modules))
        serve.import_quietly(self.preload)
        fresh_only = _needs_fresh_imports(session.config)
        failed_fixtures = [] if fresh_only else _prewarm(session)
        self.profiler.finish(measure=False)
        forks.resolve(self.after_fork)
        forks.prepare()
        reuse.foreign_log_handlers[:] = [
            h for h in logging.root.handlers if h not in self.root_handlers
        ]
        record.stop()
        imports.stop()
        entries, stale = record.collect(set(_session_files()))
        entries.update(_absent_config(session, self.rootdir))
        tests = _test_modules(session)
        threads = serve.thread_names()
        if not fresh_only and len(threads) == 1:
            # A fork is safe here, and must be before the snapshot serves.
            fresh_only = probe.rerun_problem(self.args)
        gc.freeze()
        protocol.send(
            self.control,
            {
                "op": "ready",
                "layer": "session",
                "pid": os.getpid(),
                "files": entries,
                "stale": stale,
                "modules": len(sys.modules),
                "test_modules": tests,
                "third_party": _third_party(self.rootdir),
                "failed_fixtures": failed_fixtures,
                "fresh_only": fresh_only,
                "profile": self.profiler.result(),
                "threads": threads if len(threads) > 1 else [],
            },
        )
        sys.stdout.flush()
        serve.serve(self.control)
        try:
            session._setupstate.teardown_exact(None)
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(0)


def _needs_fresh_imports(config: pytest.Config) -> str:
    """Why runs of this configuration must import the project themselves, if they must."""
    option = config.option
    if getattr(option, "cov_source", None) and not getattr(option, "no_cov", False):
        return "pytest-cov measures coverage from the start of the run"
    if getattr(option, "numprocesses", None) or getattr(option, "dist", "no") != "no":
        return "pytest-xdist runs the tests in workers of its own"
    return ""


def _prewarm(session: pytest.Session) -> list[str]:
    """Set up the session fixtures, register those that succeeded and the conftest modules
    for reuse by children, and name the fixtures that failed.

    A fixture whose setup drew from the process-wide random generators is left for each run
    to set up, as is any fixture that depends on one: its value depends on the run's random
    state (pytest-randomly's seed, say).
    """
    prewarmed = prewarm.session_fixtures(session)
    kept = {}
    for fixturedef in prewarmed.defs:
        result = fixturedef.cached_result
        setup = prewarmed.setups.get(id(fixturedef), prewarm.Setup())
        if (
            prewarm.reusable(fixturedef)
            and result is not None
            and result[2] is None
            and not setup.random
        ):
            kept[id(fixturedef)] = (fixturedef, setup)
    dropped = {
        d.argname for d in prewarmed.defs if prewarmed.setups.get(id(d), prewarm.Setup()).random
    }
    while True:
        # By name: an overridden fixture of the same name drops too, which only costs time.
        depending = [k for k, (d, _) in kept.items() if dropped & set(d.argnames)]
        if not depending:
            break
        for key in depending:
            dropped.add(kept.pop(key)[0].argname)
    for fixturedef, setup in kept.values():
        reuse.fixtures[(fixturedef.baseid, fixturedef.argname)] = reuse.Fixture(
            fixturedef.func, fixturedef.cached_result[0], setup.seconds
        )
    for module in session.config.pluginmanager._conftest_plugins:
        path = getattr(module, "__file__", None)
        if path:
            reuse.conftests[str(Path(path))] = module
    return [name for name, _ in prewarmed.failed]


def _session_modules() -> dict[str, types.ModuleType]:
    return {n: m for n, m in sys.modules.items() if base_modules.get(n) is not m}


def _session_files() -> dict[str, str]:
    return record.module_files(_session_modules())


def _third_party(rootdir: Path) -> list[str]:
    """Modules from outside the project, for the next base to import ahead."""
    inside = str(rootdir) + os.sep
    return sorted(
        name
        for path, name in _session_files().items()
        if not path.startswith(inside) and "snapd" not in name.split(".")[0]
    )


def _test_modules(session: pytest.Session) -> dict[str, str]:
    """Collected test modules that no other module refers to: safe to re-import alone."""
    tests = {}
    for item in session.items:
        module = getattr(item, "module", None)
        if isinstance(module, types.ModuleType) and getattr(module, "__file__", None):
            tests[module.__name__] = module
    referenced = set()
    for name, module in _session_modules().items():
        for value in list(vars(module).values()):
            target = value.__name__ if isinstance(value, types.ModuleType) else None
            target = target or getattr(value, "__module__", None)
            if target in tests and target != name:
                referenced.add(target)
    return {
        str(Path(m.__file__ or "")): name for name, m in tests.items() if name not in referenced
    }


def _absent_config(session: pytest.Session, rootdir: Path) -> fileset.Entries:
    """Config and conftest files pytest looked for and did not find: creating one matters."""
    dirs = {Path(str(item.path)).parent for item in session.items}
    probes = set()
    for directory in dirs:
        for parent in (directory, *directory.parents):
            probes.add(parent / "conftest.py")
            if parent == rootdir:
                break
    for parent in (rootdir, *rootdir.parents):
        probes.update(parent / name for name in _CONFIG_NAMES)
    return {str(p): None for p in probes if not p.exists()}
