"""Exact after random edits: the short CI version of ``tools/edit_fuzz.py``.

Two seeds of 12 steps, one run writing bytecode (as users' machines do) and one not. Each step
is an edit followed at once by ``snapd pytest``, compared with plain pytest on the same tree.
The long run is ``python tools/edit_fuzz.py --steps 1000 --seed 1``.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import pytest
from conftest import Project, wait_for

# tools/ is not a package: the tool stays runnable as a plain script.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tools"))
import edit_fuzz

pytestmark = pytest.mark.timeout(600)


@pytest.mark.parametrize(
    ("seed", "bytecode"), [(1, True), (2, False)], ids=["bytecode", "no-bytecode"]
)
def test_snapd_matches_pytest_after_every_edit(seed: int, bytecode: bool, tmp_path: Path) -> None:
    report = edit_fuzz.run_fuzz(12, seed, tmp_path / "fuzz", bytecode)
    mismatches = "\n".join(str(m) for m in report.mismatches)
    assert not report.mismatches, f"{mismatches}\n{report.details()}\n{report.summary()}"
    assert len(report.warm_seconds) == 13  # step 0 and 12 edits, each compared


# -- stalls the fuzz found: the session snapshot is never rebuilt ------------------------------
# Not stale results (every run is then served, correctly, from the base snapshot) but every
# run after them is 2-4x slower until the daemon restarts: `Chain.invalidate` only acts on a
# ready or building snapshot, and nothing else starts a session build.

_PYPROJECT = '[tool.pytest.ini_options]\ntestpaths = ["tests"]\npythonpath = ["."]\n'


def _session_state(project: Project) -> str:
    status = json.loads(project.snapd("status", "--json").stdout)
    (chain,) = status["chains"]
    states = [s["state"] for s in chain["snapshots"] if s["layer"] == "session"]
    return str(states[0]) if states else "none"


def _wait_for_state(project: Project, wanted: str, timeout: float) -> None:
    wait_for(lambda: _session_state(project) == wanted, timeout, f"session {wanted}")


def test_failed_session_is_rebuilt_after_the_fix(project: Project) -> None:
    project.write("pyproject.toml", _PYPROJECT)
    project.write("pkg/__init__.py", "")
    project.write("pkg/deep.py", "VALUE = 1\n")
    project.write("tests/conftest.py", "from pkg import deep\n")
    project.write("tests/test_a.py", "def test_a():\n    pass\n")
    project.start()
    project.write("pkg/deep.py", "VALUE = (\n")  # conftest cannot import: the build fails
    assert project.run("tests").returncode == 4
    _wait_for_state(project, "failed", 20)
    project.write("pkg/deep.py", "VALUE = 1\n")
    assert project.run("tests").returncode == 0
    _wait_for_state(project, "ready", 10)


def test_session_edited_while_built_is_rebuilt(project: Project) -> None:
    project.write("pyproject.toml", _PYPROJECT)
    project.write("pkg/__init__.py", "")
    project.write("pkg/deep.py", "VALUE = 1\n")
    # The sleep comes after deep.py is read: an edit during it lands mid-build, every time.
    project.write("tests/conftest.py", "import time\n\nfrom pkg import deep\n\ntime.sleep(2)\n")
    project.write("tests/test_a.py", "def test_a():\n    pass\n")
    project.start()
    project.write("pkg/deep.py", "VALUE = 2\n")
    _wait_for_state(project, "building", 20)
    time.sleep(0.5)  # into the build's sleep, after it read deep.py
    project.write("pkg/deep.py", "VALUE = 3\n")
    assert project.run("tests").returncode == 0
    _wait_for_state(project, "ready", 15)
