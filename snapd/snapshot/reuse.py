"""What a request child takes from its snapshot instead of doing again.

The session snapshot registers its conftest modules and the values of its session-scoped
fixtures here; forked children inherit the registry. In the child's fresh pytest run,
``import_path`` returns the snapshot's own conftest module (pytest would drop and re-import
it), and ``pytest_fixture_setup`` returns the snapshot's value for a session fixture defined by
the very same function object. The snapshot keeps the teardown.
"""

from __future__ import annotations

import logging
import os
import sys
import types
from collections.abc import Generator
from dataclasses import dataclass
from typing import Any

import _pytest.config
import pytest
from _pytest.fixtures import FixtureDef, SubRequest


@dataclass(frozen=True)
class Fixture:
    func: object
    value: object


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
    return module


class ReusePlugin:
    @pytest.hookimpl(wrapper=True, tryfirst=True)
    def pytest_fixture_setup(
        self, fixturedef: FixtureDef[Any], request: SubRequest
    ) -> Generator[None, object, object]:
        known = fixtures.get((fixturedef.baseid, fixturedef.argname))
        if known is None or known.func is not fixturedef.func or fixturedef.scope != "session":
            return (yield)
        # pytest's own setup runs a function that hands back the snapshot's value: it caches
        # it as usual, reports it to --setup-show, and a value of None is no "no result".
        original = fixturedef.func
        fixturedef.func = _returning(known.value)  # type: ignore[misc]
        try:
            return (yield)
        finally:
            fixturedef.func = original  # type: ignore[misc]


def _returning(value: object) -> Any:
    def snapshot_value(**_: object) -> object:
        return value

    return snapshot_value


def run_pytest(args: list[str]) -> int:
    """Run pytest as its console script would, with the snapshot's work reused."""
    if conftests:
        # Only then: the wrapper's frame would show in the traceback of a conftest that fails.
        _pytest.config.import_path = _import_path  # type: ignore[attr-defined]
    for handler in foreign_log_handlers:
        logging.root.removeHandler(handler)
    plugins: list[object] = [ReusePlugin()]
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
