"""pytest-asyncio: async tests, and an async session fixture whose event loop the session
snapshot made and every request child inherits."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

pytest.importorskip("pytest_asyncio")

from conftest import SNAPD, Project, module_project, outcomes, pyproject, same, warm

pytestmark = pytest.mark.timeout(300)
project = module_project()

CONFTEST = """\
import asyncio
import os

import pytest
import pytest_asyncio


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def session_state():
    # Made on the session loop: in snapd, once, in the session snapshot.
    with open("setups.log", "a") as log:
        log.write(f"{os.getpid()}\\n")
    yield {"loop": asyncio.get_running_loop(), "queue": asyncio.Queue()}


@pytest.fixture(scope="session")
def plain_loop():
    # The pattern of many suites (and of pytest-asyncio < 0.23): a loop from a plain
    # session fixture, which snapd reuses, so every request child inherits it.
    loop = asyncio.new_event_loop()
    yield loop
    loop.close()
"""

TESTS = """\
import asyncio
import os
import time

import pytest

BARRIER = {barrier!r}
WAKEUPS = 3000


async def barrier():
    # Two concurrent runs meet here, so that both use the session loop at the same time.
    if not os.path.isdir(BARRIER):
        return
    open(os.path.join(BARRIER, str(os.getpid())), "w").close()
    deadline = time.monotonic() + 30
    while len(os.listdir(BARRIER)) < 2:
        assert time.monotonic() < deadline, "the other run never came"
        await asyncio.sleep(0.002)


@pytest.mark.asyncio
async def test_function_loop():
    await asyncio.sleep(0)
    assert await asyncio.to_thread(lambda: 42) == 42


@pytest.mark.asyncio(loop_scope="session")
async def test_session_loop_is_the_fixture_loop(session_state):
    assert asyncio.get_running_loop() is session_state["loop"]
    await session_state["queue"].put(1)
    assert session_state["queue"].qsize() == 1


@pytest.mark.timeout(30)
@pytest.mark.asyncio(loop_scope="session")
async def test_session_loop_wakeups_from_threads(session_state):
    await barrier()
    # Each result comes back through the loop's self-pipe, and nothing else wakes it.
    for i in range(WAKEUPS):
        assert await asyncio.to_thread(int, i) == i


@pytest.mark.timeout(30)
@pytest.mark.asyncio(loop_scope="session")
async def test_session_loop_sockets(session_state):
    async def echo(reader, writer):
        while line := await reader.readline():
            writer.write(line)
            await writer.drain()
        writer.close()

    server = await asyncio.start_server(echo, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    await barrier()
    for i in range(WAKEUPS):
        writer.write(b"%d\\n" % i)
        await writer.drain()
        assert await reader.readline() == b"%d\\n" % i
    writer.close()
    await writer.wait_closed()
    server.close()
    await server.wait_closed()


@pytest.mark.timeout(30)
def test_sync_session_loop_wakeups_from_threads(plain_loop):
    async def main():
        await barrier()
        for i in range(WAKEUPS):
            assert await asyncio.to_thread(int, i) == i

    plain_loop.run_until_complete(main())


@pytest.mark.asyncio
async def test_fails():
    await asyncio.sleep(0)
    assert [1, 2] == [1, 3]
"""

FILE = "tests/test_async.py"


def write(project: Project) -> Path:
    """The module's project (one daemon for its tests); the path of the barrier folder."""
    barrier = project.root.parent / "barrier"
    project.write("pyproject.toml", pyproject())
    project.write("tests/conftest.py", CONFTEST)
    project.write(FILE, TESTS.format(barrier=str(barrier)))
    return barrier


def test_same_outcomes_and_output_as_pytest(project: Project) -> None:
    write(project)
    project.start()
    pair = same(project, "-v", FILE)
    assert pair.cold.returncode == 1
    assert outcomes(pair.cold.stdout) == {
        f"{FILE}::test_function_loop": "PASSED",
        f"{FILE}::test_session_loop_is_the_fixture_loop": "PASSED",
        f"{FILE}::test_session_loop_wakeups_from_threads": "PASSED",
        f"{FILE}::test_session_loop_sockets": "PASSED",
        f"{FILE}::test_sync_session_loop_wakeups_from_threads": "PASSED",
        f"{FILE}::test_fails": "FAILED",
    }
    # The reused session loop, in a second run from the same snapshot.
    same(project, "-v", f"{FILE}::test_session_loop_is_the_fixture_loop")


def test_the_async_session_fixture_is_set_up_once(project: Project) -> None:
    write(project)
    project.start()
    log = project.root / "setups.log"
    before = log.read_text().split()  # the session snapshot's, and the module's cold runs'
    assert before
    for _ in range(2):
        result = warm(project, "-q", f"{FILE}::test_session_loop_is_the_fixture_loop")
        assert result.returncode == 0, result.stdout + result.stderr
    assert log.read_text().split() == before


@pytest.mark.parametrize(
    "test",
    ["test_session_loop_wakeups_from_threads", "test_session_loop_sockets",
     "test_sync_session_loop_wakeups_from_threads"],
)  # fmt: skip
def test_concurrent_runs_on_the_inherited_session_loop(project: Project, test: str) -> None:
    """Two runs at once, each on its copy of the session loop made in the snapshot: each must
    get its own wakeups and its own socket events (an epoll instance and a self-pipe are shared
    by every process forked from the one that made them)."""
    barrier = write(project)
    project.start()
    for _ in range(2):
        barrier.mkdir()
        command = [SNAPD, "pytest", "-q", f"{FILE}::{test}"]
        runs = [
            subprocess.Popen(
                command,
                cwd=project.root,
                env=project.env,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
            )
            for _ in range(2)
        ]
        results = [(run.communicate(timeout=120)[0], run.returncode) for run in runs]
        for output, code in results:
            assert code == 0, output
        shutil.rmtree(barrier)
