"""pytest-cov: ``--cov`` measures what the run executed, module-level lines included (a
module the session snapshot imported was executed there, not in the request child: such runs
must not come from the session snapshot)."""

from __future__ import annotations

import json
import re

import pytest

pytest.importorskip("pytest_cov")

from conftest import Project, canonical, module_project, outcomes, pyproject, same, warm_of

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
