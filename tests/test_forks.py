"""After-fork hooks run in every request child, before pytest starts."""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
from pathlib import Path

import pytest
from conftest import SNAPD, Project

from snapd import forks

pytestmark = pytest.mark.timeout(180)


def test_decorated_and_configured_hooks_run_in_every_child(project: Project) -> None:
    log = project.root / "hooks.log"
    project.write(
        "pyproject.toml",
        '[tool.pytest.ini_options]\ntestpaths = ["tests"]\npythonpath = ["."]\n\n'
        '[tool.snapd]\nafter_fork = ["helpers:configured"]\n',
    )
    project.write(
        "helpers.py",
        f"import os\n\ndef configured():\n    with open({str(log)!r}, 'a') as f:\n"
        "        f.write(f'configured {os.getpid()}\\n')\n",
    )
    project.write(
        "tests/conftest.py",
        f"import os\nimport snapd\n\n@snapd.after_fork\ndef decorated():\n"
        f"    with open({str(log)!r}, 'a') as f:\n        f.write(f'decorated {{os.getpid()}}\\n')\n",
    )
    project.write("tests/test_a.py", "def test_a():\n    pass\n")
    project.start()
    for _ in range(2):
        assert project.run("tests/test_a.py", "-q").returncode == 0
    lines = log.read_text().split()
    assert lines[0::2] == ["decorated", "configured"] * 2
    pids = set(lines[1::2])
    assert len(pids) == 2  # two children, each ran both hooks


def test_a_failing_hook_is_reported(project: Project) -> None:
    project.write(
        "tests/conftest.py",
        "import snapd\n\n@snapd.after_fork\ndef broken():\n    raise RuntimeError('no database')\n",
    )
    project.write("tests/test_a.py", "def test_a():\n    pass\n")
    project.start()
    result = project.run("tests/test_a.py")
    assert result.returncode == 1
    assert "after_fork hook" in result.stderr and "no database" in result.stderr


def test_numpy_draws_differ_between_runs_as_in_fresh_processes(project: Project) -> None:
    # Without the built-in reseed, every child would draw what the snapshot would draw next.
    draws = project.root / "draws.txt"
    # numpy makes its global state on first use: here, in the snapshot.
    project.write("tests/conftest.py", "import numpy\n\nnumpy.random.random()\n")
    project.write(
        "tests/test_a.py",
        f"import numpy\n\ndef test_a():\n    with open({str(draws)!r}, 'a') as f:\n"
        "        f.write(f'{numpy.random.random()!r}\\n')\n",
    )
    project.start()
    for _ in range(3):
        assert project.run("tests/test_a.py", "-q").returncode == 0
    assert len(set(draws.read_text().split())) == 3


def test_an_inherited_event_loop_gets_a_selector_and_self_pipe_of_its_own() -> None:
    """A loop made before a fork, renewed in the child: the child's wakeups reach the
    child's loop, the parent's its own, and what the loop watched is still watched."""
    loop = asyncio.new_event_loop()
    reader, writer = socket.socketpair()
    got: list[bytes] = []
    loop.add_reader(reader.fileno(), lambda: got.append(reader.recv(16)))
    before = (loop._selector, loop._ssock.fileno(), loop._csock.fileno())  # type: ignore[attr-defined]
    pid = os.fork()
    if pid == 0:  # the child: exit code 0 when all held
        code = 1
        try:
            forks.renew_loop(loop)
            after = (loop._selector, loop._ssock.fileno(), loop._csock.fileno())  # type: ignore[attr-defined]
            renewed = after[0] is not before[0] and after[1:] != before[1:]

            async def main() -> int:
                # Results of threads come back through the self-pipe.
                total = 0
                for i in range(200):
                    total += await asyncio.to_thread(int, i)
                writer.send(b"ping")
                while not got:
                    await asyncio.sleep(0.001)
                return total

            total = loop.run_until_complete(asyncio.wait_for(main(), 30))
            code = 0 if renewed and total == sum(range(200)) and got == [b"ping"] else 2
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    # The parent's loop is untouched and works.
    assert (loop._selector, loop._ssock.fileno(), loop._csock.fileno()) == before  # type: ignore[attr-defined]
    assert loop.run_until_complete(asyncio.to_thread(int, 7)) == 7
    loop.remove_reader(reader.fileno())
    loop.close()
    reader.close()
    writer.close()


SHARED_LOOP_CONFTEST = """\
import asyncio

import pytest


@pytest.fixture(scope="session")
def session_loop():
    loop = asyncio.new_event_loop()
    yield loop
    loop.close()
"""

SHARED_LOOP_TESTS = """\
import asyncio
import os
import time

BARRIER = {barrier!r}


def test_wakeups(session_loop):
    async def main():
        # Two runs meet here, so that both use the snapshot's loop at the same time.
        open(os.path.join(BARRIER, str(os.getpid())), "w").close()
        deadline = time.monotonic() + 30
        while len(os.listdir(BARRIER)) < 2:
            assert time.monotonic() < deadline, "the other run never came"
            await asyncio.sleep(0.002)
        for i in range(2000):
            assert await asyncio.to_thread(int, i) == i

    session_loop.run_until_complete(asyncio.wait_for(main(), 60))
"""


def test_concurrent_runs_on_a_session_fixture_loop(project: Project, tmp_path: Path) -> None:
    """A plain session fixture's event loop, reused by two runs at once: each run's thread
    results must reach its own loop (with a shared self-pipe a sibling takes them)."""
    barrier = tmp_path / "barrier"
    project.write("tests/conftest.py", SHARED_LOOP_CONFTEST)
    project.write("tests/test_loop.py", SHARED_LOOP_TESTS.format(barrier=str(barrier)))
    project.start()
    for _ in range(2):
        barrier.mkdir()
        runs = [
            subprocess.Popen(
                [SNAPD, "pytest", "-q", "-p", "no:cacheprovider", "tests/test_loop.py"],
                cwd=project.root, env=project.env, stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT, text=True,
            )
            for _ in range(2)
        ]  # fmt: skip
        for run in runs:
            output = run.communicate(timeout=120)[0]
            assert run.returncode == 0, output
        for entry in barrier.iterdir():
            entry.unlink()
        barrier.rmdir()
