"""Set up the session-scoped fixtures that collected tests use, as a session snapshot does
before serving (and ``snapd stats --cold`` does to measure a start-up)."""

from __future__ import annotations

import random
import sys
import time
import warnings
from collections.abc import Generator
from dataclasses import dataclass
from typing import Any, NamedTuple

import pytest


@dataclass
class Setup:
    """What one fixture's setup was like: how long it took (its dependencies' setup
    included, as in the cold run that sets them up first), and whether it drew from the
    process-wide random generators."""

    seconds: float = 0.0
    random: bool = False


class Prewarmed(NamedTuple):
    # Every session fixture definition set up (those the tests name, and those set up on
    # the way, such as pytest-asyncio's loop runners), by identity.
    defs: list[Any]
    # (name, error) of each fixture whose setup failed.
    failed: list[tuple[str, str]]
    # id(fixturedef) -> its setup.
    setups: dict[int, Setup]


def session_fixtures(session: pytest.Session) -> Prewarmed:
    """Set up the collected tests' session fixtures that a child may take from a snapshot.

    Not pytest's own fixtures (``tmp_path_factory`` must be each run's), nor parametrized ones.
    """
    # Session fixtures' finalizers attach to the session: it must be on the setup stack.
    session._setupstate.setup(session)  # type: ignore[arg-type]
    removed = getattr(pytest, "PytestRemovedIn10Warning", pytest.PytestDeprecationWarning)
    recorder = _Recorder()
    session.config.pluginmanager.register(recorder, "snapd-prewarm")
    failed = []
    try:
        for item in session.items:
            info = getattr(item, "_fixtureinfo", None)
            request = getattr(item, "_request", None)
            if info is None or request is None:
                continue
            for name in info.names_closure:
                defs = info.name2fixturedefs.get(name) or ()
                if not defs or not reusable(defs[-1]) or defs[-1].cached_result is not None:
                    continue
                try:
                    with warnings.catch_warnings():
                        # The item is not set up (only the session is): pytest takes that for
                        # a lookup during teardown, which it deprecates for function-scoped
                        # ones.
                        warnings.simplefilter("ignore", removed)
                        request.getfixturevalue(name)
                except pytest.skip.Exception:
                    continue
                except (Exception, pytest.fail.Exception) as error:
                    failed.append((name, f"{type(error).__name__}: {error}"[:500]))
    finally:
        session.config.pluginmanager.unregister(recorder)
    return Prewarmed(list(recorder.defs.values()), failed, recorder.setups)


def reusable(fixturedef: Any) -> bool:
    module = getattr(fixturedef.func, "__module__", "") or ""
    return (
        fixturedef.scope == "session"
        and fixturedef.params is None
        and not module.startswith("_pytest")
    )


class _Recorder:
    """Times every fixture setup while prewarming, and notes which drew random numbers."""

    def __init__(self) -> None:
        self.defs: dict[int, Any] = {}
        self.setups: dict[int, Setup] = {}

    @pytest.hookimpl(wrapper=True, tryfirst=True)
    def pytest_fixture_setup(self, fixturedef: Any) -> Generator[None, object, object]:
        before = _random_states()
        began = time.monotonic()
        try:
            return (yield)
        finally:
            self.defs.setdefault(id(fixturedef), fixturedef)
            self.setups[id(fixturedef)] = Setup(
                time.monotonic() - began, _random_states() != before
            )


def _random_states() -> tuple[object, ...]:
    """The state of the process-wide generators a test may draw from, those pytest-randomly
    reseeds: Python's ``random``, Faker's and factory_boy's, NumPy's legacy global one."""
    states: list[object] = [random.getstate()]
    for module, name in (("faker.generator", "random"), ("factory.random", "randgen")):
        getstate = getattr(getattr(sys.modules.get(module), name, None), "getstate", None)
        if callable(getstate):
            states.append(getstate())
    numpy_random = sys.modules.get("numpy.random")
    if numpy_random is not None:
        try:
            _, keys, position, *_rest = numpy_random.get_state()
            states.append((keys.tobytes(), position))
        except Exception:
            pass
    return tuple(states)
