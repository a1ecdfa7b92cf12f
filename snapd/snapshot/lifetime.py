"""Snapshots die with their parent, so a killed manager leaves nothing behind."""

from __future__ import annotations

import ctypes
import os
import signal

_PR_SET_PDEATHSIG = 1


def die_with_parent(parent: int) -> None:
    """Get SIGKILL when ``parent`` dies; exit now if it already has.

    PR_SET_PDEATHSIG is not inherited by fork, and fires when the parent *thread* dies; the
    manager spawns base processes from a thread that lives as long as it does.
    """
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    if os.getppid() != parent:
        os._exit(0)
