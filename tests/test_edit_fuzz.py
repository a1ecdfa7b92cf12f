"""Exact after random edits: the short CI version of ``tools/edit_fuzz.py``.

Two seeds of 12 steps, one run writing bytecode (as users' machines do) and one not. Each step
is an edit followed at once by ``snapd pytest``, compared with plain pytest on the same tree.
The long run is ``python tools/edit_fuzz.py --steps 1000 --seed 1``.
"""

from __future__ import annotations

import json
import os
import py_compile
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


# -- stalls the fuzz found (fixed in 23dde67) ----------------------------------------------------
# Not stale results: every run was then served, correctly, from the base snapshot, but 2-4x
# slower until the daemon restarted, because nothing rebuilt a session snapshot whose build
# failed or that was born stale. And `snapd stop` then waited out its whole 30 s deadline for
# a failed session, whose state never became "dead".

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
    project.write("pkg/deep.py", "VALUE = (\n")
    assert project.run("tests").returncode == 4
    _wait_for_state(project, "failed", 20)
    began = time.monotonic()
    assert project.snapd("stop", timeout=60).returncode == 0
    assert time.monotonic() - began < 10


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


# -- a stale result the fuzz found: seed 1, step 836 (snapd f1a926d) -----------------------------
# leaf.py was saved twice in one second with the same size (VALUE = 8, then VALUE = 3); the
# first version's .pyc (written by the run in between) had the source's mtime second and size.
# A session snapshot being built imported pkg.leaf from that .pyc before the watcher dropped it,
# then stamped leaf.py with the digest of what was on disk (VALUE = 3): the next run was served
# from that session and saw VALUE = 8 (the watcher's event came while it was still building, so
# it invalidated nothing). Here a gate in the test module holds the session build until the
# same-second save is made, then a sleep outlasts the watcher's debounce: what the fuzz hit by
# chance happens every time.


def test_session_never_holds_bytecode_older_than_its_stamps(
    project: Project, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    gate = tmp_path / "gate"  # outside the project: the watcher and the file sets never see it
    project.write("pyproject.toml", _PYPROJECT)
    project.write("pkg/__init__.py", "")
    project.write("pkg/leaf.py", "VALUE = 1\n")
    project.write("pkg/other.py", "X = 1\n")
    project.write("tests/conftest.py", "from pkg import other\n")
    project.write(
        "tests/test_leaf.py",
        f"import os\nimport time\n\nwhile os.path.exists({str(gate)!r}):\n    time.sleep(0.002)\n\n"
        # The build then outlasts the watcher's debounce: its event finds the session building.
        "from pkg import leaf\n\ntime.sleep(0.5)\n\n\ndef test_leaf():\n    assert leaf.VALUE == 3\n",
    )
    project.start()
    request.addfinalizer(lambda: gate.unlink(missing_ok=True))  # never leave a build waiting
    gate.touch()
    project.write("pkg/other.py", "X = 2\n")  # the session is rebuilt, and waits at the gate
    _wait_for_state(project, "building", 20)
    time.sleep(0.3)
    leaf = project.root / "pkg/leaf.py"
    leaf.write_text("VALUE = 8\n")
    py_compile.compile(str(leaf), invalidation_mode=py_compile.PycInvalidationMode.TIMESTAMP)
    second = leaf.stat().st_mtime_ns // 10**9
    leaf.write_text("VALUE = 3\n")  # same size; forced into the same second if the clock moved
    if leaf.stat().st_mtime_ns // 10**9 != second:
        os.utime(leaf, ns=(second * 10**9 + 999_000_000,) * 2)
    gate.unlink()  # the build imports pkg.leaf now, well before the watcher's debounce ends
    _wait_for_state(project, "ready", 20)
    warm = project.run("tests/test_leaf.py")
    cold = project.cold("tests/test_leaf.py")
    assert cold.returncode == 0
    assert warm.returncode == cold.returncode, warm.stdout
