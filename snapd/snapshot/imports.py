"""Which modules a cold run would have loaded, for a library whose results depend on it.

Hypothesis draws examples partly from the literals of the *local* modules loaded in the process
(``hypothesis.internal.conjecture.providers._get_local_constants``). So the same
``--hypothesis-seed`` (or ``@seed``, or a ``derandomize`` profile) draws other examples in a
process that holds more than a cold run loads: a request child holds every module the whole
suite imports, and snapd's own.

To draw as a cold run does, snapshots record their import graph while they are built (which
module's top-level code imports which: imports of modules already loaded too), and a request
child shows Hypothesis only the modules reachable in that graph from what its run loads: the
test modules it collects, the conftests and plugins it uses, and the modules it imports itself
(whose module-level imports are read from their source). All of it only where Hypothesis is
installed; elsewhere this module does nothing.

The recording wraps ``__import__`` and ``importlib.import_module`` while a snapshot is built,
never while a run runs: a wrapper's frame would show in the tracebacks of failing imports.
"""

from __future__ import annotations

import ast
import builtins
import importlib
import importlib.util
import sys
import types
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

# importer module name -> the modules it imports
graph: dict[str, set[str]] = {}
# In a request child, while its pytest runs: what the run collected and loaded (as a
# conftest, a plugin) of what the snapshot held.
_touched: set[str] | None = None
# In a request child: the modules its snapshot held. Any other was loaded by the run itself,
# and its imports are read from its source once (``_read``).
_held: set[str] = set()
_read: set[str] = set()
_installed = False
_original_import = builtins.__import__
_original_import_module = importlib.import_module


def start() -> None:
    """Record imports from now on (where Hypothesis is installed: nothing else needs the
    graph), until ``stop``."""
    global _installed
    if importlib.util.find_spec("hypothesis") is None:
        return
    _installed = True
    builtins.__import__ = _import
    importlib.import_module = _import_module


def stop() -> None:
    """Stop recording, before this snapshot serves: runs import through Python's own."""
    builtins.__import__ = _original_import
    importlib.import_module = _original_import_module


def _import(
    name: str,
    globals: Mapping[str, Any] | None = None,
    locals: Mapping[str, Any] | None = None,
    fromlist: Sequence[str] | None = (),
    level: int = 0,
) -> types.ModuleType:
    module = _original_import(name, globals, locals, fromlist, level)
    if globals is not None:
        try:
            _note(globals, name, fromlist or (), level, sys._getframe(1))
        except Exception:  # bookkeeping must never break an import
            pass
    return module


def _import_module(name: str, package: str | None = None) -> types.ModuleType:
    module = _original_import_module(name, package)
    try:
        caller = sys._getframe(1)
        importer = caller.f_globals.get("__name__")
        if isinstance(importer, str):
            _edge(importer, [module.__name__], caller)
    except Exception:
        pass
    return module


def _note(
    globals: Mapping[str, Any],
    name: str,
    fromlist: Sequence[str],
    level: int,
    caller: types.FrameType,
) -> None:
    importer = globals.get("__name__")
    if not isinstance(importer, str):
        return
    target = name
    if level:
        package = globals.get("__package__")
        if package is None:
            package = importer if "__path__" in globals else importer.rpartition(".")[0]
        target = importlib.util.resolve_name("." * level + name, package)
    targets = [target]
    for item in fromlist:
        # ``from package import submodule``: the submodule is imported too.
        if isinstance(item, str) and item != "*" and f"{target}.{item}" in sys.modules:
            targets.append(f"{target}.{item}")
    _edge(importer, targets, caller)


def _edge(importer: str, targets: list[str], caller: types.FrameType) -> None:
    """Only what modules import as they are executed: a function's import says nothing of
    what loading its module loads (pytest's own loader imports every test module)."""
    if caller.f_code.co_name == "<module>":
        graph.setdefault(importer, set()).update(targets)


def touch(names: Iterable[str]) -> None:
    """In a request child: ``names`` were loaded by this run (a conftest taken from the
    snapshot, a collected test module, a plugin), as a cold run loads them."""
    if _touched is not None:
        _touched.update(names)


def begin_run() -> None:
    """In a request child, as its pytest starts: record what the run loads."""
    global _touched
    if _installed:
        _touched = {"__main__"}  # a cold run's is the ``pytest`` script
        _held.update(sys.modules)


def tracking() -> bool:
    """Whether this run records what it loads (since ``begin_run``)."""
    return _touched is not None


def before_tests() -> None:
    """In a request child, once its tests are collected: show Hypothesis only the modules a
    cold run would have loaded."""
    providers = sys.modules.get("hypothesis.internal.conjecture.providers")
    if _touched is not None and providers is not None:
        _HypothesisView(providers).install()


def reachable(roots: Iterable[str]) -> set[str]:
    """``roots``, what they import (in the graph), and so on; with every parent package."""
    seen: set[str] = set()
    todo = list(roots)
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        todo.extend(graph.get(name, ()))
        parent = name.rpartition(".")[0]
        if parent:
            todo.append(parent)
    return seen


def source_imports(module: types.ModuleType) -> set[str]:
    """What the module-level code of ``module`` imports, read from its source: for a module a
    run imported itself, which the snapshot's graph does not know."""
    path = getattr(module, "__file__", None)
    name = getattr(module, "__name__", "")
    if not isinstance(path, str) or not path.endswith(".py"):
        return set()
    try:
        with open(path, "rb") as f:
            tree = ast.parse(f.read(), path)
    except (OSError, SyntaxError, ValueError):
        return set()
    package = getattr(module, "__package__", None) or name.rpartition(".")[0]
    found: set[str] = set()
    todo: list[ast.AST] = list(tree.body)
    while todo:
        node = todo.pop()
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
            continue  # runs later, if at all
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            try:
                base = importlib.util.resolve_name("." * node.level + (node.module or ""), package)
            except (ImportError, ValueError):
                continue
            found.add(base)
            found.update(
                f"{base}.{alias.name}"
                for alias in node.names
                if f"{base}.{alias.name}" in sys.modules
            )
        else:
            todo.extend(ast.iter_child_nodes(node))
    return found


class _HypothesisView:
    """Hypothesis's record of the modules whose constants it took, kept to what a cold run
    would have loaded: the others are marked seen (so never read) until the run loads them."""

    def __init__(self, providers: types.ModuleType) -> None:
        self.providers = providers
        self.hidden: set[int] = set()
        self.synced: tuple[int, int] = (-1, -1)

    def install(self) -> None:
        original = getattr(self.providers, "_get_local_constants", None)
        seen = getattr(self.providers, "_seen_modules", None)
        constants = getattr(self.providers, "_local_constants", None)
        if not callable(original) or not isinstance(seen, set) or constants is None:
            return  # a Hypothesis without local constants, or with others than these
        # The snapshot's session already took the constants of everything it held (Hypothesis
        # does while tests are collected): forget them, so they are taken again as the run
        # goes, of what this run would have loaded. (This process's copy: the snapshot's own
        # record stays as it is.)
        try:
            for kind in ("integer", "float", "bytes", "string"):
                constants.set_for_type(kind).clear()
            cache = getattr(getattr(self.providers, "CONSTANTS_CACHE", None), "cache", None)
            if cache is not None:
                cache.clear()
        except Exception:
            return
        seen.clear()
        self.providers._sys_modules_len = None  # type: ignore[attr-defined]

        def local_constants() -> object:
            self.sync(seen)
            return original()

        self.providers._get_local_constants = local_constants  # type: ignore[attr-defined]

    def sync(self, seen: set[int]) -> None:
        assert _touched is not None
        state = (len(sys.modules), len(_touched))
        if state == self.synced:
            return
        self.synced = state
        for name, module in list(sys.modules.items()):
            if name not in _held and name not in _read and isinstance(module, types.ModuleType):
                _read.add(name)
                graph[name] = source_imports(module)
        visible = reachable(_touched | (set(sys.modules) - _held))
        shown = False
        for name, module in list(sys.modules.items()):
            key = id(module)
            if name in visible or name not in _held:
                if key in self.hidden:
                    self.hidden.discard(key)
                    seen.discard(key)
                    shown = True
            elif key not in seen:
                seen.add(key)
                self.hidden.add(key)
        if shown:
            self.providers._sys_modules_len = None  # type: ignore[attr-defined]
