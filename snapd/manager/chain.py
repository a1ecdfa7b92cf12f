"""A chain: the base snapshot of one key and the session snapshot forked from it.

It picks the deepest snapshot still valid for a request (statting the file sets, so a save
made just before the run is never missed), and rebuilds what an edit invalidated.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from snapd import config, fileset
from snapd.manager import watcher
from snapd.manager.snapshots import BUILDING, FAILED, READY, THREADS, Snapshot

log = logging.getLogger("snapd.manager")

_BASE_BOOT = "from snapd.snapshot.base import main; main()"

# Builds in a row that a file changing under them may make stale before snapd waits for a
# later change; deaths within the window after which a dying snapshot is not rebuilt at once.
_STALE_REBUILDS = 3
# A failed build recorded what it read: a change there may fix it.
_REBUILT_ON_CHANGE = (READY, BUILDING, FAILED)
_DEATH_WINDOW = 60.0
_DEATHS_TOLERATED = 5

Spawn = Callable[[Callable[[], Any]], Any]
Progress = Callable[[dict[str, Any]], None]


@dataclass
class Choice:
    """Where a request runs: the snapshot, the test modules its child must re-import, and
    what the user should be told about it."""

    snapshot: Snapshot
    reload: list[tuple[str, str]]
    notice: str = ""


class Chain:
    def __init__(
        self,
        key: str,
        rootdir: str,
        build_dir: str,
        interpreter: str,
        args: list[str],
        env: dict[str, str],
        state_file: str,
        log_file: str,
        spawn: Spawn,
        settings: config.Settings,
    ) -> None:
        self.key = key
        self.rootdir = rootdir
        self.build_dir = build_dir
        self.interpreter = interpreter
        self.args = args
        self.env = env
        # The part of the environment that keyed this chain (volatile variables left out).
        self.stable_env: dict[str, str] = {}
        self.state_file = state_file
        self.log_file = log_file
        self.spawn = spawn
        self.settings = settings
        self.changed = threading.Condition()
        self.base: Snapshot | None = None
        self.session: Snapshot | None = None
        self.last_used = time.monotonic()
        self.invalidations: list[str] = []
        self._stale_builds = 0
        self._deaths: list[float] = []
        # Every snapshot this chain started: a replaced one may still be tearing down.
        self.every: list[Snapshot] = []

    # -- building ---------------------------------------------------------------------------

    def build(self) -> None:
        """(Re)build from the base; the session follows when the base is ready."""
        ours, theirs = socket.socketpair()
        parent = os.getpid()
        spawned = time.monotonic()  # CLOCK_MONOTONIC is one clock for every process
        try:
            with open(self.log_file, "ab") as log_out:
                process = self.spawn(
                    lambda: subprocess.Popen(
                        [self.interpreter, "-c", _BASE_BOOT, str(theirs.fileno()), str(parent)],
                        pass_fds=[theirs.fileno()],
                        cwd=self.rootdir,
                        env=self.env,
                        stdin=subprocess.DEVNULL,
                        stdout=log_out,
                        stderr=log_out,
                    )
                )
        except BaseException:
            ours.close()
            raise
        finally:
            theirs.close()
        base = Snapshot("base", ours, self.changed, process, on_death=self._died)
        self.every.append(base)
        base.send(
            {
                "op": "build",
                "rootdir": str(self.rootdir),
                "preload": self._preload(),
                "origin": spawned,
            }
        )
        with self.changed:
            self.base = base
        threading.Thread(target=self._after_base, args=(base,), daemon=True).start()

    def _after_base(self, base: Snapshot) -> None:
        with self.changed:
            self.changed.wait_for(lambda: base.state != BUILDING)
        if base.state == READY:
            self.build_session()
        elif base.info.get("preload") or self._preload():
            log.warning("base failed with preloads; dropping them: %s", base.reason)
            self._save_preload([])

    def build_session(self) -> None:
        """Fork a session from the base."""
        base = self.base
        if base is None or not base.serving():
            return
        ours, theirs = socket.socketpair()
        message = {
            "op": "fork",
            "args": self.args,
            "rootdir": str(self.rootdir),
            "cwd": self.build_dir,
            "parent": base.pid,
            "preload": self._preload(),
            "after_fork": list(self.settings.after_fork),
        }
        session = Snapshot("session", ours, self.changed, on_death=self._died)
        self.every.append(session)
        with self.changed:
            self.session = session
        if not base.send(message, [theirs.fileno()]):
            session.invalidate("the base snapshot is gone")
        theirs.close()
        threading.Thread(target=self._after_session, args=(session,), daemon=True).start()

    def _after_session(self, session: Snapshot) -> None:
        with self.changed:
            self.changed.wait_for(lambda: session.state != BUILDING)
        third_party = session.info.get("third_party")
        if session.state == READY and third_party:
            self.learn(third_party)
        if session.born_stale and session is self.session:
            # Something it read changed while it was built: build again, unless a file keeps
            # changing under every build (then the next change or request will).
            self._stale_builds += 1
            if self._stale_builds <= _STALE_REBUILDS:
                self.build_session()
        elif session.state == READY:
            self._stale_builds = 0

    def _died(self, snapshot: Snapshot) -> None:
        """A snapshot ended unasked (killed, crashed): build it again, unless it keeps dying."""
        now = time.monotonic()
        self._deaths = [t for t in self._deaths if now - t < _DEATH_WINDOW] + [now]
        if len(self._deaths) > _DEATHS_TOLERATED:
            log.warning("chain %s: snapshots keep dying; not rebuilding them now", self.key)
            return
        if snapshot is self.base:
            self.build()
        elif snapshot is self.session:
            self.build_session()

    def learn(self, modules: list[str]) -> None:
        """Remember modules from outside the project that runs imported, to import them ahead:
        in the live session snapshot now, in the base and session of every later build."""
        known = self._preload()
        new = [m for m in modules if m not in set(known)]
        if not new:
            return
        self._save_preload(known + new)
        log.info("chain %s: learned %d modules to preload (%s ...)", self.key, len(new), new[0])
        session = self.session
        if session is not None and session.serving():
            session.send({"op": "import", "modules": new})

    def _preload(self) -> list[str]:
        return list(_read_state(self.state_file).get(self.key, {}).get("preload", []))

    def _save_preload(self, modules: list[str]) -> None:
        data = _read_state(self.state_file)
        data.setdefault(self.key, {})["preload"] = modules
        with open(self.state_file + ".tmp", "w") as f:
            json.dump(data, f)
        os.replace(self.state_file + ".tmp", self.state_file)

    # -- serving ----------------------------------------------------------------------------

    def choose(
        self, timeout: float, waiting: Progress | None = None, since: float = float("inf")
    ) -> Choice | str:
        """The deepest valid snapshot for a request, or why there is none.

        ``waiting`` is told the build's progress while the request waits for a base. A check of
        the file sets that began after ``since`` (when the request's client connected, so after
        any save made before the run) stands for this request's own.
        """
        self.last_used = time.monotonic()
        deadline = time.monotonic() + timeout
        while True:
            self._wait(
                lambda: self.base is not None and self.base.state != BUILDING, deadline, waiting
            )
            with self.changed:
                base, session = self.base, self.session
            if base is None or base.state == BUILDING:
                return "timed out waiting for the base snapshot to build"
            if not base.serving():
                return f"the base snapshot is {base.state}: {base.reason}"
            moved = self._moved(base, since)
            if moved:
                self.invalidate(moved)
                continue
            fresh_only = session.info.get("fresh_only") if session is not None else None
            if fresh_only:
                return Choice(base, [], f"{fresh_only}: served from the base snapshot")
            if session is not None and session.serving():
                moved = self._moved(session, since)
                if not moved:
                    return Choice(session, [])
                fileset.drop_bytecode(moved)
                if all(path in session.test_modules for path in moved):
                    return Choice(session, [(session.test_modules[p], p) for p in moved])
                self.invalidate(moved)
            elif session is not None and session.state == FAILED:
                # Perhaps fixed since: rebuild in the background; this run is the base's.
                self.invalidate(self._relevant(fileset.changed(session.files)))
            notice = ""
            if session is not None and session.reason.startswith(THREADS):
                notice = f"session snapshot unusable ({session.reason}); served from the base"
            return Choice(base, [], notice)

    def check_ahead(self) -> None:
        """Check the file sets of the serving snapshots now: a request is on its way."""
        for snapshot in (self.base, self.session):
            if snapshot is not None and snapshot.serving():
                self._moved(snapshot, since=time.monotonic())

    def _moved(self, snapshot: Snapshot, since: float) -> list[str]:
        """The relevant paths of ``snapshot``'s file set that changed, unless a check that
        began after ``since`` found none."""
        if snapshot.unchanged[0] > since and snapshot.unchanged[1] == snapshot.files_version:
            return []
        began, version = time.monotonic(), snapshot.files_version
        moved = self._relevant(fileset.changed(snapshot.files))
        if not moved:
            snapshot.unchanged = (began, version)
        return moved

    def _relevant(self, paths: list[str]) -> list[str]:
        return sorted(watcher.ignoring(paths, self.rootdir, self.settings.watch_ignore))

    def invalidate(self, paths: Iterable[str]) -> bool:
        """Invalidate the snapshots holding ``paths`` and rebuild; True if any was."""
        paths = self._relevant(list(paths))
        fileset.drop_bytecode(paths)
        base, session = self.base, self.session
        if base is not None and base.state in _REBUILT_ON_CHANGE and _holds(base, paths):
            reason = _reason(base, paths)
            self.invalidations.append(reason)
            if session is not None:
                session.invalidate(reason)
            base.invalidate(reason)
            self.build()
            return True
        if session is not None and session.state in _REBUILT_ON_CHANGE and _holds(session, paths):
            touched = [p for p in paths if p in session.files]
            if session.state == READY and all(p in session.test_modules for p in touched):
                return False
            reason = _reason(session, paths)
            self.invalidations.append(reason)
            session.invalidate(reason)
            self.build_session()
            return True
        return False

    def stop(self, timeout: float = 30.0) -> None:
        """Stop the sessions, wait for them to have torn down, then the bases (whose death
        would kill a session that is still tearing down)."""
        deadline = time.monotonic() + timeout
        for layer in ("session", "base"):
            mine = [s for s in self.every if s.layer == layer]
            for snapshot in mine:
                snapshot.stop()
            for snapshot in mine:
                snapshot.ended.wait(timeout=max(0.1, deadline - time.monotonic()))

    def pids(self) -> list[int]:
        return [s.pid for s in (self.base, self.session) if s is not None and s.pid]

    def wait_ready(self, timeout: float, waiting: Progress | None = None) -> str:
        """Wait for the session to be built; its state."""
        self._wait(self._settled, time.monotonic() + timeout, waiting)
        with self.changed:
            snapshot = self.session if self.session is not None else self.base
            return snapshot.state if snapshot is not None else BUILDING

    def _wait(self, done: Callable[[], bool], deadline: float, waiting: Progress | None) -> None:
        while True:
            with self.changed:
                left = deadline - time.monotonic()
                if done() or left <= 0:
                    return
                self.changed.wait_for(done, timeout=min(left, 0.5) if waiting else left)
                if done():
                    return
                building = self._building()
            if waiting is not None and building is not None:
                waiting(
                    {
                        "layer": building.layer,
                        **building.progress,
                        "elapsed": time.monotonic() - building.started,
                    }
                )

    def _building(self) -> Snapshot | None:
        for snapshot in (self.base, self.session):
            if snapshot is not None and snapshot.state == BUILDING:
                return snapshot
        return None

    def _settled(self) -> bool:
        base, session = self.base, self.session
        if base is None or base.state == BUILDING:
            return False
        return base.state != READY or (session is not None and session.state != BUILDING)

    def describe(self) -> dict[str, Any]:
        return {
            "key": self.key,
            "args": self.args,
            "interpreter": self.interpreter,
            "snapshots": [s.describe() for s in (self.base, self.session) if s is not None],
            "invalidations": self.invalidations[-10:],
        }


def _read_state(path: str) -> dict[str, Any]:
    try:
        with open(path) as f:
            data = json.load(f)
        return data if isinstance(data, dict) else {}
    except (OSError, ValueError):
        return {}


def _holds(snapshot: Snapshot, paths: list[str]) -> bool:
    return any(path in snapshot.files for path in paths)


def _reason(snapshot: Snapshot, paths: list[str]) -> str:
    held = [p for p in paths if p in snapshot.files]
    more = f" (+{len(held) - 1} more)" if len(held) > 1 else ""
    return f"{held[0] if held else paths[0]} changed{more}"
