"""File sets: what a snapshot's contents depend on, and how to tell whether that moved.

An entry maps a path to ``(mtime_ns, size, digest)``, or to ``None`` for a path that must stay
absent (a conftest.py or config file pytest looked for and did not find). Checking stats every
path; the digest is read only when mtime_ns or size moved, so a ``touch`` keeps a snapshot warm.

>>> import tempfile
>>> with tempfile.NamedTemporaryFile("w", suffix=".py") as f:
...     entries = {f.name: stamp(f.name)}
...     _ = f.write("x = 1"); f.flush()
...     changed(entries) == [f.name]
True
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable, MutableMapping

# Folders of tool state and caches: what a run writes there is output, never a dependency.
IGNORED_DIRS = (
    ".git", ".hg", ".svn", "__pycache__", ".pytest_cache", ".hypothesis", ".mypy_cache",
    ".ruff_cache", "node_modules", ".tox", ".nox", ".venv", "venv",
)  # fmt: skip
_IGNORED_PARTS = tuple(f"/{name}/" for name in IGNORED_DIRS)

Stamp = tuple[int, int, str]
Entries = dict[str, "Stamp | None"]


def ignored(path: str) -> bool:
    """Whether ``path`` lies in a cache or tool-state folder.

    >>> ignored("/src/app/.pytest_cache/v/cache/nodeids"), ignored("/src/app/models.py")
    (True, False)
    """
    return any(part in path for part in _IGNORED_PARTS)


def digest(path: str) -> str:
    with open(path, "rb") as f:
        return hashlib.blake2b(f.read(), digest_size=16).hexdigest()


def stamp(path: str) -> Stamp | None:
    """The current stamp of ``path``, or ``None`` when it does not exist.

    A path ending in ``/`` is a directory: only its mtime counts (it moves when an entry is
    added, removed or renamed).
    """
    try:
        info = os.stat(path)
    except (FileNotFoundError, NotADirectoryError, PermissionError):
        return None
    if path.endswith("/"):
        return (info.st_mtime_ns, 0, "")
    try:
        content = digest(path)
        after = os.stat(path)
    except OSError:  # unreadable (or a directory): its stat alone has to do
        return (info.st_mtime_ns, info.st_size, "")
    if (after.st_mtime_ns, after.st_size) != (info.st_mtime_ns, info.st_size):
        # Saved while being read: the digest may be of either content. One that matches no
        # content makes the next check see a change.
        content = ""
    return (info.st_mtime_ns, info.st_size, content)


def changed(entries: MutableMapping[str, Stamp | None]) -> list[str]:
    """The paths whose content, or existence, differs from their recorded stamp.

    A path that was only touched (new mtime, same content) gets its stamp refreshed in place,
    so it is not read again on the next check.
    """
    moved = []
    stat = os.stat  # on every request, for thousands of files: keep the loop lean
    # A copy: the manager's thread reading a snapshot may add entries meanwhile.
    for path, recorded in list(entries.items()):
        try:
            info = stat(path)
        except OSError:  # gone, or out of reach now: changed unless it was absent before
            if recorded is not None:
                moved.append(path)
            continue
        if recorded is None:
            moved.append(path)
        elif info.st_mtime_ns == recorded[0] and info.st_size == recorded[1]:
            continue
        elif path.endswith("/"):  # a folder: only its mtime counts
            if info.st_mtime_ns != recorded[0]:
                moved.append(path)
        else:
            try:
                content = digest(path)
            except OSError:
                moved.append(path)
                continue
            if content == recorded[2]:
                entries[path] = (info.st_mtime_ns, info.st_size, content)
            else:
                moved.append(path)
    return moved


def drop_bytecode(paths: Iterable[str]) -> None:
    """Delete the cached bytecode of changed sources, pytest's rewritten ones included.

    Bytecode is checked against its source's mtime in whole seconds and its size: after an
    edit within the same second that keeps the size, Python would load the old code.
    """
    for path in paths:
        if not path.endswith(".py"):
            continue
        directory, name = os.path.split(path)
        cache = os.path.join(directory, "__pycache__")
        prefix = name[:-3] + "."
        try:
            names = os.listdir(cache)
        except OSError:
            continue
        for cached in names:
            if cached.startswith(prefix) and cached.endswith(".pyc"):
                try:
                    os.unlink(os.path.join(cache, cached))
                except OSError:
                    pass


def stamps(paths: Iterable[str]) -> Entries:
    return {path: stamp(path) for path in paths}
