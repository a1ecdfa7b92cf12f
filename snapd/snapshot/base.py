"""The base snapshot: an interpreter with pytest, its plugins and the project's usual
third-party modules imported. Spawned by the manager as

    python -c 'from snapd.snapshot.base import main; main()' CONTROL_FD

it reads its ``build`` message (rootdir, modules to preload), imports, reports ``ready`` with its
file set, then serves: request children for projects whose session snapshot cannot be built,
and session snapshots.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import os
import site
import socket
import sys
import sysconfig

from snapd import profile, protocol
from snapd.snapshot import imports, lifetime, record


def main() -> None:
    control = socket.socket(fileno=int(sys.argv[1]))
    lifetime.die_with_parent(int(sys.argv[2]))
    # The console script `pytest` runs with its bin directory first on sys.path, not cwd.
    sys.path[0] = sysconfig.get_path("scripts")
    got = protocol.recv(control)
    if got is None:
        os._exit(0)
    message, _ = got
    os.chdir(message["rootdir"])
    profiler = profile.Profiler(rootdir=message["rootdir"], origin=message.get("origin"))
    profiler.mark(profile.INTERPRETER)
    profiler.start()
    record.start(lambda modules: _progress(control, modules))
    imports.start()
    failed = _import_all(message.get("preload", []))
    # Imported here, not at the top: they import pytest, whose cost belongs to the profile.
    from snapd.snapshot import reuse, serve, session

    record.stop()
    imports.stop()
    profiler.finish("imports", measure=False)
    entries, stale = record.collect(set(record.module_files()) | _site_dirs())
    threads = serve.thread_names()
    protocol.send(
        control,
        {
            "op": "ready" if len(threads) == 1 else "failed",
            "layer": "base",
            "pid": os.getpid(),
            "files": entries,
            "stale": stale,
            "modules": len(sys.modules),
            "preload_failed": failed,
            "profile": profiler.result(),
            "reason": f"threads alive after imports: {', '.join(threads)}",
        },
    )
    reuse.rootdir = message["rootdir"]
    session.base_modules.update(sys.modules)
    serve.serve(control, fork_session=session.build)
    os._exit(0)


def _progress(control: socket.socket, modules: int) -> None:
    protocol.send(control, {"op": "progress", "phase": "importing", "modules": modules})


def _import_all(preload: list[str]) -> list[str]:
    """Import pytest, its own plugins and ``preload``; the names that failed to import.

    Modules of distributions that provide pytest plugins are left to the session: pytest
    imports them under assertion rewriting, and warns about any already imported.
    """
    import _pytest.config
    import pytest  # noqa: F401

    for name in _pytest.config.default_plugins:
        importlib.import_module(f"_pytest.{name}")
    rewritten = _plugin_modules()
    failed = []
    for name in preload:
        if name.split(".")[0] in rewritten:
            continue
        try:
            importlib.import_module(name)
        except BaseException:
            failed.append(name)
    return failed


def _plugin_modules() -> set[str]:
    from _pytest.config import _iter_rewritable_modules

    names: set[str] = set()
    for dist in importlib.metadata.distributions():
        eps = [ep for ep in dist.entry_points if ep.group == "pytest11"]
        if eps:
            names.update(_iter_rewritable_modules(str(f) for f in dist.files or []))
            names.update(ep.value.split(":")[0].split(".")[0] for ep in eps)
    return names


def _site_dirs() -> set[str]:
    """Site-packages folders: their mtime moves when a distribution is added or removed."""
    dirs = [*site.getsitepackages(), site.getusersitepackages()]
    return {d + "/" for d in dirs if os.path.isdir(d)}
