"""Watch to be fast: file events start rebuilds early. (Every request still stats.)"""

from __future__ import annotations

import fnmatch
import logging
import os
import threading
from collections.abc import Callable, Iterable

import watchfiles

from snapd import config, fileset

log = logging.getLogger("snapd.manager")


def ignoring(paths: Iterable[str], root: str, globs: tuple[str, ...]) -> set[str]:
    """``paths`` without those matching the configured ``watch_ignore`` globs.

    >>> sorted(ignoring(["/p/a.py", "/p/logs/x.log"], "/p", ("logs/*",)))
    ['/p/a.py']
    """
    return {
        path
        for path in paths
        if not any(fnmatch.fnmatch(os.path.relpath(path, root), glob) for glob in globs)
    }


class _Filter(watchfiles.DefaultFilter):
    ignore_dirs = fileset.IGNORED_DIRS


def watch(
    root: str,
    on_change: Callable[[set[str]], None],
    stop: threading.Event,
    settings: config.Settings,
) -> None:
    """Call ``on_change`` with the changed paths of each debounced batch, until ``stop``."""
    try:
        for changes in watchfiles.watch(
            root,
            watch_filter=_Filter(),
            debounce=50,
            step=20,
            stop_event=stop,
            force_polling=settings.poll or None,
            raise_interrupt=False,
        ):
            paths = {path for _, path in changes}
            on_change(ignoring(paths, root, settings.watch_ignore))
    except Exception:
        log.exception("the watcher stopped; requests still stat every file they depend on")
