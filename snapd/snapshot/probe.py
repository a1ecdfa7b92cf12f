"""Can pytest start again in this snapshot's process? Asked once, before the session snapshot
serves.

Plain pytest runs ``pytest_configure`` and ``pytest_sessionstart`` once per process. A request
child runs them a second time, in a process where the snapshot's own session already ran them:
a conftest that changes process-wide state that cannot be set twice (Django's
``settings.configure()``, an admin site registration) raises there, and every run would end in
an INTERNALERROR that a cold run does not have. The probe forks a child that starts and ends a
session as a request child does (the built-in after-fork hooks run, the snapshot's conftest
modules are reused), without collecting or running anything; if that fails,
runs of this chain are served from the base snapshot (where the conftests are imported fresh),
and the reason is shown.
"""

from __future__ import annotations

import os
import re
import select
import signal
import sys
import time

import pytest

from snapd.snapshot import lifetime, reuse

_TIMEOUT = 60.0
_KEPT_OUTPUT = 16384
# Exit codes of a session that started and ended well: OK, and NO_TESTS_COLLECTED.
_FINE = (0, 5)
# The probe child's own, when an after-fork hook failed: each run reports that itself.
_HOOK_FAILED = 120
# The last line of a traceback: ``name.of.Exception: message`` (frames are indented).
_ERROR_LINE = re.compile(
    r"^(?:INTERNALERROR> )?(?:E\s+)?((?:[a-z_]\w*\.)*[A-Z][a-z]\w*(?::\s.*)?)$"
)


def rerun_problem(args: list[str]) -> str:
    """Start and end a pytest session of ``args`` in a forked child as a request child would;
    why that failed, or ''."""
    read_end, write_end = os.pipe()
    sys.stdout.flush()
    sys.stderr.flush()
    parent = os.getpid()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the probe child; its exit code is the result
        code = 1
        try:
            os.close(read_end)
            lifetime.die_with_parent(parent)
            code = _probe(args, write_end)
        finally:
            os._exit(code)
    os.close(write_end)
    output, status = _collect(read_end, pid)
    if status in _FINE or status == _HOOK_FAILED:
        return ""
    what = "does not finish" if status is None else f"fails with exit code {status}"
    error = _last_error(output)
    return (
        f"a second pytest start in one process {what}"
        f"{f' ({error})' if error else ''}, as a pytest_configure that sets process-wide"
        " state once may"
    )


def _probe(args: list[str], out: int) -> int:  # pragma: no cover - runs in the probe child
    from snapd import forks

    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    os.dup2(out, 1)
    os.dup2(out, 2)
    try:
        # Only the built-in hooks: what they fix (inherited connections) the probe's pytest may
        # touch too. The project's own would run once more than the runs, where a user sees.
        forks.run(registered=False)
    except SystemExit:
        return _HOOK_FAILED
    try:
        return reuse.run_pytest([*args, "-qq"], extra=[_StartAndEnd()])
    finally:
        sys.stdout.flush()
        sys.stderr.flush()


class _StartAndEnd:
    """Neither collect nor run: a session that only starts and ends."""

    @pytest.hookimpl(tryfirst=True)
    def pytest_collection(self) -> bool:
        return True

    @pytest.hookimpl(tryfirst=True)
    def pytest_runtestloop(self) -> bool:
        return True


def _collect(fd: int, pid: int) -> tuple[str, int | None]:
    """Read the child's output until it closes it (or the time is up), then reap it."""
    kept = b""
    deadline = time.monotonic() + _TIMEOUT
    try:
        while True:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([fd], [], [], left)[0]:
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
                return kept.decode(errors="replace"), None
            chunk = os.read(fd, 65536)
            if not chunk:
                break
            kept = (kept + chunk)[-_KEPT_OUTPUT:]
    finally:
        os.close(fd)
    _, status = os.waitpid(pid, 0)
    return kept.decode(errors="replace"), os.waitstatus_to_exitcode(status)


def _last_error(output: str) -> str:
    """The last exception line of a traceback in ``output``, cut short."""
    found = ""
    for line in output.splitlines():
        match = _ERROR_LINE.match(line.rstrip())
        if match:
            found = match[1]
    return found[:200]
