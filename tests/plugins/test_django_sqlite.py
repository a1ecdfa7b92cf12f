"""pytest-django on SQLite: the test database is created once, in the session snapshot, and
every request sees it clean."""

from __future__ import annotations

import json

import pytest

pytest.importorskip("pytest_django")

from conftest import (
    DJANGO_MODELS,
    DJANGO_SQLITE,
    Project,
    canonical,
    outcomes,
    pyproject,
    same,
    warm,
    write_django_project,
)

pytestmark = pytest.mark.timeout(300)

TESTS = "tests/test_notes.py"


def test_same_outcomes_and_output_as_pytest(project: Project) -> None:
    write_django_project(project, DJANGO_SQLITE)
    project.start()
    pair = same(project, "-v", TESTS)
    assert pair.cold.returncode == 1
    assert outcomes(pair.cold.stdout) == {
        f"{TESTS}::test_create_rows": "PASSED",
        f"{TESTS}::test_create_committed_rows": "PASSED",
        f"{TESTS}::test_table_is_empty": "PASSED",
        f"{TESTS}::test_no_access_without_db": "PASSED",
        f"{TESTS}::test_fails": "FAILED",
        f"{TESTS}::NotesTestCase::test_in_a_test_case": "PASSED",
    }


def test_every_request_sees_a_clean_database(project: Project) -> None:
    write_django_project(project, DJANGO_SQLITE)
    project.start()
    for _ in range(2):
        for name in ("test_create_rows", "test_create_committed_rows", "test_table_is_empty",
                     "NotesTestCase"):  # fmt: skip
            result = warm(project, "-q", f"{TESTS}::{name}")
            assert result.returncode == 0, result.stdout + result.stderr
            assert result.stderr == ""


def test_the_test_database_is_created_once_in_the_snapshot(project: Project) -> None:
    """``django_db_setup`` is session-scoped: the snapshot created the test database, and no
    request creates it again (cold pytest creates it in every run)."""
    write_django_project(project, DJANGO_SQLITE)
    project.write(
        "tests/conftest.py",
        """\
        import os

        import pytest


        @pytest.fixture(scope="session")
        def django_db_setup(django_db_setup):
            with open("setups.log", "a") as log:
                log.write(f"{os.getpid()}\\n")
        """,
    )
    project.start()
    log = project.root / "setups.log"
    snapshot_setups = log.read_text().split()
    assert len(snapshot_setups) == 1
    for _ in range(2):
        result = warm(project, "-v", "-s", f"{TESTS}::test_create_rows")
        assert result.returncode == 0, result.stdout + result.stderr
        # Django prints this (with -v and -s) whenever it creates a test database.
        assert "Creating test database" not in result.stdout + result.stderr
    assert log.read_text().split() == snapshot_setups
    cold = project.cold("-v", "-s", f"{TESTS}::test_create_rows")
    assert "Creating test database" in cold.stdout + cold.stderr
    assert len(log.read_text().split()) == 2


def test_a_run_served_from_the_base_snapshot(project: Project) -> None:
    """After an edit to a project module the session snapshot rebuilds, and runs meanwhile
    come from the base snapshot, which by then imports Django ahead (learned from earlier
    runs) but has no settings configured: the run must still be pytest's."""
    write_django_project(project, DJANGO_SQLITE)
    project.start()
    warm(project, "-q", f"{TESTS}::test_create_rows")  # snapd learns what runs import
    restarted = project.snapd("restart", "--wait")  # the new base imports what runs imported
    assert restarted.returncode == 0, restarted.stdout + restarted.stderr
    project.write("notes/models.py", DJANGO_MODELS + "\n# edited\n")
    args = ("-v", f"{TESTS}::test_create_rows", f"{TESTS}::test_table_is_empty")
    hot = warm(project, *args)
    served = json.loads(project.snapd("status", "--json").stdout)["counts"]
    plain = project.cold(*args)
    assert served["base"] >= 1  # the case this test is about
    assert (hot.returncode, outcomes(hot.stdout)) == (plain.returncode, outcomes(plain.stdout)), (
        hot.stdout + hot.stderr
    )
    assert canonical(hot.stdout) == canonical(plain.stdout)


CONFIGURING_CONFTEST = """\
import django
from django.conf import settings


def pytest_configure(config):
    # As Django REST framework's own conftest does, and many reusable apps: settings made
    # in pytest_configure, no settings module.
    settings.configure(
        SECRET_KEY="not secret",
        INSTALLED_APPS=["django.contrib.contenttypes", "django.contrib.auth",
                        "django.contrib.admin", "notes"],
        DATABASES={"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": ":memory:"}},
        DEFAULT_AUTO_FIELD="django.db.models.AutoField",
    )
    django.setup()
    # And as django-treebeard's conftest does: models registered with the admin site.
    from django.contrib import admin

    from notes.models import Note

    admin.site.register(Note)
"""


def test_a_conftest_that_configures_django_in_pytest_configure(project: Project) -> None:
    """``pytest_configure`` runs once per process in plain pytest. A request child would run
    it again in a process where the session snapshot already ran it (settings configured and
    models registered, process-wide): snapd finds that out before it serves, and serves such
    runs from the base snapshot, saying why."""
    write_django_project(project, DJANGO_SQLITE)
    project.write("pyproject.toml", pyproject())  # no DJANGO_SETTINGS_MODULE
    project.write("conftest.py", CONFIGURING_CONFTEST)
    project.start()
    for _ in range(2):
        pair = same(project, "-v", TESTS, notice=True)
        assert outcomes(pair.cold.stdout)[f"{TESTS}::test_create_rows"] == "PASSED"
        assert len(pair.notices) == 1, pair.notices
        assert "Settings already configured" in pair.notices[0]
        assert pair.notices[0].endswith("served from the base snapshot")
