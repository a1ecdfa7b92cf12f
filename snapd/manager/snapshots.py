"""The manager's handle on one snapshot process: its state, file set, spares and running
requests, kept current by a thread that reads the snapshot's control socket."""

from __future__ import annotations

import logging
import os
import queue
import socket
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from snapd import fileset, protocol

log = logging.getLogger("snapd.manager")

BUILDING, READY, FAILED, INVALID, DEAD = "building", "ready", "failed", "invalid", "dead"
THREADS = "threads alive, cannot fork: "


@dataclass
class Spare:
    """A request child forked ahead, waiting on ``sock`` for its request."""

    pid: int
    sock: socket.socket
    exited: threading.Event = field(default_factory=threading.Event)
    code: int | None = None
    # Its snapshot (its parent) died: nobody will report how it ended but itself.
    orphaned: threading.Event = field(default_factory=threading.Event)

    def finish(self, code: int) -> None:
        if not self.exited.is_set():
            self.code = code
            self.exited.set()


def _wait_gone(pid: int, timeout: float) -> None:
    """Wait until ``pid`` (not our child: a snapshot's) no longer exists."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        except PermissionError:
            pass
        time.sleep(0.02)  # another process's end cannot be waited on, only seen


class Snapshot:
    def __init__(
        self,
        layer: str,
        control: socket.socket,
        on_change: threading.Condition,
        process: subprocess.Popen[bytes] | None = None,
        on_death: Callable[[Snapshot], None] | None = None,
    ) -> None:
        self.layer = layer
        self.process = process
        # Told when the process ends without having been asked to (killed, crashed).
        self.on_death = on_death
        self.wanted = True
        self.control = control
        self.changed = on_change
        self.state = BUILDING
        self.reason = ""
        self.pid: int | None = None
        self.files: fileset.Entries = {}
        # ``files`` grows when the snapshot imports more: each change makes a new version.
        self.files_version = 0
        # When the last check of ``files`` that found nothing changed began, and the version
        # it checked.
        self.unchanged: tuple[float, int] = (float("-inf"), -1)
        self.test_modules: dict[str, str] = {}
        self.info: dict[str, Any] = {}
        self.born_stale = False
        self.ended = threading.Event()  # the process is gone (whatever its last state)
        self.progress: dict[str, Any] = {"phase": "starting", "modules": 0}
        self.started = time.monotonic()
        self.build_seconds: float | None = None
        self.spares: queue.Queue[Spare] = queue.Queue()
        self.running: dict[int, Spare] = {}
        self._waiting = 0  # runs waiting for a spare
        self._send_lock = threading.Lock()
        self._reader = threading.Thread(target=self._read, name=f"snapshot-{layer}", daemon=True)
        self._reader.start()

    def send(self, message: protocol.Message, fds: list[int] | None = None) -> bool:
        try:
            with self._send_lock:
                protocol.send(self.control, message, fds or [])
            return True
        except OSError:
            return False

    def serving(self) -> bool:
        return self.state == READY

    def invalidate(self, reason: str) -> None:
        with self.changed:
            if self.state in (READY, BUILDING):
                self.state = INVALID
                self.reason = reason
                log.info("%s snapshot %s invalid: %s", self.layer, self.pid, reason)
            self.changed.notify_all()
        self.retire()

    def retire(self) -> None:
        """Drop the spares; stop the process once no request of it runs."""
        self.wanted = False
        if self.running:
            self._drop_spares()
        else:
            self.stop()

    def stop(self) -> None:
        """Drop the spares (they exit when their socket closes) and stop the process; it
        waits for its running children itself."""
        self.wanted = False
        self._drop_spares()
        self.send({"op": "stop"})

    def _drop_spares(self) -> None:
        while True:
            try:
                spare = self.spares.get_nowait()
            except queue.Empty:
                return
            spare.sock.close()

    def take_spare(self, timeout: float) -> Spare | None:
        """A spare to run a request in; another is forked at once for the next one."""
        deadline = time.monotonic() + timeout
        spare: Spare | None = None
        try:
            spare = self.spares.get_nowait()
        except queue.Empty:
            if not self.send({"op": "spare"}):
                return None
            with self._send_lock:
                self._waiting += 1
            try:
                while spare is None:
                    try:
                        spare = self.spares.get(timeout=0.05)
                    except queue.Empty:
                        if self.state != READY or time.monotonic() > deadline:
                            return None
            finally:
                with self._send_lock:
                    self._waiting -= 1
        self.running[spare.pid] = spare
        self.send({"op": "spare"})
        return spare

    def release(self, spare: Spare) -> None:
        self.running.pop(spare.pid, None)
        if self.state != READY and not self.running:
            self.send({"op": "stop"})

    def _read(self) -> None:
        while True:
            try:
                got = protocol.recv(self.control)
            except (OSError, protocol.ProtocolError) as e:
                log.warning("%s snapshot %s: %s", self.layer, self.pid, e)
                got = None
            if got is None:
                break
            self._handle(*got)
        with self.changed:
            if self.state != FAILED:
                self.state = DEAD
                self.reason = self.reason or "the process ended"
            self.changed.notify_all()
        for spare in list(self.running.values()):
            spare.orphaned.set()
        self._drop_spares()  # idle ones of a dead snapshot exit when their socket closes
        self.control.close()
        # The socket can end before the process does (a reset while it tears its fixtures
        # down): it has ended when its pid is gone.
        if self.process is not None:
            self.process.wait()
        elif self.pid:
            _wait_gone(self.pid, timeout=60)
        self.ended.set()
        if self.wanted and self.on_death is not None:
            log.warning("%s snapshot %s died unasked", self.layer, self.pid)
            self.on_death(self)

    def _handle(self, message: protocol.Message, fds: list[int]) -> None:
        op = message["op"]
        if op == "spare" and len(fds) == 1:
            spare = Spare(int(message["pid"]), socket.socket(fileno=fds[0]))
            # One idle spare is enough: after a burst, the refills of every concurrent run
            # would otherwise stay behind. A closed spare exits.
            if self.state == READY and self.wanted and self.spares.qsize() <= self._waiting:
                self.spares.put(spare)
            else:
                spare.sock.close()
            return
        protocol.close_fds(fds)
        if op == "exited":
            child = self.running.get(int(message["pid"]))
            if child is not None:
                child.finish(int(message["code"]))
        elif op in ("ready", "failed"):
            self._built(message)
        elif op == "progress":
            with self.changed:
                self.progress = {"phase": message.get("phase"), "modules": message.get("modules")}
                self.changed.notify_all()
        elif op == "imported":
            with self.changed:
                files = message.get("files", {})
                self.files.update({p: (tuple(s) if s else None) for p, s in files.items()})
                self.files_version += 1
                self.info["modules"] = message.get("modules")
            if message.get("threads"):
                self._refuse(message["threads"])
        elif op == "refused":
            self._refuse(message["threads"])
        else:
            log.warning("%s snapshot %s sent %r", self.layer, self.pid, message)

    def _refuse(self, threads: list[str]) -> None:
        with self.changed:
            self.state = FAILED
            self.reason = THREADS + ", ".join(threads)
            self.changed.notify_all()
        log.warning("%s snapshot %s: %s", self.layer, self.pid, self.reason)
        self.retire()

    def _built(self, message: protocol.Message) -> None:
        with self.changed:
            self.pid = int(message.get("pid") or 0) or self.pid
            self.build_seconds = time.monotonic() - self.started
            self.info = {k: v for k, v in message.items() if k not in ("files", "op")}
            self.files = {
                path: (tuple(s) if s else None) for path, s in message.get("files", {}).items()
            }
            self.files_version += 1
            self.test_modules = dict(message.get("test_modules", {}))
            if self.state == INVALID:
                pass  # invalidated while it was built: it never serves
            elif message["op"] == "failed":
                self.state = FAILED
                self.reason = str(message.get("reason", "")).strip()
            elif message.get("stale"):
                self.state = INVALID
                self.reason = f"{message['stale'][0]} changed while it was built"
                self.born_stale = True
            elif message.get("threads"):
                self.state = FAILED
                self.reason = THREADS + ", ".join(message["threads"])
            else:
                self.state = READY
            self.changed.notify_all()
        last = self.reason.strip().splitlines()[-1:]
        log.info("%s snapshot %s %s in %.2fs %s", self.layer, self.pid, self.state,
                 self.build_seconds, last)  # fmt: skip
        if self.state != READY:
            self.retire()
        elif self.layer == "session":  # a base serves rarely: it forks spares on demand
            self.send({"op": "spare"})

    def describe(self) -> dict[str, Any]:
        return {
            "layer": self.layer,
            "pid": self.pid,
            "state": self.state,
            "reason": self.reason,
            "modules": self.info.get("modules"),
            "files": len(self.files),
            "build_seconds": self.build_seconds,
            "age_seconds": time.monotonic() - self.started,
            "running": len(self.running),
            "spares": self.spares.qsize(),
            "profile": self.info.get("profile"),
        }
