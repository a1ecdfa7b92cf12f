"""After-fork hooks run in every request child, before pytest starts."""

from __future__ import annotations

import pytest
from conftest import Project

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
