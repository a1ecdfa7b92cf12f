"""After-fork hooks: what each request child must do first because it was forked.

A session fixture's database connection is a socket the snapshot and every child would
share. Hooks run in every request child, before pytest starts. Register one with the
decorator (in a conftest.py or a module it imports)::

    import snapd

    @snapd.after_fork
    def reconnect_cache():
        cache.pool.reset()

or name it in pyproject.toml: ``[tool.snapd] after_fork = ["myproject.testing:reconnect"]``.

Built in, and run first: Django database connections other than SQLite are dropped unclosed
(Django reconnects on first use; closing would end the snapshot's session too; an SQLite
connection is process memory, so the child's copy is its own); SQLAlchemy engines are
disposed with ``close=False``, as SQLAlchemy documents for fork; NumPy's global random
state is reseeded, as a fresh process would have it.
"""

from __future__ import annotations

import gc
import importlib
import sys
import traceback
import weakref
from collections.abc import Callable
from typing import Any, TypeVar

Hook = TypeVar("Hook", bound=Callable[[], object])

_hooks: list[Callable[[], object]] = []
_engines: list[weakref.ref[Any]] = []


def after_fork(hook: Hook) -> Hook:
    """Register ``hook`` to run in every request child, before pytest starts."""
    _hooks.append(hook)
    return hook


def resolve(specs: tuple[str, ...]) -> None:
    """Import the ``module:function`` hooks named in the configuration and register them."""
    for spec in specs:
        module_name, _, name = spec.partition(":")
        hook = getattr(importlib.import_module(module_name), name or "after_fork")
        if not callable(hook):
            raise TypeError(f"after_fork hook {spec!r} is not callable")
        after_fork(hook)


def prepare() -> None:
    """In the snapshot, once built: find what the built-in hooks will have to fix."""
    engine_type = getattr(sys.modules.get("sqlalchemy.engine"), "Engine", None)
    if engine_type is not None:
        _engines[:] = [weakref.ref(o) for o in gc.get_objects() if isinstance(o, engine_type)]


def run() -> None:
    """In a request child: the built-in hooks, then the registered ones, in order.

    A hook that raises ends the run before pytest starts, with exit code 1.
    """
    for hook in [_django_connections, _sqlalchemy_engines, _numpy_random, *_hooks]:
        try:
            hook()
        except Exception:
            traceback.print_exc()
            name = f"{getattr(hook, '__module__', '?')}.{getattr(hook, '__qualname__', hook)}"
            print(f"snapd: after_fork hook {name} failed; the run did not start", file=sys.stderr)
            raise SystemExit(1) from None


def _django_connections() -> None:
    db = sys.modules.get("django.db")
    conf = sys.modules.get("django.conf")
    if db is None or conf is None or not conf.settings.configured:
        return
    try:
        connections = db.connections.all(initialized_only=True)
    except TypeError:  # Django < 4.1
        connections = db.connections.all()
    for connection in connections:
        if connection.connection is not None and connection.vendor != "sqlite":
            connection.connection = None


def _sqlalchemy_engines() -> None:
    for ref in _engines:
        engine = ref()
        if engine is not None:
            engine.dispose(close=False)


def _numpy_random() -> None:
    random = sys.modules.get("numpy.random")
    if random is not None:
        random.seed()
