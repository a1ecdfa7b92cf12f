"""pytest-cov: ``--cov`` measures what the run executed, module-level lines included (a
module the session snapshot imported was executed there, not in the request child: such runs
must not come from the session snapshot)."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest

pytest.importorskip("pytest_cov")

from conftest import (
    Project,
    canonical,
    module_project,
    outcomes,
    pyproject,
    same,
    wait_for,
    warm,
    warm_of,
)

pytestmark = pytest.mark.timeout(300)
project = module_project()

CALC = """\
RATE = 3


def add(a, b):
    return a + b


def scale(x):
    if x < 0:
        return 0
    return x * RATE


def unused():
    return "never called"
"""

TESTS = """\
from calc import add, scale


def test_add():
    assert add(1, 2) == 3


def test_scale():
    assert scale(2) == 6
"""

FILE = "tests/test_calc.py"


def write(project: Project) -> None:
    project.write("pyproject.toml", pyproject())
    project.write("calc/__init__.py", CALC)
    project.write(FILE, TESTS)


def _table(output: str) -> str:
    """The coverage table (from its header to its total line)."""
    found = re.search(r"^Name .*?^TOTAL.*?$", output, re.M | re.S)
    assert found, output
    return found[0]


def test_term_report(project: Project) -> None:
    write(project)
    project.start()
    args = ("-v", "--cov=calc", "--cov-report=term-missing", FILE)
    pair = same(project, *args, output=False, notice=True)
    assert outcomes(pair.cold.stdout) == {f"{FILE}::test_add": "PASSED",
                                          f"{FILE}::test_scale": "PASSED"}  # fmt: skip
    cold_table = _table(pair.cold.stdout)
    assert "calc/__init__.py" in cold_table and "10, 15" in cold_table
    assert _table(pair.warm.stdout) == cold_table
    assert canonical(pair.warm.stdout) == canonical(pair.cold.stdout)
    # snapd today serves --cov runs from the base snapshot, which holds no project code.
    assert pair.notices in ([], [NOTICE])


NOTICE = (
    "snapd: pytest-cov measures coverage from the start of the run: served from the base snapshot"
)


def test_json_data(project: Project) -> None:
    write(project)
    project.start()
    reports = {}
    for name, run in (("cold", project.cold), ("warm", warm_of(project))):
        report = project.root / f"{name}.json"
        result = run("-q", "--cov=calc", f"--cov-report=json:{report}", f"{FILE}::test_add")
        assert result.returncode == 0, result.stdout + result.stderr
        data = json.loads(report.read_text())
        reports[name] = {path: (f["executed_lines"], f["missing_lines"])
                         for path, f in data["files"].items()}  # fmt: skip
    assert reports["warm"] == reports["cold"]


def _session(project: Project, args: list[str]) -> dict[str, Any]:
    """The session snapshot of the chain of ``args``, as ``snapd status`` shows it."""
    status = json.loads(project.snapd("status", "--json").stdout)
    for chain in status["chains"]:
        if chain["args"] == args:
            sessions = [s for s in chain["snapshots"] if s["layer"] == "session"]
            return dict(sessions[0]) if sessions else {}
    return {}


def test_a_runs_data_outlives_a_rebuilt_snapshot(project: Project) -> None:
    """After plain pytest, ``.coverage`` holds the run's data until the next run. A session
    snapshot rebuilt in the background (after an edit) must not erase it, as pytest-cov does
    when it starts measuring: snapshots do not measure."""
    write(project)
    project.start()
    key = ["--cov=calc", "--cov-report="]
    data = project.root / ".coverage"
    data.unlink(missing_ok=True)
    assert warm(project, "-q", *key, FILE).returncode == 0
    before = data.read_bytes()
    wait_for(lambda: _session(project, key).get("state") == "ready", 120, "the session")
    built = _session(project, key)["pid"]

    def rebuilt() -> bool:
        session = _session(project, key)
        return session.get("pid") not in (None, built) and session["state"] == "ready"

    project.write("calc/__init__.py", CALC + "\n\ndef more():\n    return 1\n")
    wait_for(rebuilt, 120, "the session rebuilt after the edit")
    assert data.read_bytes() == before
    write(project)
