"""Faults: processes killed mid-run, clients that vanish, and many clients at once.

Every process a test kills is one of its own project's: the manager named by the project's
runtime dir, or something below it, or a pid that the project's own test wrote to a file.
Every wait is bounded; waits on state that only a poll can see use ``wait_for``.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest
from conftest import SNAPD, Project, normalise, wait_for
from ptyrun import PtyProcess

pytestmark = pytest.mark.timeout(240)

CONFTEST = """
    import json
    import pytest

    @pytest.fixture(scope="session")
    def config():
        return json.loads('{"answer": 42}')
"""

# The test that runs in a request child writes its pid (and its own child's) to files outside
# the project, so the faults below know exactly which process to kill and to watch.
SLEEPER = """
    import os
    import subprocess
    import sys
    import time
    from pathlib import Path

    MARKS = Path({marks!r})

    def _mark(name, value):
        tmp = MARKS / (name + ".tmp")
        tmp.write_text(str(value))
        tmp.rename(MARKS / name)

    def test_quick(config):
        assert config["answer"] == 42

    def test_sleeps():
        _mark("child", os.getpid())
        time.sleep(120)

    def test_waits_for_go(config):
        _mark("child", os.getpid())
        deadline = time.monotonic() + 120
        while not (MARKS / "go").exists():
            assert time.monotonic() < deadline, "never told to go"
            time.sleep(0.02)
        assert config["answer"] == 42

    def test_with_grandchild():
        grandchild = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
        _mark("grandchild", grandchild.pid)
        _mark("child", os.getpid())
        time.sleep(120)
"""

MANY = """
    import pytest

    @pytest.mark.parametrize("n", range(25))
    def test_n(n, config):
        assert n % 5 != 3
"""

CLIENT_TIMEOUT = 60.0  # a client that has not ended by then hangs
REBUILD_TIMEOUT = 60.0  # this project's chain builds in a few seconds, even on a busy machine


# -- fixtures and helpers ---------------------------------------------------------------------


@pytest.fixture
def marks(tmp_path: Path) -> Path:
    path = tmp_path / "marks"
    path.mkdir()
    return path


@pytest.fixture
def reaper() -> Iterator[list[psutil.Process]]:
    """Processes of ours that may outlive the manager's tree (orphans): killed at the end."""
    found: list[psutil.Process] = []
    yield found
    for process in found:
        try:
            if process.is_running():
                process.kill()
        except psutil.Error:
            pass


@pytest.fixture
def started(project: Project, marks: Path, reaper: list[psutil.Process]) -> Iterator[Project]:
    project.write("tests/conftest.py", CONFTEST)
    project.write("tests/test_sleeper.py", SLEEPER.format(marks=str(marks)))
    project.write("tests/test_many.py", MANY)
    project.start()
    yield project
    # Stop whichever manager runs now; what survives it, and any orphans, the reaper kills.
    survivors = project.processes()
    project.snapd("stop", timeout=60)
    reaper.extend(survivors)


def status(project: Project) -> dict[str, Any]:
    result = project.snapd("status", "--json", timeout=30)
    assert result.returncode == 0, result.stdout + result.stderr
    data: dict[str, Any] = json.loads(result.stdout)
    return data


def snapshot(data: dict[str, Any], layer: str) -> dict[str, Any]:
    """The ``layer`` snapshot of the default chain in ``snapd status --json``."""
    (chain,) = [c for c in data["chains"] if c["key"] == data["default_chain"]]
    (snap,) = [s for s in chain["snapshots"] if s["layer"] == layer]
    return dict(snap)


def client(project: Project, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [SNAPD, "pytest", *args],
        cwd=project.root,
        env=project.env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def finish(process: subprocess.Popen[str]) -> tuple[str, str]:
    """The client's output once it has ended; a client that does not end fails the test."""
    try:
        return process.communicate(timeout=CLIENT_TIMEOUT)
    except subprocess.TimeoutExpired:
        process.kill()
        out, err = process.communicate(timeout=10)
        raise AssertionError(
            f"the client hung for {CLIENT_TIMEOUT}s\nstdout:\n{out}\nstderr:\n{err}"
        ) from None


def read_mark(marks: Path, name: str, timeout: float = 60) -> int:
    path = marks / name
    wait_for(path.exists, timeout=timeout, message=f"the test to write {path}")
    return int(path.read_text())


def request_child(run: subprocess.Popen[Any], marks: Path, name: str = "child") -> psutil.Process:
    """The process running the test that ``run`` asked for: a request child, not the client
    itself (a run served cold, say while another engineer edits snapd's sources)."""
    path = marks / name
    wait_for(
        lambda: path.exists() or run.poll() is not None,
        timeout=60,
        message=f"the test to write {path}",
    )
    if run.poll() is not None or int(path.read_text()) == run.pid:
        run.kill()
        out, err = run.communicate(timeout=10)
        raise AssertionError(f"the run was not served by a request child:\n{out}\n{err}")
    return psutil.Process(int(path.read_text()))


def gone(process: psutil.Process) -> bool:
    """Ended: no such process (or the same pid reused), or a zombie nobody reaped yet."""
    try:
        return not process.is_running() or process.status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def describe(processes: list[psutil.Process]) -> str:
    lines = []
    for p in processes:
        try:
            lines.append(f"{p.pid} ppid {p.ppid()} {p.status()} {' '.join(p.cmdline())[:100]}")
        except psutil.Error:
            lines.append(f"{p.pid} (gone)")
    return "; ".join(lines)


def wait_gone(processes: list[psutil.Process], timeout: float, what: str) -> None:
    try:
        wait_for(lambda: all(gone(p) for p in processes), timeout=timeout, message=what)
    except AssertionError:
        alive = [p for p in processes if not gone(p)]
        raise AssertionError(f"{what}: still alive after {timeout}s: {describe(alive)}") from None


def session_served(project: Project) -> int:
    return int(status(project)["counts"]["session"])


def assert_served_warm(project: Project, old_pids: dict[str, int] | None = None) -> None:
    """The chain is whole again (a new process for each layer in ``old_pids``), and a run is
    served by the session snapshot with the right result."""

    def whole() -> bool:
        data = status(project)
        for layer in ("base", "session"):
            snap = snapshot(data, layer)
            if snap["state"] != "ready":
                return False
            if old_pids and layer in old_pids and snap["pid"] == old_pids[layer]:
                return False
        return True

    try:
        wait_for(whole, timeout=REBUILD_TIMEOUT, message="base and session ready again")
    except AssertionError:
        data = status(project)
        states = {layer: snapshot(data, layer) for layer in ("base", "session")}
        raise AssertionError(
            "the chain was not rebuilt: "
            + ", ".join(
                f"{layer} {s['state']} pid {s['pid']} ({s['reason']})"
                for layer, s in states.items()
            )
        ) from None
    before = session_served(project)
    result = project.run("-q", "tests/test_sleeper.py::test_quick")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "1 passed" in result.stdout
    assert result.stderr == ""
    assert session_served(project) == before + 1


# -- a request child killed -------------------------------------------------------------------


def test_killed_request_child_ends_the_client_like_a_killed_pytest(
    started: Project, marks: Path, reaper: list[psutil.Process]
) -> None:
    session = snapshot(status(started), "session")
    run = client(started, "tests/test_sleeper.py::test_sleeps")
    child = request_child(run, marks)
    reaper.append(child)
    assert session["pid"] in [p.pid for p in child.parents()], "the child is the session's"
    assert os.getsid(child.pid) == child.pid  # a request child has its own session
    child.kill()
    _, err = finish(run)
    # As a shell reports a killed pytest: the client dies of the same signal.
    assert run.returncode == -signal.SIGKILL, err
    # The session snapshot reaps it: not even a zombie is left.
    wait_for(lambda: not psutil.pid_exists(child.pid), timeout=15, message="the child reaped")
    assert_served_warm(started)
    assert snapshot(status(started), "session")["pid"] == session["pid"]  # never disturbed


# -- a snapshot killed ------------------------------------------------------------------------


def _kill_snapshot_mid_run(
    project: Project, marks: Path, reaper: list[psutil.Process], layer: str
) -> tuple[subprocess.Popen[str], psutil.Process, dict[str, int], list[psutil.Process]]:
    """Start a run, kill ``layer`` while it runs; the client, the request child, the
    snapshots' old pids, and every other process that was below the killed snapshot."""
    data = status(project)
    pids = {name: int(snapshot(data, name)["pid"]) for name in ("base", "session")}
    run = client(project, "-q", "tests/test_sleeper.py::test_waits_for_go")
    child = request_child(run, marks)
    reaper.append(child)
    victim = psutil.Process(pids[layer])
    session = psutil.Process(pids["session"])
    below = [p for p in victim.children(recursive=True) if p.pid != child.pid]
    reaper.extend([victim, *below])
    assert child.pid in [p.pid for p in session.children()]
    victim.kill()
    wait_gone([victim], timeout=15, what=f"the {layer} snapshot")
    if layer == "base":
        # The session dies with its parent (PR_SET_PDEATHSIG).
        wait_gone([session], timeout=15, what="the session snapshot")
    return run, child, pids, below


@pytest.mark.parametrize("layer", ["session", "base"])
def test_killed_snapshot_the_running_client_gets_its_result_or_a_message(
    started: Project, marks: Path, reaper: list[psutil.Process], layer: str
) -> None:
    run, child, _, _ = _kill_snapshot_mid_run(started, marks, reaper, layer)
    assert not gone(child)  # the run itself is independent of the snapshot it came from
    (marks / "go").touch()
    out, err = finish(run)
    # Either the run's own result (it did pass), or a clear word from snapd and a failure code.
    own_result = run.returncode == 0 and "1 passed" in out
    explained = run.returncode > 0 and "snapd:" in err
    assert own_result or explained, (
        f"exit code {run.returncode} (negative: died of that signal), "
        f"stdout {out!r}, stderr {err!r}"
    )


@pytest.mark.parametrize("layer", ["session", "base"])
def test_killed_snapshot_is_rebuilt_and_serves_warm_again(
    started: Project, marks: Path, reaper: list[psutil.Process], layer: str
) -> None:
    run, _, pids, _ = _kill_snapshot_mid_run(started, marks, reaper, layer)
    (marks / "go").touch()
    finish(run)
    rebuilt = {"session": pids["session"]} if layer == "session" else pids
    assert_served_warm(started, rebuilt)


@pytest.mark.parametrize("layer", ["session", "base"])
def test_killed_snapshot_leaves_no_spare_behind(
    started: Project, marks: Path, reaper: list[psutil.Process], layer: str
) -> None:
    run, _, _, below = _kill_snapshot_mid_run(started, marks, reaper, layer)
    assert below, "the snapshot had a spare request child ready"
    (marks / "go").touch()
    finish(run)
    # The idle spares of a dead snapshot can never serve: they must end, not linger.
    wait_gone(below, timeout=15, what=f"the spares of the dead {layer} snapshot")


# -- the manager killed -----------------------------------------------------------------------


def test_killed_manager_the_client_says_so_and_nothing_is_left(
    started: Project, marks: Path, reaper: list[psutil.Process]
) -> None:
    processes = started.processes()
    assert len(processes) >= 4  # manager, base, session, a spare
    manager = processes[0]
    run = client(started, "tests/test_sleeper.py::test_with_grandchild")
    child = request_child(run, marks)
    grandchild = psutil.Process(read_mark(marks, "grandchild"))
    reaper.extend([*processes, child, grandchild])
    manager.kill()
    _, err = finish(run)
    assert run.returncode == 1
    assert "snapd: lost the daemon" in err
    wait_gone(
        [*processes, child, grandchild],
        timeout=15,
        what="the snapshots, spares and run of a killed manager",
    )


def test_after_a_killed_manager_the_next_run_starts_a_new_one(
    started: Project, reaper: list[psutil.Process]
) -> None:
    processes = started.processes()
    reaper.extend(processes)
    old = started.manager_pid()
    processes[0].kill()
    wait_gone(processes[:1], timeout=15, what="the manager")
    (directory,) = Path(started.runtime).iterdir()
    assert (directory / "sock").exists() and (directory / "pid").exists()  # left stale
    result = started.run("-q", "tests/test_sleeper.py::test_quick", timeout=CLIENT_TIMEOUT)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "1 passed" in result.stdout
    assert result.stderr == ""  # served by the new daemon, not cold
    new = started.manager_pid()
    assert new is not None and new != old
    assert psutil.Process(new).is_running()
    assert int((directory / "pid").read_text()) == new
    reaper.extend(started.processes())
    assert_served_warm(started)


# -- the client goes away ---------------------------------------------------------------------


def _assert_run_cleaned_up(
    project: Project, child: psutil.Process, grandchild: psutil.Process
) -> None:
    wait_gone([child, grandchild], timeout=15, what="the request child and its own child")
    # No request is left running below the manager: only snapshots and idle spares, none of
    # which has a session of its own.
    running = [p for p in project.processes()[1:] if not gone(p) and os.getsid(p.pid) == p.pid]
    assert running == [], describe(running)
    assert_served_warm(project)


def test_killed_client_gets_its_run_killed(
    started: Project, marks: Path, reaper: list[psutil.Process]
) -> None:
    run = client(started, "tests/test_sleeper.py::test_with_grandchild")
    child = request_child(run, marks)
    grandchild = psutil.Process(read_mark(marks, "grandchild"))
    reaper.extend([child, grandchild])
    run.kill()
    run.communicate(timeout=CLIENT_TIMEOUT)
    _assert_run_cleaned_up(started, child, grandchild)


def test_closed_terminal_gets_its_run_killed(
    started: Project, marks: Path, reaper: list[psutil.Process]
) -> None:
    term = PtyProcess(
        [SNAPD, "pytest", "tests/test_sleeper.py::test_with_grandchild"],
        str(started.root),
        started.env,
    )
    try:
        child = request_child(term.process, marks)
        grandchild = psutil.Process(read_mark(marks, "grandchild"))
        reaper.extend([child, grandchild])
    finally:
        os.close(term.master)  # the terminal window is closed: SIGHUP to its session
    code = term.process.wait(timeout=CLIENT_TIMEOUT)
    assert code == -signal.SIGHUP  # as pytest itself would end on a closed terminal
    _assert_run_cleaned_up(started, child, grandchild)


# -- many clients -----------------------------------------------------------------------------


def test_fifty_clients_at_once_each_get_their_own_result(started: Project) -> None:
    def expected(n: int) -> tuple[int, str]:
        return (1, "1 failed") if n % 5 == 3 else (0, "1 passed")

    # 25 on one node id, 25 on different ones.
    numbers = [3] * 25 + list(range(25))
    args = [("-v", "-p", "no:cacheprovider", f"tests/test_many.py::test_n[{n}]") for n in numbers]
    cold = {n: started.cold(*args[i]) for i, n in ((0, 3), (26, 1))}
    before = session_served(started)
    runs = [client(started, *a) for a in args]
    outputs = [finish(run) for run in runs]
    for n, run, (out, err) in zip(numbers, runs, outputs, strict=True):
        code, summary = expected(n)
        assert run.returncode == code, (n, out, err)
        assert err == "", (n, err)
        outcome = "FAILED" if code else "PASSED"
        assert f"tests/test_many.py::test_n[{n}] {outcome}" in out, (n, out)
        assert out.count("::test_n[") == 1 + code, (n, out)  # its own test, no one else's
        assert f"= {summary} in " in out, (n, out)
        if n in cold:
            assert normalise(out) == normalise(cold[n].stdout)
    assert session_served(started) == before + len(runs)
