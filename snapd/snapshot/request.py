"""A request child: a spare forked ahead of time that becomes the client's pytest run.

It waits for its request, takes the client's fds on 0/1/2, its cwd, environment and own
session (so the client can signal its process group, and the tty never stops it with SIGTTIN),
runs a fresh ``pytest.main`` of the client's arguments, and leaves with ``os._exit``: the
snapshot's fixture teardown and atexit handlers are never run here.
"""

from __future__ import annotations

import atexit
import importlib
import os
import resource
import signal
import socket
import sys
import traceback
from typing import NoReturn

from snapd import forks, protocol
from snapd.snapshot import pages, record, reuse


def wait_and_run(sock: socket.socket, report: socket.socket) -> NoReturn:
    """Run the request that comes on ``sock``; then tell the snapshot on ``report`` which
    pages this run wrote, for its next spares to copy ahead."""
    code = 1
    held = set(sys.modules)
    try:
        got = protocol.recv(sock)
        if got is None:
            os._exit(0)
        message, fds = got
        code = run(message, fds)
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else 1
    except BaseException:
        traceback.print_exc()
    _flush()
    _let_go_of_the_terminal()
    try:
        # The snapshot reports our exit too, but it may be gone by now.
        protocol.send(sock, {"op": "exit", "code": code, "imported": _outside(held)})
    except OSError:
        pass
    # The client has its exit code by now: this is off its path. Never wait on the snapshot.
    report.setblocking(False)
    try:
        report.send(pages.written())
    except OSError:
        pass
    os._exit(code)


def run(message: protocol.Message, fds: list[int]) -> int:
    if len(fds) != 3:
        protocol.close_fds(fds)
        raise ValueError(f"a request carries 3 fds (stdin, stdout, stderr), not {len(fds)}")
    os.setsid()
    for target, fd in enumerate(fds):
        os.dup2(fd, target)
        os.close(fd)
    _reset_signals()
    _take_limits(message)
    os.chdir(message["cwd"])
    os.environ.clear()
    os.environ.update(message["env"])
    args = list(message["args"])
    sys.argv = [message["argv0"], *args]
    sys.stdout.reconfigure(line_buffering=os.isatty(1))  # type: ignore[union-attr]
    record.stop()
    # Changed test modules: the manager dropped their bytecode; import them afresh.
    for name, _path in message.get("reload", []):
        sys.modules.pop(name, None)
    importlib.invalidate_caches()
    # atexit handlers registered from here on are this run's own, and run as they would cold.
    atexit._clear()
    forks.run()
    try:
        return reuse.run_pytest(args)
    finally:
        atexit._run_exitfuncs()


def _outside(held: set[str]) -> list[str]:
    """Modules this run imported from outside the project: worth importing in the snapshot."""
    inside = reuse.rootdir + os.sep
    found = []
    for name in set(sys.modules) - held:
        path = getattr(sys.modules.get(name), "__file__", None)
        if isinstance(path, str) and not path.startswith(inside) and not name.startswith("snapd"):
            found.append(name)
    return sorted(found)


def _take_limits(message: protocol.Message) -> None:
    """The client's umask and resource limits, where this process may take them."""
    os.umask(int(message.get("umask", 0o022)))
    for name, (soft, hard) in message.get("rlimits", {}).items():
        limit = getattr(resource, name, None)
        if limit is None:
            continue
        try:
            resource.setrlimit(limit, (soft, hard))
        except (ValueError, OSError):  # a hard limit above ours: take what we can
            try:
                resource.setrlimit(limit, (min(soft, resource.getrlimit(limit)[1]), hard))
            except (ValueError, OSError):
                pass


def _reset_signals() -> None:
    signal.signal(signal.SIGINT, signal.default_int_handler)
    for sig in (signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT, signal.SIGCHLD, signal.SIGWINCH):
        signal.signal(sig, signal.SIG_DFL)


def _let_go_of_the_terminal() -> None:
    """Point 0, 1 and 2 at /dev/null: whoever reads the client's output through a pipe (an
    IDE, CI, ``| tee``) sees its end once the client exits, not once this process has also
    torn its memory down (the kernel closes fds last)."""
    null = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(null, fd)
    os.close(null)


def _flush() -> None:
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
