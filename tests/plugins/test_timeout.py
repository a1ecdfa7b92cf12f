"""pytest-timeout: a test that outlives ``--timeout`` fails as it does in plain pytest."""

from __future__ import annotations

import re

import pytest

pytest.importorskip("pytest_timeout")

from conftest import Project, canonical, outcomes, pyproject, same

pytestmark = pytest.mark.timeout(300)

TESTS = """\
import threading
import time

import pytest


def test_quick():
    pass


def test_sleeps():
    time.sleep(30)


def test_spins():
    while True:
        pass


@pytest.mark.timeout(0.5)
def test_marked():
    threading.Event().wait(30)
"""

SLOW_SESSION = """\
import time

import pytest


@pytest.fixture(scope="session")
def slow_resource():
    time.sleep(2)
    return "ready"


def test_uses_slow_resource(slow_resource):
    assert slow_resource == "ready"
"""

FILE = "tests/test_slow.py"


def write(project: Project) -> None:
    project.write("pyproject.toml", pyproject())
    project.write(FILE, TESTS)


def test_signal_method(project: Project) -> None:
    write(project)
    project.start()
    pair = same(project, "-v", "--timeout=1", FILE)
    assert outcomes(pair.cold.stdout) == {
        f"{FILE}::test_quick": "PASSED",
        f"{FILE}::test_sleeps": "FAILED",
        f"{FILE}::test_spins": "FAILED",
        f"{FILE}::test_marked": "FAILED",
    }
    assert "Failed: Timeout (>1.0s) from pytest-timeout." in pair.warm.stdout


def _stacks(output: str) -> str:
    """The thread method dumps every thread's stack, named by thread id. The main thread's
    outermost frames are the ``pytest`` script's in a cold run, and snapd's (with the session
    snapshot's own pytest session) in a request child: compare from the run's own
    ``_pytest.config._main`` frame in."""
    lines = re.sub(r"\(\d+\)", "(tid)", canonical(output)).splitlines()
    for header, line in enumerate(lines):
        if line.startswith("~") and "Stack of MainThread" in line:
            end = next(
                (i for i in range(header + 1, len(lines)) if lines[i].startswith(("~", "+"))),
                len(lines),
            )
            mains = [
                i for i in range(header + 1, end)
                if re.match(r'  File ".*/_pytest/config/__init__.py", line \d+, in _main$', lines[i])
            ]  # fmt: skip
            if mains:
                del lines[header + 1 : mains[-1]]
            break
    return "\n".join(lines)


def test_thread_method(project: Project) -> None:
    """The thread method dumps every stack and ends the whole process with exit code 1."""
    write(project)
    project.start()
    for test in ("test_sleeps", "test_spins"):
        args = ("-v", "--timeout=1", "--timeout-method=thread", f"{FILE}::{test}")
        pair = same(project, *args, output=False)
        assert pair.cold.returncode == 1
        assert "+++++ Timeout +++++" in pair.warm.stdout
        assert _stacks(pair.warm.stdout) == _stacks(pair.cold.stdout)
        assert _stacks(pair.warm.stderr) == _stacks(pair.cold.stderr)


def test_a_slow_session_fixture_counts_as_in_pytest(project: Project) -> None:
    """pytest-timeout's clock covers a test's fixture setup: a session fixture slower than
    ``--timeout`` makes plain pytest fail the first test that uses it, at setup."""
    project.write("pyproject.toml", pyproject())
    project.write("tests/test_session.py", SLOW_SESSION)
    project.start()
    pair = same(project, "-v", "--timeout=1", "tests/test_session.py", output=False)
    assert "Timeout (>1.0s) from pytest-timeout" in pair.cold.stdout
