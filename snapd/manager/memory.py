"""What the snapshots cost: proportional set size, which splits shared copy-on-write pages
fairly between the processes that share them (RSS would count them once per process)."""

from __future__ import annotations

from collections.abc import Iterable

import psutil


def pss_mb(pids: Iterable[int]) -> float:
    """The summed PSS of ``pids`` in MiB; processes that are gone count nothing."""
    total = 0
    for pid in pids:
        try:
            total += psutil.Process(pid).memory_full_info().pss
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return total / (1024 * 1024)
