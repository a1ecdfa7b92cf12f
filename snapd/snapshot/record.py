"""What a snapshot read while it was built: the file set the manager checks on every request.

An audit hook (``open`` fires before the open, so failed probes show up too) records each file
opened for reading with its stat at that moment; bytecode reads count as reads of their source.
Files opened for writing are outputs, not dependencies. The same hook, in every snapshot process
and request child, refuses bytecode that may be older than its source.
"""

from __future__ import annotations

import errno
import os
import sys
import time
from collections.abc import Callable
from typing import Any

from snapd import fileset

_IGNORED_PREFIXES = ("/proc/", "/sys/", "/dev/")
# The interpreter's own standard library never changes under a running project. (Not
# sysconfig's platstdlib: in a venv that is the venv's lib folder, site-packages included.)
_STDLIB = os.path.dirname(os.__file__) + os.sep
_BASE_SITE = os.path.join(_STDLIB, "site-packages") + os.sep


def _stdlib(path: str) -> bool:
    return path.startswith(_STDLIB) and not path.startswith(_BASE_SITE)


_opened: dict[str, tuple[int, int] | None] = {}
_active = False
# Told how many modules are loaded, now and then while recording: the build's progress.
_progress: Callable[[int], object] | None = None
_PROGRESS_EVERY = 0.25
_last_progress = 0.0


def start(progress: Callable[[int], object] | None = None) -> None:
    """Begin recording (the hook is added once; audit hooks cannot be removed)."""
    global _active, _progress
    if not getattr(sys, "_snapd_hook", False):
        sys.addaudithook(_hook)
        sys._snapd_hook = True  # type: ignore[attr-defined]
    _opened.clear()
    _progress = progress
    _active = True


def stop() -> None:
    global _active, _progress
    _active = False
    _progress = None


def _hook(event: str, args: tuple[Any, ...]) -> None:
    if event == "open":
        _open(*args)
    elif event == "import" and _active:
        _report_progress()


def _open(path: object, mode: str | None, flags: int) -> None:
    if isinstance(path, bytes):
        path = os.fsdecode(path)
    if not isinstance(path, str) or not _reading(mode, flags):
        return
    if path.endswith(".pyc"):
        refuse_stale_bytecode(path)
    if not _active:
        return
    path = source_of(os.path.abspath(path))
    if path in _opened or path.startswith(_IGNORED_PREFIXES) or fileset.ignored(path):
        return
    try:
        info = os.stat(path)
    except OSError:
        _opened[path] = None
        return
    if not os.path.isdir(path):
        _opened[path] = (info.st_mtime_ns, info.st_size)


def _report_progress() -> None:
    global _last_progress, _progress
    now = time.monotonic()
    if _progress is None or now - _last_progress < _PROGRESS_EVERY:
        return
    _last_progress = now
    report, _progress = _progress, None  # not re-entered from what it imports or opens
    try:
        report(len(sys.modules))
    finally:
        _progress = report


def refuse_stale_bytecode(path: str) -> None:
    """Raise ``OSError`` for cached bytecode that is not newer than its source.

    Python (and pytest's assertion rewriter) trust a ``.pyc`` whose recorded source mtime, in
    whole seconds, and size match: after an edit within the same second that kept the size,
    they would load the old code. Bytecode written before the source's last change cannot be
    of its current content; the importer treats a failed read as no cache and compiles the
    source (so does pytest).
    """
    source = source_of(path)
    if source == path or _stdlib(source):
        return
    try:
        if os.stat(path).st_mtime_ns > os.stat(source).st_mtime_ns:
            return
    except OSError:
        return
    raise OSError(errno.ESTALE, "bytecode not newer than its source", path)


def _reading(mode: str | None, flags: int) -> bool:
    if mode is not None:
        return not any(c in mode for c in "wax+")
    return (flags & os.O_ACCMODE) == os.O_RDONLY and not flags & os.O_CREAT


def source_of(path: str) -> str:
    """The source of a cached bytecode file (pytest's rewritten ones too), else ``path``."""
    directory, name = os.path.split(path)
    if name.endswith(".pyc") and os.path.basename(directory) == "__pycache__":
        return os.path.join(os.path.dirname(directory), name.split(".", 1)[0] + ".py")
    return path


def module_files(modules: dict[str, Any] | None = None) -> dict[str, str]:
    """Map each loaded module's source file to its name, leaving out the standard library."""
    found = {}
    for name, module in list((modules or sys.modules).items()):
        path = getattr(module, "__file__", None)
        if isinstance(path, str) and not _stdlib(path):
            found[source_of(os.path.abspath(path))] = name
    return found


def collect(paths: set[str]) -> tuple[fileset.Entries, list[str]]:
    """Stamp ``paths`` plus everything opened while recording.

    Returns the entries and the paths that changed since they were read: a snapshot holding
    those is stale before it is born.
    """
    wanted = {p for p in paths | set(_opened) if not _stdlib(p)}
    entries = fileset.stamps(sorted(wanted))
    # Against the stamps themselves, not a stat before them: a save between the two would
    # give a stamp of content this process never read.
    stale = []
    for path, seen in _opened.items():
        if path not in entries:  # the standard library
            continue
        stamped = entries[path]
        if (stamped and stamped[:2]) != seen:
            stale.append(path)
    return entries, stale
