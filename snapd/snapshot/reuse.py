"""What a request child takes from its snapshot instead of doing again.

The session snapshot registers its conftest modules and the values of its session-scoped
fixtures here; forked children inherit the registry. In the child's fresh pytest run,
``import_path`` returns the snapshot's own conftest module (pytest would drop and re-import
it), and ``pytest_fixture_setup`` returns the snapshot's value for a session fixture defined by
the very same function object. The snapshot keeps the teardown.

Where a cold run's outcome would depend on the fixture's setup itself, the child sets the
fixture up for real instead: when pytest-timeout's clock is running for the test and the
snapshot's setup of the fixture took longer than the time left (a cold run would time out in
that setup, with that traceback).
"""

from __future__ import annotations

import logging
import os
import sys
import time
import types
from collections.abc import Generator, Sequence
from dataclasses import dataclass
from typing import Any

import _pytest.config
import pytest
from _pytest.fixtures import FixtureDef, SubRequest

from snapd.snapshot import imports


@dataclass(frozen=True)
class Fixture:
    func: object
    value: object
    # How long its setup took in the snapshot, its own dependencies' setup included.
    seconds: float = 0.0


rootdir = "/"
conftests: dict[str, types.ModuleType] = {}
fixtures: dict[tuple[str, str], Fixture] = {}
# Handlers the snapshot's own logging plugin left on the root logger while it serves.
foreign_log_handlers: list[logging.Handler] = []
_original_import_path = _pytest.config.import_path  # type: ignore[attr-defined]


def _import_path(path: Any, **kwargs: Any) -> types.ModuleType:
    module = conftests.get(str(path))
    if module is None:
        return _original_import_path(path, **kwargs)
    sys.modules[module.__name__] = module
    imports.touch([module.__name__])
    return module


class ReusePlugin:
    def __init__(self) -> None:
        # When pytest-timeout's timer for the current test fires (monotonic), if it runs.
        self.deadline: float | None = None

    @pytest.hookimpl(wrapper=True, tryfirst=True)
    def pytest_fixture_setup(
        self, fixturedef: FixtureDef[Any], request: SubRequest
    ) -> Generator[None, object, object]:
        known = fixtures.get((fixturedef.baseid, fixturedef.argname))
        if known is None or known.func is not fixturedef.func or fixturedef.scope != "session":
            return (yield)
        if self.deadline is not None and known.seconds >= self.deadline - time.monotonic():
            # A cold run would still be in this setup when the timeout fires.
            return (yield)
        # pytest's own setup runs a function that hands back the snapshot's value: it caches
        # it as usual, reports it to --setup-show, and a value of None is no "no result".
        original = fixturedef.func
        fixturedef.func = _returning(known.value, original)  # type: ignore[misc]
        try:
            return (yield)
        finally:
            fixturedef.func = original  # type: ignore[misc]

    # pytest-timeout's own hooks (optional: unknown to pytest where it is not installed).
    # Its timer covers fixture setup unless ``timeout_func_only``; it is set per test.

    @pytest.hookimpl(optionalhook=True, tryfirst=True)
    def pytest_timeout_set_timer(self, item: pytest.Item, settings: Any) -> None:
        timeout = getattr(settings, "timeout", None)
        if timeout and timeout > 0:
            self.deadline = time.monotonic() + float(timeout)

    @pytest.hookimpl(optionalhook=True, tryfirst=True)
    def pytest_timeout_cancel_timer(self, item: pytest.Item) -> None:
        self.deadline = None


class LoadedPlugin:
    """What a cold run of these arguments loads, for ``imports``: the test modules it collects
    (held by the snapshot, so not imported again) and the plugins it loads. Registered only
    where ``imports`` tracks a run: its wrapper would otherwise cost every collector a call."""

    @pytest.hookimpl(wrapper=True)
    def pytest_make_collect_report(
        self, collector: pytest.Collector
    ) -> Generator[None, pytest.CollectReport, pytest.CollectReport]:
        report = yield
        module = getattr(collector, "_obj", None)
        if isinstance(collector, pytest.Module) and isinstance(module, types.ModuleType):
            imports.touch([module.__name__])
        return report

    @pytest.hookimpl(tryfirst=True)
    def pytest_collection_finish(self, session: pytest.Session) -> None:
        plugins = session.config.pluginmanager.get_plugins()
        imports.touch(p.__name__ for p in plugins if isinstance(p, types.ModuleType))
        imports.before_tests()


def _returning(value: object, original: Any) -> Any:
    def snapshot_value(**_: object) -> object:
        return value

    # It stands in for the fixture's function: plugins that look at where the function
    # comes from (pytest-asyncio warns about an ``event_loop_policy`` not its own) see the
    # original's. Not its other attributes: pytest-asyncio's mark of an async fixture would
    # have it run this plain function as a coroutine.
    for name in ("__module__", "__name__", "__qualname__", "__doc__"):
        try:
            setattr(snapshot_value, name, getattr(original, name))
        except (AttributeError, TypeError):
            pass
    return snapshot_value


def run_pytest(args: list[str], extra: Sequence[object] = ()) -> int:
    """Run pytest as its console script would, with the snapshot's work reused (and the
    ``extra`` plugins)."""
    if conftests:
        # Only then: the wrapper's frame would show in the traceback of a conftest that fails.
        _pytest.config.import_path = _import_path  # type: ignore[attr-defined]
    for handler in foreign_log_handlers:
        logging.root.removeHandler(handler)
    imports.begin_run()
    main_module = sys.modules.get("__main__")
    # As the ``pytest`` script's own module has it (the snapshot's is ``python -c``'s): what
    # multiprocessing's spawn and Hypothesis's local constants read.
    if (
        main_module is not None
        and not hasattr(main_module, "__file__")
        and sys.argv
        and os.path.isfile(sys.argv[0])
    ):
        main_module.__file__ = sys.argv[0]
    plugins: list[object] = [ReusePlugin(), *extra]
    if imports.tracking():
        plugins.append(LoadedPlugin())
    try:
        main = getattr(_pytest.config, "_main", None)
        if main is not None:  # pytest >= 9.1 names the program in usage errors
            code = main(args=args, plugins=plugins, prog=_pytest.config._get_prog_name(sys.argv))
        else:
            code = pytest.main(args, plugins)
        sys.stdout.flush()
        return int(code)
    except BrokenPipeError:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 1
