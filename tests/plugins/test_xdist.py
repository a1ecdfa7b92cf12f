"""pytest-xdist: ``-n 2`` gives plain pytest's outcomes (snapd has no parallel runs from
snapshots yet: whatever it does instead must be exact)."""

from __future__ import annotations

from pathlib import Path

import pytest

pytest.importorskip("xdist")

from conftest import Project, junit_outcomes, module_project, notices, pyproject, warm_of

pytestmark = pytest.mark.timeout(300)
project = module_project()

CONFTEST = """\
import os

import pytest


@pytest.fixture(scope="session")
def worker():
    return os.environ.get("PYTEST_XDIST_WORKER", "main")
"""

TESTS = """\
import pytest


@pytest.mark.parametrize("n", range(8))
def test_numbers(n, worker):
    assert worker.startswith("gw")
    assert n != 5


def test_skipped():
    pytest.skip("not today")
"""


def _run(
    project: Project, run: object, tmp_path: Path, name: str, *args: str
) -> tuple[int, dict[str, str], str, str]:
    report = tmp_path / f"{name}.xml"
    result = run(*args, f"--junitxml={report}")  # type: ignore[operator]
    summary = result.stdout.strip().splitlines()[-1] if result.stdout.strip() else ""
    return result.returncode, junit_outcomes(report), summary.split(" in ")[0], result.stderr


# ``-n 2`` alone sets ``--dist load``; ``-n 0`` runs no workers (and is served as usual).
@pytest.mark.parametrize("args", [("-n", "2", "--dist", "loadfile"), ("-n", "0")])
def test_outcomes_as_in_pytest(project: Project, tmp_path: Path, args: tuple[str, ...]) -> None:
    project.write("pyproject.toml", pyproject())
    project.write("tests/conftest.py", CONFTEST)
    project.write("tests/test_many.py", TESTS)
    project.start()
    cold = _run(project, project.cold, tmp_path, "cold", "-q", *args)
    for attempt in range(2 if args == ("-n", "0") else 1):
        warm = _run(project, warm_of(project), tmp_path, f"warm{attempt}", "-q", *args)
        assert warm[:3] == cold[:3], (warm, cold)
        # Today snapd serves these runs from the base snapshot and says so.
        assert notices(warm[3]) in ([], [NOTICE]), warm[3]
        assert [line for line in warm[3].splitlines() if line not in notices(warm[3])] == (
            cold[3].splitlines()
        )


NOTICE = "snapd: pytest-xdist runs the tests in workers of its own: served from the base snapshot"
