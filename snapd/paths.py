"""Where a project's daemon lives: its rootdir, and the per-user runtime directory.

One manager serves one project (its rootdir). Its socket, pid file, lock and log sit in
``$SNAPD_RUNTIME_DIR`` (default ``$XDG_RUNTIME_DIR/snapd`` or ``/tmp/snapd-$UID``), in a folder
named by a hash of the rootdir so the socket path stays far below the 108-byte limit.

This module is on the client's hot path: plain strings, no pathlib or dataclasses.
"""

from __future__ import annotations

import os
import stat

# pytest's config files, in its order, with the section that makes each one count.
_CONFIG_SECTIONS: dict[str, tuple[str, ...]] = {
    "pytest.toml": (),
    ".pytest.toml": (),
    "pytest.ini": (),
    ".pytest.ini": (),
    "pyproject.toml": ("[tool.pytest]", "[tool.pytest.ini_options]"),
    "tox.ini": ("[pytest]",),
    "setup.cfg": ("[tool:pytest]",),
}


class RuntimeDirError(Exception):
    """The runtime directory is missing, not ours, or readable by others."""


def find_rootdir(start: str) -> str:
    """The rootdir pytest would pick from ``start`` when given no path arguments.

    As ``_pytest.config.findpaths`` does: the nearest ancestor with a pytest config file; else
    the nearest with a pyproject.toml; else the nearest with a setup.py; else ``start``.

    >>> find_rootdir("/")
    '/'
    """
    start = os.path.realpath(start)
    ancestors = _ancestors(start)
    for directory in ancestors:
        for name, sections in _CONFIG_SECTIONS.items():
            candidate = os.path.join(directory, name)
            if os.path.isfile(candidate) and (not sections or _has_section(candidate, sections)):
                return directory
    for fallback in ("pyproject.toml", "setup.py"):
        for directory in ancestors:
            if os.path.isfile(os.path.join(directory, fallback)):
                return directory
    return start


def _ancestors(path: str) -> list[str]:
    found = [path]
    while (parent := os.path.dirname(found[-1])) != found[-1]:
        found.append(parent)
    return found


def _has_section(path: str, sections: tuple[str, ...]) -> bool:
    try:
        with open(path, encoding="utf-8") as f:
            return any(line.strip() in sections for line in f)
    except (OSError, UnicodeDecodeError):
        return False


def runtime_base() -> str:
    configured = os.environ.get("SNAPD_RUNTIME_DIR")
    if configured:
        return configured
    xdg = os.environ.get("XDG_RUNTIME_DIR")
    if xdg and os.path.isdir(xdg):
        return os.path.join(xdg, "snapd")
    return f"/tmp/snapd-{os.getuid()}"


def ensure_private_dir(path: str) -> str:
    """Create ``path`` mode 0700, or check that the existing one is ours and private."""
    try:
        os.makedirs(path, mode=0o700)
    except FileExistsError:
        pass
    info = os.lstat(path)
    if not stat.S_ISDIR(info.st_mode):
        raise RuntimeDirError(f"{path} is not a directory")
    if info.st_uid != os.getuid():
        raise RuntimeDirError(f"{path} belongs to uid {info.st_uid}, not to you")
    if stat.S_IMODE(info.st_mode) & 0o077:
        raise RuntimeDirError(
            f"{path} is accessible to other users (mode {stat.S_IMODE(info.st_mode):o}); "
            "it must be 0700"
        )
    return path


class ProjectPaths:
    """The files of one project's daemon.

    >>> ProjectPaths("/src/app", "/run/snapd/1234").socket
    '/run/snapd/1234/sock'
    """

    def __init__(self, rootdir: str, directory: str) -> None:
        self.rootdir = rootdir
        self.directory = directory
        self.socket = os.path.join(directory, "sock")
        self.pidfile = os.path.join(directory, "pid")
        self.lock = os.path.join(directory, "lock")
        self.log = os.path.join(directory, "log")
        # Learned facts that outlive a daemon (the modules to import ahead).
        self.state = os.path.join(directory, "state.json")

    @classmethod
    def for_rootdir(cls, rootdir: str) -> ProjectPaths:
        return cls(rootdir, os.path.join(runtime_base(), _sha256_hex(rootdir.encode())[:16]))

    def create(self) -> None:
        ensure_private_dir(os.path.dirname(self.directory))
        ensure_private_dir(self.directory)


def _sha256_hex(data: bytes) -> str:
    """``hashlib.sha256(data).hexdigest()`` without importing hashlib, which loads OpenSSL: that
    costs the client milliseconds on every run. The builtin module is hashlib's own fallback."""
    for name in ("_sha2", "_sha256"):  # Python 3.12+, then 3.10 and 3.11
        try:
            return str(__import__(name).sha256(data).hexdigest())
        except ImportError:
            continue
    import hashlib

    return hashlib.sha256(data).hexdigest()
