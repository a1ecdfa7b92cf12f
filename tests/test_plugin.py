"""The pytest plugin: plain ``pytest`` served by the daemon when enabled, as IDEs run it."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from conftest import PYTEST, Project, normalise

pytestmark = pytest.mark.timeout(180)

TESTS = "def test_ok():\n    pass\n\ndef test_bad():\n    assert 1 == 2\n"


@pytest.fixture
def started(project: Project) -> Project:
    project.write("tests/test_a.py", TESTS)
    project.start()
    return project


def served(project: Project) -> int:
    status = json.loads(project.snapd("status", "--json").stdout)
    return int(status["counts"]["session"] + status["counts"]["base"])


def pytest_run(
    project: Project, *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [PYTEST, *args],
        cwd=project.root,
        env=env or project.env,
        capture_output=True,
        text=True,
        timeout=120,
    )


# The plugin hooks pytest's own start-up (load_initial_conftests, its capture manager, addini):
# the -p and ini cases, and the debugger check, are core.
@pytest.mark.parametrize(
    "how",
    [
        "env",
        pytest.param("-p", marks=pytest.mark.core),
        pytest.param("ini", marks=pytest.mark.core),
    ],
)
def test_enabled_pytest_is_served_by_the_daemon(started: Project, how: str) -> None:
    env = dict(started.env)
    args = ["tests/test_a.py"]
    if how == "env":
        env["SNAPD_PYTEST"] = "1"
    elif how == "-p":
        args = ["-p", "snapd", *args]
    else:
        started.write("pytest.ini", "[pytest]\ntestpaths = tests\nsnapd = true\n")
        started.snapd("stop")
        started.start()
    before = served(started)
    warm = pytest_run(started, *args, env=env)
    assert served(started) == before + 1
    cold = started.cold("tests/test_a.py")  # the plugin is loaded there too, and inert
    assert warm.returncode == cold.returncode == 1
    assert normalise(warm.stdout) == normalise(cold.stdout)
    assert warm.stderr == ""


def test_not_enabled_it_does_nothing(project: Project) -> None:
    project.write("tests/test_a.py", TESTS)
    result = pytest_run(project, "tests/test_a.py")
    assert result.returncode == 1
    assert project.manager_pid() is None  # no daemon was started


@pytest.mark.core
def test_under_a_debugger_it_steps_aside(started: Project) -> None:
    env = {**started.env, "SNAPD_PYTEST": "1"}
    traced = (
        "import sys, pytest; sys.settrace(lambda *a: None); sys.exit(pytest.main(sys.argv[1:]))"
    )
    before = served(started)
    result = subprocess.run(
        [sys.executable, "-c", traced, "tests/test_a.py"],
        cwd=started.root,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 1 and "1 failed, 1 passed" in result.stdout
    assert served(started) == before


def test_a_pytest_started_by_a_served_test_runs_as_usual(started: Project) -> None:
    started.write(
        "tests/test_nested.py",
        "import os, subprocess, sys\n\ndef test_nested(tmp_path):\n"
        "    (tmp_path / 'test_inner.py').write_text('def test_inner():\\n    pass\\n')\n"
        "    assert 'SNAPD_PYTEST' not in os.environ\n"
        "    result = subprocess.run([sys.executable, '-m', 'pytest', str(tmp_path)], capture_output=True, text=True)\n"
        "    assert '1 passed' in result.stdout\n",
    )
    env = {**started.env, "SNAPD_PYTEST": "1"}
    before = served(started)
    result = pytest_run(started, "tests/test_nested.py", env=env)
    assert result.returncode == 0, result.stdout
    assert served(started) == before + 1
