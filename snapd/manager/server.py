"""The manager's socket: who may talk to it, what they may ask, and how a run is served."""

from __future__ import annotations

import collections
import contextlib
import logging
import os
import queue
import select
import signal
import socket
import struct
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any

from snapd import config, fileset, protocol
from snapd.manager import keys, memory, watcher
from snapd.manager.chain import Chain, Choice
from snapd.manager.snapshots import Spare
from snapd.paths import ProjectPaths

log = logging.getLogger("snapd.manager")

# How often the main thread looks at idleness and memory when nothing else wakes it.
_TICK_SECONDS = 2.0
_PEERCRED = struct.Struct("3i")
_RUN_PASSED_ON = ("args", "cwd", "env", "argv0", "umask", "rlimits")
_RUN_FIELDS = {"args": list, "cwd": str, "env": dict, "argv0": str, "interpreter": str}


class BadRequest(Exception):
    pass


class Manager:
    def __init__(
        self, paths: ProjectPaths, listener: socket.socket, settings: config.Settings
    ) -> None:
        self.paths = paths
        self.listener = listener
        self.settings = settings
        self.last_active = time.monotonic()
        self.chains: dict[str, Chain] = {}
        self.default_key: str | None = None
        self.lock = threading.Lock()
        self.stopping = threading.Event()
        self.started = time.time()
        self.counts = {"requests": 0, "session": 0, "base": 0, "fallback": 0, "errors": 0}
        # Seconds from a run's request to its exit, by the layer that served it (recent ones).
        self.latencies: dict[str, collections.deque[float]] = {
            layer: collections.deque(maxlen=1000) for layer in ("session", "base")
        }
        # snapd's own sources: when they change (an upgrade), this manager's code and that of
        # the snapshots it would spawn no longer match, so it restarts.
        self.own_files = fileset.stamps(_own_sources())
        self.restart = False
        self._spawns: queue.Queue[tuple[Callable[[], Any], Future[Any]] | None] = queue.Queue()

    # -- lifetime ---------------------------------------------------------------------------

    def serve_forever(self) -> None:
        """Accept clients on a thread; the main thread spawns snapshots until told to stop.

        Spawning from the main thread matters: a base snapshot's PR_SET_PDEATHSIG fires when
        the thread that forked it ends.
        """
        signal.signal(signal.SIGTERM, lambda *_: self.stop())
        signal.signal(signal.SIGINT, lambda *_: self.stop())
        self._default_chain()
        threading.Thread(target=self._accept, name="accept", daemon=True).start()
        stop_watch = threading.Event()
        watch = threading.Thread(
            target=watcher.watch,
            args=(self.paths.rootdir, self._changed, stop_watch, self.settings),
            daemon=True,
        )
        watch.start()
        while True:
            try:
                job = self._spawns.get(timeout=_TICK_SECONDS)
            except queue.Empty:
                self._tick()
                continue
            if job is None:
                break
            run, future = job
            try:
                future.set_result(run())
            except BaseException as e:
                future.set_exception(e)
        stop_watch.set()
        self._shutdown()

    def spawn(self, run: Callable[[], Any]) -> Any:
        if threading.current_thread() is threading.main_thread():
            return run()
        future: Future[Any] = Future()
        self._spawns.put((run, future))
        return future.result()

    def stop(self) -> None:
        if not self.stopping.is_set():
            self.stopping.set()
            self._spawns.put(None)

    def _shutdown(self) -> None:
        log.info("stopping")
        with contextlib.suppress(OSError):
            self.listener.close()
        for chain in list(self.chains.values()):
            chain.stop()
        for pid in self._all_pids():
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)
        for path in (self.paths.socket, self.paths.pidfile):
            with contextlib.suppress(OSError):
                os.unlink(path)
        log.info("stopped")

    def _difference(self, chain: Chain) -> list[str]:
        """What sets ``chain`` apart from the default one: argument and variable names only
        (values may be secrets)."""
        default = self.chains.get(self.default_key or "")
        if default is None or default is chain:
            return []
        found = [f"args {' '.join(chain.args)}"] if chain.args != default.args else []
        if chain.interpreter != default.interpreter:
            found.append(f"interpreter {chain.interpreter}")
        a, b = chain.stable_env, default.stable_env
        found += sorted(f"${name}" for name in a.keys() | b.keys() if a.get(name) != b.get(name))
        return found

    def _tick(self) -> None:
        idle = self.settings.idle_timeout
        busy = any(s.running for c in self.chains.values() for s in (c.base, c.session) if s)
        if idle and not busy and time.monotonic() - self.last_active > idle:
            log.info("idle for %.0fs: stopping", idle)
            self.stop()
        self._evict()

    def _all_pids(self) -> list[int]:
        pids = []
        for chain in self.chains.values():
            pids.extend(chain.pids())
        return pids

    # -- chains -----------------------------------------------------------------------------

    def _default_chain(self) -> None:
        chain = self._chain_for(sys.executable, [], dict(os.environ))
        self.default_key = chain.key

    def _chain_for(
        self, interpreter: str, args: list[str], env: dict[str, str], cwd: str = "."
    ) -> Chain:
        key_args, _ = keys.split_args(args, cwd)
        stable = keys.stable_env(env, keys.volatile_patterns(self.settings.env_ignore))
        # Key arguments may hold paths relative to the client's cwd: build there, then.
        build_dir = cwd if key_args else self.paths.rootdir
        key = keys.chain_key(interpreter, key_args, stable, build_dir if key_args else "")
        with self.lock:
            chain = self.chains.get(key)
            if chain is not None:
                return chain
            chain = Chain(
                key,
                self.paths.rootdir,
                build_dir,
                interpreter,
                key_args,
                env,
                self.paths.state,
                self.paths.log,
                self.spawn,
                self.settings,
            )
            chain.stable_env = stable
            self.chains[key] = chain
            self._evict()
        log.info("new chain %s: args %s", key, key_args)
        try:
            chain.build()
        except OSError as e:  # the interpreter is missing or cannot run: no chain at all
            with self.lock:
                self.chains.pop(key, None)
            raise BadRequest(f"cannot start {interpreter}: {e}") from e
        return chain

    def _evict(self) -> None:
        """Stop least recently used chains while over the chain count or the memory cap."""
        while len(self.chains) > 1 and (
            len(self.chains) > self.settings.max_chains or self._over_memory_cap()
        ):
            oldest = min(self.chains.values(), key=lambda c: c.last_used)
            log.info("evicting chain %s", oldest.key)
            threading.Thread(target=oldest.stop, daemon=True).start()
            del self.chains[oldest.key]

    def _over_memory_cap(self) -> bool:
        cap = self.settings.max_memory_mb
        return bool(cap) and memory.pss_mb(self._all_pids()) > cap

    def _changed(self, paths: set[str]) -> None:
        for chain in list(self.chains.values()):
            if chain.invalidate(paths):
                log.info("chain %s: rebuilding after %s", chain.key, chain.invalidations[-1])

    # -- connections ------------------------------------------------------------------------

    def _accept(self) -> None:
        while not self.stopping.is_set():
            try:
                conn, _ = self.listener.accept()
            except OSError:
                if self.stopping.is_set():
                    return
                continue
            threading.Thread(target=self._serve_client, args=(conn,), daemon=True).start()

    def _serve_client(self, conn: socket.socket) -> None:
        connected = time.monotonic()
        with conn:
            pid, uid, _ = _PEERCRED.unpack(
                conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _PEERCRED.size)
            )
            if uid != os.getuid():
                log.warning("refused a peer of uid %d (pid %d)", uid, pid)
                _reply(conn, {"op": "error", "message": "snapd serves only its own user"})
                return
            conn.settimeout(60)
            self.last_active = time.monotonic()
            latest = max(list(self.chains.values()), key=lambda c: c.last_used, default=None)
            if latest is not None:
                # Most connections are runs of the chain used last: check its files while the
                # client is still sending (it connects before it loads msgpack).
                latest.check_ahead()
            fds: list[int] = []
            try:
                got = protocol.recv(conn)
                if got is None:
                    return
                message, fds = got
                conn.settimeout(None)
                self._dispatch(conn, message, fds, connected)
            except (protocol.ProtocolError, BadRequest) as e:
                self.counts["errors"] += 1
                log.warning("bad request from pid %d: %s", pid, e)
                _reply(conn, {"op": "error", "message": f"bad request: {e}"})
            except OSError as e:
                log.info("client pid %d: %s", pid, e)
            finally:
                protocol.close_fds(fds)

    def _dispatch(
        self, conn: socket.socket, message: protocol.Message, fds: list[int], connected: float
    ) -> None:
        op = message["op"]
        if op == "run":
            self._run(conn, message, fds, connected)
        elif op == "status":
            _reply(conn, {"op": "status", **self.status()})
        elif op == "wait":
            chain = self.chains.get(self.default_key or "")
            state = (
                chain.wait_ready(self.settings.build_timeout, _progress_to(conn))
                if chain
                else "missing"
            )
            _reply(conn, {"op": "waited", "state": state, **self.status()})
        elif op == "stop":
            _reply(conn, {"op": "stopping", "pid": os.getpid()})
            self.stop()
        elif op == "ping":
            _reply(conn, {"op": "pong", "pid": os.getpid()})
        else:
            raise BadRequest(f"unknown op {op!r}")

    def _run(
        self, conn: socket.socket, message: protocol.Message, fds: list[int], connected: float
    ) -> None:
        _validate(message, fds)
        self.counts["requests"] += 1
        began = time.monotonic()
        if fileset.changed(self.own_files):
            self.counts["fallback"] += 1
            reason = "snapd itself changed since the daemon started; the daemon restarts"
            _reply(conn, {"op": "fallback", "reason": reason})
            log.info(reason)
            self.restart = True
            self.stop()
            return
        chain = self._chain_for(
            message["interpreter"], message["args"], message["env"], message["cwd"]
        )
        choice = chain.choose(self.settings.build_timeout, _progress_to(conn), since=connected)
        spare = choice.snapshot.take_spare(timeout=30) if isinstance(choice, Choice) else None
        if not isinstance(choice, Choice) or spare is None:
            reason = choice if isinstance(choice, str) else "no request child could be forked"
            self.counts["fallback"] += 1
            _reply(conn, {"op": "fallback", "reason": reason})
            return
        try:
            if self._hand_over(conn, message, fds, chain, choice, spare):
                self.latencies[choice.snapshot.layer].append(time.monotonic() - began)
        finally:
            choice.snapshot.release(spare)
            spare.sock.close()

    def _hand_over(
        self,
        conn: socket.socket,
        message: protocol.Message,
        fds: list[int],
        chain: Chain,
        choice: Choice,
        spare: Spare,
    ) -> bool:
        """Run the request in ``spare``; True once its exit was passed on to the client."""
        request: protocol.Message = {key: message[key] for key in _RUN_PASSED_ON if key in message}
        protocol.send(spare.sock, {"op": "run", **request, "reload": choice.reload}, fds)
        protocol.close_fds(fds)
        fds.clear()
        self.counts[choice.snapshot.layer] += 1
        started = {"op": "started", "pid": spare.pid, "layer": choice.snapshot.layer}
        _reply(conn, {**started, "notice": choice.notice})
        code, imported = _wait_for_exit(conn, spare)
        if code is None:
            return False
        _reply(conn, {"op": "exit", "code": code})
        if imported:
            chain.learn(imported)
        return True

    def status(self) -> dict[str, Any]:
        return {
            "pid": os.getpid(),
            "rootdir": self.paths.rootdir,
            "socket": self.paths.socket,
            "log": self.paths.log,
            "uptime_seconds": time.time() - self.started,
            "counts": dict(self.counts),
            "latency": {layer: _percentiles(list(v)) for layer, v in self.latencies.items()},
            "chains": [
                {**c.describe(), "differs": self._difference(c)} for c in self.chains.values()
            ],
            "default_chain": self.default_key,
        }


def _progress_to(conn: socket.socket) -> Callable[[dict[str, Any]], None]:
    return lambda progress: _reply(conn, {"op": "progress", **progress})


def _percentiles(samples: list[float]) -> dict[str, float | int | None]:
    """p50 and p95 of ``samples`` (nearest rank), with their count."""
    ordered = sorted(samples)

    def rank(q: float) -> float | None:
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else None

    return {"count": len(ordered), "p50": rank(0.50), "p95": rank(0.95)}


def _own_sources() -> list[str]:
    package = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    return sorted(
        os.path.join(folder, name)
        for folder, _, names in os.walk(package)
        for name in names
        if name.endswith(".py")
    )


def _wait_for_exit(conn: socket.socket, spare: Spare) -> tuple[int | None, list[str]]:
    """The child's exit code and the outside modules it imported.

    The code is ``None`` when there is none to pass on: the client went away first (the child
    is then killed), or the child ended unreported along with its snapshot (the client is told).
    """
    readable, _, _ = select.select([conn, spare.sock], [], [])
    if conn in readable:
        # A client only ever closes its end mid-run: it was killed, or its terminal closed.
        _kill_group(spare.pid)
        spare.exited.wait(10)
        return None, []
    try:
        got = protocol.recv(spare.sock)
    except (OSError, protocol.ProtocolError):
        got = None
    imported: list[str] = []
    if got is not None and got[0]["op"] == "exit":
        spare.finish(int(got[0]["code"]))
        imported = [str(m) for m in got[0].get("imported", [])][:1000]
    # Killed by a signal, or os._exit from a test: the snapshot reaps it and tells us how,
    # unless the snapshot died too.
    deadline = time.monotonic() + 10
    while not spare.exited.wait(0.05):
        if spare.orphaned.is_set() or time.monotonic() > deadline:
            lost = "the run ended, but how was lost: the snapshot it came from died"
            _reply(conn, {"op": "exit", "code": 1, "notice": lost})
            return None, []
    return spare.code, imported


def _kill_group(pid: int) -> None:
    try:
        os.killpg(pid, signal.SIGKILL)
    except ProcessLookupError:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def _validate(message: protocol.Message, fds: list[int]) -> None:
    for name, kind in _RUN_FIELDS.items():
        if not isinstance(message.get(name), kind):
            raise BadRequest(f"'{name}' must be a {kind.__name__}")
    if not all(isinstance(a, str) for a in message["args"]):
        raise BadRequest("'args' must be a list of strings")
    if not all(isinstance(k, str) and isinstance(v, str) for k, v in message["env"].items()):
        raise BadRequest("'env' must map strings to strings")
    if not os.path.isdir(message["cwd"]):
        raise BadRequest(f"cwd {message['cwd']!r} is not a directory")
    if len(fds) != 3:
        raise BadRequest(f"a run carries 3 fds (stdin, stdout, stderr), got {len(fds)}")
    if not isinstance(message.get("umask", 0), int):
        raise BadRequest("'umask' must be an int")
    limits = message.get("rlimits", {})
    if not isinstance(limits, dict) or not all(
        isinstance(k, str)
        and isinstance(v, list)
        and len(v) == 2
        and all(isinstance(i, int) for i in v)
        for k, v in limits.items()
    ):
        raise BadRequest("'rlimits' must map names to [soft, hard] ints")


def _reply(conn: socket.socket, message: protocol.Message) -> None:
    with contextlib.suppress(OSError):
        protocol.send(conn, message)
