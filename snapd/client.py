"""The client: ``snapd pytest ARGS``. Small and quick to start: no click, no pytest.

It sends its stdin/stdout/stderr, cwd, arguments and environment to the project's manager,
forwards the signals a terminal sends to the request child's process group, and ends exactly
as the child ended. When snapd cannot serve the run it runs plain pytest itself, saying so in
one line on stderr: never worse than pytest.
"""

from __future__ import annotations

import _socket  # see snapd/protocol.py
import os
import resource
import signal
import sys
import time

from snapd import protocol
from snapd.paths import ProjectPaths, RuntimeDirError, find_rootdir

TYPE_CHECKING = False  # see snapd/__init__.py
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import NoReturn

RLIMITS = ("RLIMIT_NOFILE", "RLIMIT_CORE", "RLIMIT_STACK", "RLIMIT_AS", "RLIMIT_NPROC")
FORWARDED = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT, signal.SIGWINCH)
START_TIMEOUT = 10.0


def main(args: list[str]) -> NoReturn:
    try:
        reason = serve(args, dict(os.environ))
    except KeyboardInterrupt:  # Ctrl-C while waiting for a build: end as a shell would
        os._exit(128 + signal.SIGINT)
    cold(args, reason)


def serve(args: list[str], env: dict[str, str]) -> str:
    """Have the daemon run ``pytest args`` and end as that run ends; or say why it cannot."""
    try:
        paths = ProjectPaths.for_rootdir(find_rootdir(os.getcwd()))
        sock = connect(paths, autostart=_autostart)
    except (OSError, RuntimeDirError) as e:
        return f"cannot reach the daemon ({e})"
    if sock is None:
        return "no daemon running (start one with `snapd start`)"
    try:
        protocol.send(sock, _request(args, env), _standard_fds())
        got = receive_past_progress(sock)
    except (OSError, protocol.ProtocolError) as e:
        return f"the daemon failed ({e})"
    if got is None:
        return "the daemon closed the connection"
    message, _ = got
    if message["op"] == "fallback":
        return str(message.get("reason"))
    if message["op"] != "started":
        return f"the daemon refused the run: {message.get('message', message)}"
    if message.get("notice"):
        print(f"snapd: {message['notice']}", file=sys.stderr, flush=True)
    follow(sock, int(message["pid"]))


def receive_past_progress(sock: _socket.socket) -> tuple[protocol.Message, list[int]] | None:
    """The next message that is not a build's progress; the progress is shown on a tty."""
    shown = False
    tty = sys.stderr.isatty()
    while True:
        got = protocol.recv(sock)
        if got is None or got[0]["op"] != "progress":
            if shown:
                sys.stderr.write("\r\x1b[K")
                sys.stderr.flush()
            return got
        if tty:
            p = got[0]
            sys.stderr.write(
                f"\r\x1b[Ksnapd: building the {p.get('layer')} snapshot: {p.get('phase')}, "
                f"{p.get('modules')} modules, {p.get('elapsed', 0):.1f}s"
            )
            sys.stderr.flush()
            shown = True


def _standard_fds() -> list[int]:
    """Our fds 0, 1 and 2, with /dev/null standing in for any that is closed."""
    fds = []
    for fd in (0, 1, 2):
        try:
            os.fstat(fd)
            fds.append(fd)
        except OSError:
            fds.append(os.open(os.devnull, os.O_RDWR))
    return fds


def _request(args: list[str], env: dict[str, str]) -> protocol.Message:
    umask = os.umask(0o022)
    os.umask(umask)
    return {
        "op": "run",
        "args": args,
        "cwd": os.getcwd(),
        "env": env,
        "argv0": _pytest_script(),
        "interpreter": sys.executable,
        # What else a process inherits from its shell, and a test may see.
        "umask": umask,
        "rlimits": {name: list(resource.getrlimit(getattr(resource, name))) for name in RLIMITS},
    }


def _autostart(rootdir: str) -> bool:
    # Read only when no daemon answers: the configuration costs a TOML parse.
    from snapd import config

    try:
        return config.load(rootdir).autostart
    except config.ConfigError as e:
        print(f"snapd: {e}", file=sys.stderr)
        return False


def connect(
    paths: ProjectPaths, *, autostart: bool | Callable[[str], bool]
) -> _socket.socket | None:
    """A connection to the project's manager, starting one first if asked to."""
    sock = _try_connect(paths)
    if sock is not None or not (autostart(paths.rootdir) if callable(autostart) else autostart):
        return sock
    spawn_manager(paths.rootdir)
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        sock = _try_connect(paths)
        if sock is not None:
            return sock
        time.sleep(0.01)  # polling for the socket to appear: there is nothing to wait on
    return None


def _try_connect(paths: ProjectPaths) -> _socket.socket | None:
    sock = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM)
    try:
        sock.connect(paths.socket)
    except (FileNotFoundError, ConnectionRefusedError):
        sock.close()
        return None
    return sock


def _pytest_script() -> str:
    return os.path.join(os.path.dirname(sys.executable), "pytest")


def spawn_manager(rootdir: str) -> None:
    """Start the manager detached from this terminal; it backs off if one already runs."""
    import subprocess

    ProjectPaths.for_rootdir(rootdir).create()
    subprocess.Popen(
        [sys.executable, "-m", "snapd.manager", str(rootdir)],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        cwd=rootdir,
        start_new_session=True,
    )


def follow(sock: _socket.socket, pid: int) -> NoReturn:
    """Forward signals to the child until the manager reports how it ended; end the same way."""
    for sig in FORWARDED:
        signal.signal(sig, lambda signum, _: _signal_child(pid, signum))
    signal.signal(signal.SIGTSTP, lambda *_: _suspend(pid))
    try:
        got = protocol.recv(sock)
    except (OSError, protocol.ProtocolError):
        got = None
    if got is None or got[0]["op"] != "exit":
        _signal_child(pid, signal.SIGKILL)
        print("snapd: lost the daemon during the run; the test run was stopped", file=sys.stderr)
        os._exit(1)
    if got[0].get("notice"):
        print(f"snapd: {got[0]['notice']}", file=sys.stderr, flush=True)
    exit_like(int(got[0]["code"]))


def exit_like(code: int) -> NoReturn:
    """Exit with ``code``, or die of the same signal when it is negative (as waitpid says)."""
    sys.stdout.flush()
    if code < 0:
        if -code not in (signal.SIGKILL, signal.SIGSTOP):  # those two cannot be handled
            signal.signal(-code, signal.SIG_DFL)
        os.kill(os.getpid(), -code)
        code = 128 - code
    os._exit(code)


def _signal_child(pid: int, signum: int) -> None:
    try:
        os.killpg(pid, signum)
    except ProcessLookupError:
        # The child may not have made its own process group yet.
        try:
            os.kill(pid, signum)
        except ProcessLookupError:
            pass


def _suspend(pid: int) -> None:
    # The child is in an orphaned process group, where SIGTSTP is ignored: stop it for real.
    _signal_child(pid, signal.SIGSTOP)
    os.kill(os.getpid(), signal.SIGSTOP)
    _signal_child(pid, signal.SIGCONT)


def notice(reason: str) -> None:
    print(f"snapd: {reason}; running plain pytest", file=sys.stderr, flush=True)


def cold(args: list[str], reason: str) -> NoReturn:
    """Run plain pytest in this process, as its console script would."""
    notice(reason)
    import _pytest.config

    sys.argv = [_pytest_script(), *args]
    console_main = getattr(_pytest.config, "_console_main", None) or _pytest.config.console_main
    raise SystemExit(console_main())
