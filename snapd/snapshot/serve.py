"""The loop every snapshot runs once built: fork what the manager asks for, reap, report.

Messages from the manager: ``spare`` (fork a request child that waits for its request),
``fork`` (base only: fork a session snapshot on the socket sent along), ``import`` (modules
that runs imported late, to hold from now on), ``stop``.
Messages to it: ``spare`` (pid, with the child's request socket), ``exited`` (pid, status),
``imported`` (the new files), ``refused`` (the process has threads and cannot fork safely).
Request children report the pages they wrote on a datagram socket of their own (see ``pages``).
"""

from __future__ import annotations

import contextlib
import importlib
import os
import select
import signal
import socket
import sys
import threading
import warnings
from collections.abc import Callable
from typing import NoReturn

from snapd import protocol
from snapd.snapshot import pages, record, request

ForkSession = Callable[[socket.socket, protocol.Message], NoReturn]
# The pages the latest request child wrote: the spares forked next copy them ahead.
_written = b""


def serve(control: socket.socket, fork_session: ForkSession | None = None) -> None:
    """Answer the manager until it says ``stop`` or goes away; then wait for the children.

    A session snapshot tears its fixtures down only after the runs that use them ended, and
    a base exits only after its sessions did (they die with it).
    """
    global _written
    wake_r, wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
    reports, report = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
    previous = signal.signal(signal.SIGCHLD, lambda *_: None)
    old_wakeup = signal.set_wakeup_fd(wake_w)
    try:
        while True:
            readable, _, _ = select.select([control.fileno(), wake_r, reports.fileno()], [], [])
            if reports.fileno() in readable:
                _written = reports.recv(16 * pages.MAX_RANGES)
            if wake_r in readable:
                with contextlib.suppress(BlockingIOError):
                    os.read(wake_r, 4096)
                _reap(control)
            if control.fileno() in readable:
                got = protocol.recv(control)
                if got is None or got[0]["op"] == "stop":
                    return
                message, fds = got
                if message["op"] == "import":
                    protocol.close_fds(fds)
                    _import(control, message.get("modules", []))
                    continue
                child = _fork(
                    control, message, fds, (wake_r, wake_w, reports), report, fork_session
                )
                if child is not None:
                    child()
    finally:
        signal.set_wakeup_fd(old_wakeup)
        signal.signal(signal.SIGCHLD, previous)
        os.close(wake_r)
        os.close(wake_w)
        reports.close()
        report.close()
    _wait_for_children()


def _wait_for_children() -> None:
    while True:
        try:
            os.waitpid(-1, 0)
        except ChildProcessError:
            return


def _fork(
    control: socket.socket,
    message: protocol.Message,
    fds: list[int],
    own: tuple[int, int, socket.socket],
    report: socket.socket,
    fork_session: ForkSession | None,
) -> Callable[[], NoReturn] | None:
    """Fork for ``message``; in the child, return what it runs next.

    ``own`` are this loop's fds, which a child closes; a request child keeps ``report``.
    """
    threads = thread_names()
    if len(threads) > 1:
        protocol.close_fds(fds)
        protocol.send(control, {"op": "refused", "threads": threads})
        return None
    if message["op"] == "spare":
        ours, theirs = socket.socketpair()
    elif message["op"] == "fork" and fork_session is not None and len(fds) == 1:
        ours = socket.socket(fileno=fds[0])
        theirs = None
    else:
        protocol.close_fds(fds)
        protocol.send(control, {"op": "error", "message": f"cannot {message['op']!r} here"})
        return None
    sys.stdout.flush()
    sys.stderr.flush()
    pid = os.fork()
    if pid == 0:
        control.close()
        wake_r, wake_w, reports = own
        os.close(wake_r)
        os.close(wake_w)
        reports.close()
        signal.set_wakeup_fd(-1)
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        if theirs is not None:
            theirs.close()
            pages.populate(_written)
            return lambda: request.wait_and_run(ours, report)
        report.close()
        assert fork_session is not None
        return lambda: fork_session(ours, message)
    if theirs is not None:
        protocol.send(control, {"op": "spare", "pid": pid}, [theirs.fileno()])
        theirs.close()
    ours.close()
    return None


def import_quietly(names: list[str]) -> None:
    """Import what runs imported late (a plugin's lazy import, say): under this process's
    assertion rewriting, as the run itself would have."""
    for name in names:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                importlib.import_module(name)
        except BaseException:
            continue


def _import(control: socket.socket, names: list[str]) -> None:
    before = set(record.module_files())
    record.start()
    import_quietly(names)
    record.stop()
    added = set(record.module_files()) - before
    entries, _ = record.collect(added)
    threads = thread_names()
    protocol.send(
        control,
        {
            "op": "imported",
            "files": entries,
            "modules": len(sys.modules),
            "threads": threads if len(threads) > 1 else [],
        },
    )


def _reap(control: socket.socket) -> None:
    while True:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
        protocol.send(
            control, {"op": "exited", "pid": pid, "code": os.waitstatus_to_exitcode(status)}
        )


def thread_names() -> list[str]:
    """Every thread of this process: native ones too, which ``threading`` does not know of.

    Python threads are named as ``threading`` names them, others by their kernel name. Native
    threads first get the chance to stop that a fork gives them (see ``_run_fork_handlers``).
    """
    known = {t.native_id: t.name for t in threading.enumerate()}
    if any(int(tid) not in known for tid in os.listdir("/proc/self/task")):
        _run_fork_handlers()
    names = []
    for tid in sorted(os.listdir("/proc/self/task"), key=int):
        try:
            with open(f"/proc/self/task/{tid}/comm") as f:
                comm = f.read().strip()
        except OSError:
            continue
        names.append(f"{known.get(int(tid), comm)!r} (tid {tid})")
    return names


def _run_fork_handlers() -> None:
    """Fork a child that leaves at once, for the ``pthread_atfork`` handlers it runs here.

    Native thread pools that are safe to fork stop their threads in such a handler and start
    them again when next used: OpenBLAS, which numpy loads, parks its workers this way. What
    still runs afterwards has no such handler and makes a fork unsafe.
    """
    with warnings.catch_warnings():
        # Python 3.12+ warns about forking a process with threads: here that is the point.
        warnings.simplefilter("ignore", DeprecationWarning)
        pid = os.fork()
    if pid == 0:
        os._exit(0)
    os.waitpid(pid, 0)
