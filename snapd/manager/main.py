"""The manager process: ``python -m snapd.manager ROOTDIR``, normally spawned by ``snapd start``.

One manager per project. A flock on the lock file makes it the only one: a second manager for
the same rootdir exits at once, so concurrent starts leave exactly one.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import socket
import sys
from typing import IO

from snapd import config
from snapd.manager.server import Manager
from snapd.paths import ProjectPaths


def take_lock(paths: ProjectPaths) -> IO[str] | None:
    """The held lock file, or ``None`` when another manager holds it."""
    handle = open(paths.lock, "a")  # noqa: SIM115 (held for the manager's lifetime)
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.close()
        return None
    return handle


def run(rootdir: str, *, foreground: bool = False) -> int:
    paths = ProjectPaths.for_rootdir(rootdir)
    paths.create()
    try:
        settings = config.load(rootdir)
    except config.ConfigError as e:
        print(f"snapd: {e}", file=sys.stderr)
        return 2
    lock = take_lock(paths)
    if lock is None:
        print(f"snapd: already running for {rootdir}", file=sys.stderr)
        return 0
    handlers: list[logging.Handler] = [logging.FileHandler(paths.log)]
    if foreground:
        handlers.append(logging.StreamHandler())
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s manager %(message)s", handlers=handlers
    )
    logging.getLogger("watchfiles").setLevel(logging.WARNING)
    with contextlib.suppress(FileNotFoundError):
        os.unlink(paths.socket)
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(paths.socket)
    os.chmod(paths.socket, 0o600)
    listener.listen(128)
    with open(paths.pidfile, "w") as f:
        f.write(f"{os.getpid()}\n")
    logging.getLogger("snapd.manager").info("serving %s on %s", rootdir, paths.socket)
    if settings.extra:
        logging.getLogger("snapd.manager").warning(
            "unknown [tool.snapd] settings ignored: %s", ", ".join(sorted(settings.extra))
        )
    manager = Manager(paths, listener, settings)
    try:
        manager.serve_forever()
    finally:
        lock.close()
    if manager.restart:
        # The lock and socket are closed on exec (Python opens them close-on-exec).
        os.execv(sys.executable, [sys.executable, "-m", "snapd.manager", rootdir])
    return 0


def main() -> None:
    raise SystemExit(run(sys.argv[1], foreground="--foreground" in sys.argv))


if __name__ == "__main__":
    main()
