"""pytest-mock: ``mocker`` patches live for one test, ``session_mocker`` for the session; a
failing ``assert_called_*`` reads as in plain pytest."""

from __future__ import annotations

import pytest

pytest.importorskip("pytest_mock")

from conftest import Project, outcomes, pyproject, same

pytestmark = pytest.mark.timeout(300)

CONFTEST = """\
import pytest

import app


@pytest.fixture(scope="session")
def greeting_patched(session_mocker):
    # Made in the session snapshot under snapd: the patch must hold in every request.
    return session_mocker.patch.object(app, "GREETING", "patched for the session")
"""

APP = """\
import os

GREETING = "hello"


def where():
    return os.getcwd()


def greet(name):
    return f"{GREETING}, {name}"
"""

TESTS = """\
import os

import app


def test_patch(mocker):
    mocker.patch("os.getcwd", return_value="/nowhere")
    assert app.where() == "/nowhere"


def test_unpatched_again():
    assert os.getcwd() != "/nowhere"


def test_spy(mocker):
    spy = mocker.spy(app, "greet")
    app.greet("ada")
    spy.assert_called_once_with("ada")
    assert spy.spy_return.endswith(", ada")


def test_session_patch(greeting_patched):
    assert app.greet("ada") == "patched for the session, ada"


def test_called_wrongly(mocker):
    stub = mocker.stub(name="callback")
    stub(1, key="a")
    stub.assert_called_once_with(2, key="b")
"""

FILE = "tests/test_mocks.py"


def test_same_outcomes_and_output_as_pytest(project: Project) -> None:
    project.write("pyproject.toml", pyproject())
    project.write("app.py", APP)
    project.write("tests/conftest.py", CONFTEST)
    project.write(FILE, TESTS)
    project.start()
    pair = same(project, "-v", FILE)
    assert outcomes(pair.cold.stdout) == {
        f"{FILE}::test_patch": "PASSED",
        f"{FILE}::test_unpatched_again": "PASSED",
        f"{FILE}::test_spy": "PASSED",
        f"{FILE}::test_session_patch": "PASSED",
        f"{FILE}::test_called_wrongly": "FAILED",
    }
    # The session's patch alone, in a second run from the same snapshot.
    same(project, "-v", f"{FILE}::test_session_patch")
