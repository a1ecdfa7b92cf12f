"""The manager: one per project, concurrent clients, clean stop, its socket's guard."""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import stat
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import psutil
import pytest
from conftest import SNAPD, Project, wait_for
from ptyrun import PtyProcess

from snapd import protocol

pytestmark = pytest.mark.timeout(180)


@pytest.fixture
def started(project: Project) -> Project:
    project.write("tests/conftest.py", "import json\n")
    project.write(
        "tests/test_many.py",
        "import pytest\n\n@pytest.mark.parametrize('n', range(20))\ndef test_n(n):\n"
        "    assert n != 13\n",
    )
    project.start()
    return project


def _socket_path(project: Project) -> str:
    (sock,) = Path(project.runtime).glob("*/sock")
    return str(sock)


def test_two_clients_at_once_both_get_their_own_result(started: Project) -> None:
    results: dict[str, subprocess.CompletedProcess[str]] = {}

    def run(name: str, *args: str) -> None:
        results[name] = started.run(*args)

    threads = [
        threading.Thread(target=run, args=("pass", "tests/test_many.py", "-k", "not 13")),
        threading.Thread(target=run, args=("fail", "tests/test_many.py")),
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results["pass"].returncode == 0
    assert "19 passed, 1 deselected" in results["pass"].stdout
    assert results["fail"].returncode == 1
    assert "1 failed, 19 passed" in results["fail"].stdout


def test_stop_leaves_no_process_behind(started: Project) -> None:
    started.run("tests/test_many.py", "-q")
    processes = started.processes()
    assert len(processes) >= 3  # manager, base, session (and a spare)
    result = started.snapd("stop")
    assert result.returncode == 0
    assert "stopped" in result.stdout
    _, alive = psutil.wait_procs(processes, timeout=10)
    assert alive == []
    assert not list(Path(started.runtime).glob("*/sock"))


# `snapd start` in a process that adopts orphans and never reaps them, as PID 1 of a container
# run without an init does: the manager, orphaned when `snapd start` exits, becomes its child.
NON_REAPER = """
import ctypes, subprocess, sys
PR_SET_CHILD_SUBREAPER = 36
assert ctypes.CDLL(None, use_errno=True).prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0
subprocess.run([sys.argv[1], "start", "--wait"], check=True, stdout=subprocess.DEVNULL)
print("started", flush=True)
sys.stdin.read()  # holds its zombies until the test closes stdin
"""


def test_stop_does_not_wait_for_the_manager_to_be_reaped(project: Project) -> None:
    project.write("tests/test_a.py", "def test_a():\n    pass\n")
    holder = subprocess.Popen(
        [sys.executable, "-c", NON_REAPER, SNAPD], cwd=project.root, env=project.env,
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "started\n"
        manager = psutil.Process(project.manager_pid())
        assert manager.ppid() == holder.pid
        result = project.snapd("stop", timeout=30)  # STOP_TIMEOUT is 45 s
        assert result.returncode == 0 and "stopped" in result.stdout
        assert "killed" not in result.stdout  # an ended manager is no survivor
        assert manager.status() == psutil.STATUS_ZOMBIE  # ended, and nobody reaped it
    finally:
        holder.communicate(timeout=30)  # its zombies go to init, which reaps them


def test_start_is_idempotent_and_concurrent_starts_leave_one_manager(project: Project) -> None:
    project.write("tests/test_a.py", "def test_a():\n    pass\n")
    starts = [
        subprocess.Popen(
            [SNAPD, "start"], cwd=project.root, env=project.env, stdout=subprocess.PIPE
        )
        for _ in range(4)
    ]
    for p in starts:
        assert p.wait(timeout=30) == 0
    wait_for(lambda: project.manager_pid() is not None, message="a manager")
    again = project.snapd("start", "--wait")
    assert "already running" in again.stdout
    managers = [
        p
        for p in psutil.process_iter(["cmdline", "environ"])
        if (p.info["cmdline"] or [])[1:3] == ["-m", "snapd.manager"]
        and (p.info["environ"] or {}).get("SNAPD_RUNTIME_DIR") == project.runtime
    ]
    assert [p.pid for p in managers] == [project.manager_pid()]


def test_status_shows_the_snapshots(started: Project) -> None:
    result = started.snapd("status")
    assert result.returncode == 0
    assert f"pid {started.manager_pid()}" in result.stdout
    assert "base     ready" in result.stdout
    assert "session  ready" in result.stdout


def test_socket_directory_is_private(started: Project) -> None:
    sock = Path(_socket_path(started))
    for directory in (sock.parent, sock.parent.parent):
        assert stat.S_IMODE(directory.stat().st_mode) == 0o700


def test_malformed_messages_get_an_error_and_the_daemon_stays_up(started: Project) -> None:
    bad_frames = [
        b"\x00\x00\x00\x05hello",  # not msgpack
        b"\x7f\xff\xff\xff",  # a length over the limit
        b"\x00\x00\x00\x01\x01",  # not a map
        protocol.encode({"op": "run", "args": "not a list"}),
        protocol.encode({"op": "nonsense"}),
    ]
    for frame in bad_frames:
        with socket.socket(socket.AF_UNIX) as sock:
            sock.connect(_socket_path(started))
            sock.sendall(frame)
            got = protocol.recv(sock)
            assert got is not None and got[0]["op"] == "error", frame
    # A run with the wrong number of fds.
    with socket.socket(socket.AF_UNIX) as sock:
        sock.connect(_socket_path(started))
        message = {
            "op": "run",
            "args": [],
            "cwd": "/",
            "env": {},
            "argv0": "pytest",
            "interpreter": "python",
        }
        protocol.send(sock, message, [0])
        got = protocol.recv(sock)
        assert got is not None and "3 fds" in got[0]["message"]
    result = started.run("tests/test_many.py", "-q", "-k", "not 13")
    assert result.returncode == 0


@pytest.mark.skipif(
    os.getuid() != 0 or not shutil.which("setpriv"), reason="needs root and setpriv"
)
def test_a_peer_of_another_uid_is_refused(started: Project) -> None:
    sock_path = _socket_path(started)
    # Let uid 65534 reach the socket at all, so it is the daemon that refuses it.
    for directory in (Path(sock_path).parent, Path(sock_path).parent.parent):
        directory.chmod(0o711)
    os.chmod(sock_path, 0o666)
    package_root = str(Path(protocol.__file__).parent.parent)
    script = (
        f"import socket, sys; sys.path.insert(0, {package_root!r}); from snapd import protocol\n"
        f"s = socket.socket(socket.AF_UNIX); s.connect({sock_path!r})\n"
        "print(protocol.recv(s)[0])\n"
    )
    result = subprocess.run(
        ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", sys.executable, "-c", script],
        capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert "only its own user" in result.stdout, result.stderr


@pytest.mark.serial  # every daemon running beside it would see snapd change, and restart
def test_an_upgrade_of_snapd_itself_restarts_the_daemon(started: Project, tmp_path: Path) -> None:
    import snapd.paths

    source = Path(snapd.paths.__file__)
    before = started.manager_pid()
    original = source.read_bytes()
    try:
        source.write_bytes(original + b"\n")  # what `pip install -U snapd` looks like to it
        result = started.run("tests/test_many.py", "-q", "-k", "not 13")
        assert result.returncode == 0
        assert "snapd itself changed" in result.stderr
        assert "19 passed" in result.stdout  # served by plain pytest meanwhile
        wait_for(lambda: started.snapd("status").returncode == 0, message="the restarted daemon")
        assert started.manager_pid() == before  # exec'd in place: same pid, new code
        again = started.run("tests/test_many.py", "-q", "-k", "not 13")
        assert again.returncode == 0 and "snapd:" not in again.stderr
    finally:
        source.write_bytes(original)


def test_idle_timeout_stops_the_daemon(project: Project) -> None:
    project.write("tests/test_a.py", "def test_a():\n    pass\n")
    project.env["SNAPD_IDLE_TIMEOUT"] = "3"
    project.start()
    processes = project.processes()
    assert project.run("tests/test_a.py").returncode == 0
    _, alive = psutil.wait_procs(processes, timeout=30)
    assert alive == []


def test_memory_cap_keeps_only_the_newest_chain(started: Project) -> None:
    started.snapd("stop")
    started.env["SNAPD_MAX_MEMORY_MB"] = "1"  # below any chain: only the newest survives
    started.start()
    # An ini override shapes configuration: a chain of its own.
    args = ["-o", "console_output_style=classic"]
    assert started.run("tests/test_many.py", "-q", *args, "-k", "not 13").returncode == 0
    wait_for(lambda: len(status_json(started)["chains"]) == 1, message="the old chain evicted")
    (chain,) = status_json(started)["chains"]
    assert chain["args"] == args


def status_json(project: Project) -> dict[str, Any]:
    return json.loads(project.snapd("status", "--json").stdout)  # type: ignore[no-any-return]


def test_start_wait_shows_progress_on_a_tty_only(project: Project) -> None:
    project.write("tests/conftest.py", "import time\ntime.sleep(1.5)  # a slow conftest\n")
    project.write("tests/test_a.py", "def test_a():\n    pass\n")
    term = PtyProcess([SNAPD, "start", "--wait"], str(project.root), project.env)
    assert term.wait(timeout=120) == 0
    assert re.search(r"building the session snapshot: [a-z ]+, \d+ modules, \d+\.\ds", term.text)
    assert term.text.rstrip().endswith("snapd: session snapshot ready")
    project.snapd("stop")
    quiet = project.snapd("start", "--wait")
    assert "building" not in quiet.stdout + quiet.stderr


def test_status_names_what_split_a_chain(started: Project) -> None:
    started.env["APP_MODE"] = "secret-value"
    assert started.run("tests/test_many.py", "-q", "-k", "not 13").returncode == 0
    chains = status_json(started)["chains"]
    split = next(c for c in chains if c["differs"])
    assert split["differs"] == ["$APP_MODE"]
    assert "secret-value" not in json.dumps(chains)


def test_logs_and_restart(started: Project) -> None:
    before = started.manager_pid()
    logs = started.snapd("logs", "-n", "5")
    assert logs.returncode == 0
    assert "session snapshot" in logs.stdout and len(logs.stdout.splitlines()) <= 5
    restarted = started.snapd("restart", "--wait")
    assert restarted.returncode == 0, restarted.stdout + restarted.stderr
    assert "stopped" in restarted.stdout and "session snapshot ready" in restarted.stdout
    assert started.manager_pid() not in (None, before)
