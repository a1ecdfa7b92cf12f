"""The pytest plugin: ``pytest ARGS`` itself served by the daemon, for IDE test runners.

Installed as the ``snapd`` entry point, so it is loaded by every pytest run in the environment,
and does nothing unless enabled:

- ``pytest -p snapd ...`` (or in ``addopts``);
- ``snapd = true`` in the pytest ini options;
- ``SNAPD_PYTEST=1`` in the environment (removed from the environment the run gets, so that a
  pytest a test starts, such as pytester's, runs as usual).

Then, before the first conftest.py is imported, it hands the run to the daemon, exactly as
``snapd pytest ARGS`` would, and this process ends as that run ends. It stays out of the way
inside snapd's own processes and under a debugger (the test would run in another process,
where the debugger's breakpoints are not); ``breakpoint()`` and ``--pdb`` work either way.
"""

from __future__ import annotations

import os
import sys

import pytest

ENV = "SNAPD_PYTEST"
_DEBUGGERS = ("debugpy", "pydevd", "_pydevd_bundle")


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addini(
        "snapd", "serve this pytest run from the snapd daemon", type="bool", default=False
    )


@pytest.hookimpl(tryfirst=True)
def pytest_load_initial_conftests(early_config: pytest.Config) -> None:
    if not _enabled(early_config) or _inside_snapd() or _debugged():
        return
    from snapd import client

    # PYTEST_VERSION is this pytest's own mark, set while it runs.
    env = {k: v for k, v in os.environ.items() if k not in (ENV, "PYTEST_VERSION")}
    args = list(early_config.invocation_params.args)
    # Global capture already holds fds 1 and 2: the run must get the real ones.
    capture = early_config.pluginmanager.getplugin("capturemanager")
    if capture is not None:
        capture.suspend_global_capture(in_=True)
    # Returns only when the daemon cannot serve the run: then it goes on here, as plain pytest.
    client.notice(client.serve(args, env))
    if capture is not None:
        capture.resume_global_capture()


def _enabled(config: pytest.Config) -> bool:
    if os.environ.get(ENV, "") not in ("", "0"):
        return True
    args = config.invocation_params.args
    explicit = any(
        arg in ("-psnapd", "-p=snapd") or (arg == "-p" and following == "snapd")
        for arg, following in zip(args, [*args[1:], ""], strict=True)
    )
    return explicit or bool(config.getini("snapd"))


def _inside_snapd() -> bool:
    return "snapd.snapshot.serve" in sys.modules


def _debugged() -> bool:
    return sys.gettrace() is not None or any(name in sys.modules for name in _DEBUGGERS)
