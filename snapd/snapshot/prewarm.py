"""Set up the session-scoped fixtures that collected tests use, as a session snapshot does
before serving (and ``snapd stats --cold`` does to measure a start-up)."""

from __future__ import annotations

import warnings
from typing import Any

import pytest


def session_fixtures(session: pytest.Session) -> tuple[list[Any], list[tuple[str, str]]]:
    """Set up the collected tests' session fixtures that a child may take from a snapshot.

    Returns every fixture definition the tests use, and the (name, error) of each that failed.
    Not pytest's own fixtures (``tmp_path_factory`` must be each run's), nor parametrized ones.
    """
    # Session fixtures' finalizers attach to the session: it must be on the setup stack.
    session._setupstate.setup(session)  # type: ignore[arg-type]
    removed = getattr(pytest, "PytestRemovedIn10Warning", pytest.PytestDeprecationWarning)
    seen: dict[int, Any] = {}
    failed = []
    for item in session.items:
        info = getattr(item, "_fixtureinfo", None)
        request = getattr(item, "_request", None)
        if info is None or request is None:
            continue
        for name in info.names_closure:
            defs = info.name2fixturedefs.get(name) or ()
            for fixturedef in defs:
                seen.setdefault(id(fixturedef), fixturedef)
            if not defs or not reusable(defs[-1]) or defs[-1].cached_result is not None:
                continue
            try:
                with warnings.catch_warnings():
                    # The item is not set up (only the session is): pytest takes that for a
                    # lookup during teardown, which it deprecates for function-scoped ones.
                    warnings.simplefilter("ignore", removed)
                    request.getfixturevalue(name)
            except pytest.skip.Exception:
                continue
            except (Exception, pytest.fail.Exception) as error:
                failed.append((name, f"{type(error).__name__}: {error}"[:500]))
    return list(seen.values()), failed


def reusable(fixturedef: Any) -> bool:
    module = getattr(fixturedef.func, "__module__", "") or ""
    return (
        fixturedef.scope == "session"
        and fixturedef.params is None
        and not module.startswith("_pytest")
    )
