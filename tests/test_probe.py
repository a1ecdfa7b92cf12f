"""The probe: a session snapshot whose process cannot start pytest a second time (a
``pytest_configure`` or ``pytest_sessionstart`` that sets process-wide state once) serves its
runs from the base snapshot, saying why; every run keeps plain pytest's outcome."""

from __future__ import annotations

import pytest
from conftest import Project, normalise

pytestmark = pytest.mark.timeout(180)

# State that may be set once per process, as Django's settings.configure() or an admin
# site registration is. The module is the snapshot's, and stays loaded in every child.
REGISTRY = """\
registered = []


class AlreadyRegistered(Exception):
    pass


def register(name):
    if name in registered:
        raise AlreadyRegistered(f"{name} is already registered")
    registered.append(name)
"""

TESTS = """\
import registry


def test_registered():
    assert registry.registered == ["{name}"]


def test_fails():
    assert 1 == 2
"""


def _notices(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("snapd: ")]


@pytest.mark.parametrize("hook", ["pytest_configure(config)", "pytest_sessionstart(session)"])
def test_a_hook_that_cannot_run_twice_is_served_from_the_base(project: Project, hook: str) -> None:
    project.write(
        "pyproject.toml", '[tool.pytest.ini_options]\ntestpaths = ["tests"]\npythonpath = ["."]\n'
    )
    project.write("registry.py", REGISTRY)
    project.write("conftest.py", f"import registry\n\n\ndef {hook}:\n    registry.register('x')\n")
    project.write("tests/test_a.py", TESTS.format(name="x"))
    project.start()
    cold = project.cold("-v", "tests/test_a.py")
    assert cold.returncode == 1
    for _ in range(2):
        warm = project.run("-v", "tests/test_a.py")
        assert warm.returncode == cold.returncode, warm.stdout + warm.stderr
        assert normalise(warm.stdout) == normalise(cold.stdout)
        notices = _notices(warm.stderr)
        assert len(notices) == 1, warm.stderr
        assert "registry.AlreadyRegistered: x is already registered" in notices[0]
        assert notices[0].endswith("served from the base snapshot")


def test_a_hook_that_runs_twice_well_keeps_the_session_snapshot(project: Project) -> None:
    """Idempotent process-wide set-up (``django.setup()`` is) and per-config work (markers,
    options) are what most ``pytest_configure`` hooks do: no notice, the session serves."""
    project.write(
        "pyproject.toml", '[tool.pytest.ini_options]\ntestpaths = ["tests"]\npythonpath = ["."]\n'
    )
    project.write("registry.py", REGISTRY)
    project.write(
        "conftest.py",
        "import registry\n\n\ndef pytest_configure(config):\n"
        "    config.addinivalue_line('markers', 'slow: slow tests')\n"
        "    if 'y' not in registry.registered:\n        registry.register('y')\n",
    )
    project.write("tests/test_a.py", TESTS.format(name="y"))
    project.start()
    cold = project.cold("-v", "--strict-markers", "tests/test_a.py")
    warm = project.run("-v", "--strict-markers", "tests/test_a.py")
    assert (warm.returncode, normalise(warm.stdout)) == (cold.returncode, normalise(cold.stdout))
    assert warm.stderr == ""
