"""Run a command on a real pseudo-terminal, as a user's shell would, and talk to it."""

from __future__ import annotations

import fcntl
import os
import re
import select
import struct
import subprocess
import termios
import time
from collections.abc import Sequence


class PtyProcess:
    """``argv`` as the session leader and foreground job of a new pty of ``rows`` x ``cols``."""

    def __init__(
        self, argv: Sequence[str], cwd: str, env: dict[str, str], rows: int = 24, cols: int = 80
    ) -> None:
        self.master, slave = os.openpty()
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))
        self.process = subprocess.Popen(
            argv,
            cwd=cwd,
            env={**env, "TERM": "xterm-256color"},
            stdin=slave,
            stdout=slave,
            stderr=slave,
            start_new_session=True,
            preexec_fn=lambda: fcntl.ioctl(0, termios.TIOCSCTTY, 0),
        )
        os.close(slave)
        self.output = b""

    def _read(self, timeout: float) -> bool:
        """Read what is there within ``timeout``; False at end of output."""
        ready, _, _ = select.select([self.master], [], [], timeout)
        if not ready:
            return True
        try:
            data = os.read(self.master, 65536)
        except OSError:  # EIO: every holder of the slave side has gone
            return False
        self.output += data
        return bool(data)

    def expect(self, pattern: str, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while not re.search(pattern.encode(), self.output):
            if time.monotonic() > deadline or (not self._read(0.1) and not self._alive()):
                text = self.output.decode(errors="replace")
                raise AssertionError(f"{pattern!r} not seen; output so far:\n{text}")

    def send(self, text: str) -> None:
        os.write(self.master, text.encode())

    def _alive(self) -> bool:
        return self.process.poll() is None

    def wait(self, timeout: float = 60) -> int:
        deadline = time.monotonic() + timeout
        while self._read(0.1) and time.monotonic() < deadline:
            pass
        code = self.process.wait(timeout=max(1.0, deadline - time.monotonic()))
        os.close(self.master)
        return code

    @property
    def text(self) -> str:
        return self.output.decode(errors="replace").replace("\r\n", "\n")
