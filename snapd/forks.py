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
disposed with ``close=False``, as SQLAlchemy documents for fork; asyncio event loops the
snapshot made get a selector and a self-pipe of their own (an epoll instance and a socket
pair are shared by every process forked from the one that made them: a sibling run would
take this run's wakeups); NumPy's global random state and Faker's and factory_boy's
generators are reseeded, as a fresh process would have them.
"""

from __future__ import annotations

import gc
import importlib
import selectors
import signal
import sys
import traceback
import weakref
from collections.abc import Callable
from typing import Any, TypeVar

Hook = TypeVar("Hook", bound=Callable[[], object])

_hooks: list[Callable[[], object]] = []
_engines: list[weakref.ref[Any]] = []
_loops: list[weakref.ref[Any]] = []


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
    loop_type = getattr(sys.modules.get("asyncio.selector_events"), "BaseSelectorEventLoop", None)
    wanted = tuple(t for t in (engine_type, loop_type) if isinstance(t, type))
    _engines.clear()
    _loops.clear()
    if not wanted:
        return
    for found in gc.get_objects():
        if not isinstance(found, wanted):
            continue
        if engine_type is not None and isinstance(found, engine_type):
            _engines.append(weakref.ref(found))
        else:
            _loops.append(weakref.ref(found))


def run(registered: bool = True) -> None:
    """In a request child: the built-in hooks, then (unless told not to) the registered ones,
    in order.

    A hook that raises ends the run before pytest starts, with exit code 1.
    """
    builtin = [_django_connections, _sqlalchemy_engines, _asyncio_loops, _random_generators]
    for hook in [*builtin, *(_hooks if registered else [])]:
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


def _asyncio_loops() -> None:
    for ref in _loops:
        loop = ref()
        if loop is not None and not loop.is_closed() and not loop.is_running():
            renew_loop(loop)


def renew_loop(loop: Any) -> None:
    """Give a selector event loop inherited through fork its own epoll instance and
    self-pipe. What it watches stays registered: the descriptors are this process's copies.
    """
    old = loop._selector
    try:
        new = type(old)()
    except TypeError:  # a selector class that takes arguments: the platform's default
        new = selectors.DefaultSelector()
    for key in list(old.get_map().values()):
        new.register(key.fileobj, key.events, key.data)
    loop._selector = new
    old.close()  # this process's descriptor of the shared instance, not the instance
    # Unregisters the inherited pair from the new selector and closes this process's ends.
    loop._close_self_pipe()
    loop._make_self_pipe()
    if getattr(loop, "_signal_handlers", None):
        # add_signal_handler pointed the wakeup fd at the old pair.
        signal.set_wakeup_fd(loop._csock.fileno())


def _random_generators() -> None:
    """Process-wide generators of their own, which Python's reseeding at fork misses: a
    fresh process seeds them from the OS."""
    numpy_random = sys.modules.get("numpy.random")
    if numpy_random is not None:
        numpy_random.seed()
    for module, name in (("faker.generator", "random"), ("factory.random", "randgen")):
        generator = getattr(sys.modules.get(module), name, None)
        if generator is not None and callable(getattr(generator, "seed", None)):
            generator.seed()
