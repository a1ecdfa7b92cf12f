"""pytest-django and SQLAlchemy on a real PostgreSQL: the session snapshot creates the test
database and holds connections; every request child must use connections of its own.

The cluster is private to this module: initdb into a temporary folder, the server on a unix
socket there (as the ``postgres`` user when running as root), stopped at the end.
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator

import pytest

pytest.importorskip("pytest_django")
pytest.importorskip("psycopg")
pytest.importorskip("sqlalchemy")

from conftest import (
    DJANGO_POSTGRES,
    SNAPD,
    Postgres,
    Project,
    canonical,
    module_project,
    outcomes,
    postgres_cluster,
    warm,
    write_django_project,
)

pytestmark = pytest.mark.timeout(300)
project = module_project()

CONFTEST = """\
import os

import pytest
import sqlalchemy
from django.db import connection


@pytest.fixture(scope="session")
def snapshot_backend(django_db_setup, django_db_blocker):
    # Leaves the session's Django connection open, as a session fixture using the database
    # does: under snapd, in the session snapshot.
    with django_db_blocker.unblock(), connection.cursor() as cursor:
        cursor.execute("SELECT pg_backend_pid()")
        return cursor.fetchone()[0], os.getpid()


@pytest.fixture(scope="session")
def engine():
    url = sqlalchemy.engine.URL.create(
        "postgresql+psycopg", username=os.environ["PGUSER"], database="postgres",
        port=int(os.environ["PGPORT"]), query={"host": os.environ["PGHOST"]},
    )
    engine = sqlalchemy.create_engine(url, pool_size=1)
    with engine.connect() as conn:  # back to the pool, open
        backend = conn.execute(sqlalchemy.text("SELECT pg_backend_pid()")).scalar()
    yield engine, (backend, os.getpid())
    engine.dispose()
"""

TESTS = """\
import os
import time

import sqlalchemy
from django.db import connection

from notes.models import Note

BARRIER = {barrier!r}


def barrier():
    # Concurrent runs meet here, so that they hold their connections at the same time.
    if not os.path.isdir(BARRIER):
        return
    open(os.path.join(BARRIER, str(os.getpid())), "w").close()
    deadline = time.monotonic() + 30
    while len(os.listdir(BARRIER)) < 2:
        assert time.monotonic() < deadline, "the other run never came"
        time.sleep(0.002)


def record(kind, backend, made):
    with open(f"backends-{{kind}}.log", "a") as log:
        log.write(f"{{backend}}\\n")
    snapshot_backend, made_by = made
    if made_by != os.getpid():
        # The session fixture's connection was made in another process (snapd's session
        # snapshot): this one must not use it.
        assert backend != snapshot_backend


def test_django_connection_of_its_own(db, snapshot_backend):
    barrier()
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_backend_pid()")
        backend = cursor.fetchone()[0]
    record("django", backend, snapshot_backend)
    Note.objects.bulk_create(Note(text=str(i)) for i in range(50))
    for _ in range(20):
        assert Note.objects.count() == 50


def test_sqlalchemy_connection_of_its_own(engine):
    engine, made = engine
    barrier()
    with engine.connect() as conn:
        backend = conn.execute(sqlalchemy.text("SELECT pg_backend_pid()")).scalar()
        record("sqlalchemy", backend, made)
        for i in range(200):
            assert conn.execute(sqlalchemy.text("SELECT :i"), {{"i": i}}).scalar() == i
"""

NOTES = "tests/test_notes.py"
FILE = "tests/test_pg.py"


@pytest.fixture(scope="module")
def postgres() -> Iterator[Postgres]:
    with postgres_cluster() as cluster:
        cluster.psql("CREATE DATABASE notes")
        yield cluster


@pytest.fixture
def pg_project(postgres: Postgres, project: Project) -> Project:
    # The cluster first: it outlives the module's daemon, whose teardown drops the test
    # database.
    write_django_project(project, DJANGO_POSTGRES)
    project.write("tests/conftest.py", CONFTEST)
    project.write(FILE, TESTS.format(barrier=str(project.root.parent / "barrier")))
    project.env.update(postgres.env())
    return project


def cold(project: Project, *args: str) -> subprocess.CompletedProcess[str]:
    """Plain pytest, on a test database of its own (the snapshot holds ``test_notes``)."""
    saved = project.env
    project.env = {**saved, "NOTES_TEST_DB": "test_notes_cold"}
    try:
        return project.cold(*args)
    finally:
        project.env = saved


def test_same_outcomes_and_output_as_pytest(pg_project: Project) -> None:
    pg_project.start()
    for args in (("-v", NOTES), ("-v", FILE)):
        plain = cold(pg_project, *args)
        hot = warm(pg_project, *args)
        assert (hot.returncode, outcomes(hot.stdout)) == (
            plain.returncode,
            outcomes(plain.stdout),
        ), f"cold:\n{plain.stdout}{plain.stderr}\nwarm:\n{hot.stdout}{hot.stderr}"
        assert canonical(hot.stdout) == canonical(plain.stdout)
    assert outcomes(plain.stdout) == {
        f"{FILE}::test_django_connection_of_its_own": "PASSED",
        f"{FILE}::test_sqlalchemy_connection_of_its_own": "PASSED",
    }


def test_every_request_sees_a_clean_database_created_once(
    pg_project: Project, postgres: Postgres
) -> None:
    pg_project.start()
    created = postgres.psql("SELECT oid FROM pg_database WHERE datname = 'test_notes'")
    assert created  # by the session snapshot
    for _ in range(2):
        for name in ("test_create_rows", "test_create_committed_rows", "test_table_is_empty",
                     "NotesTestCase"):  # fmt: skip
            result = warm(pg_project, "-q", f"{NOTES}::{name}")
            assert result.returncode == 0, result.stdout + result.stderr
            assert result.stderr == ""
    result = warm(pg_project, "-v", "-s", f"{NOTES}::test_create_rows")
    assert result.returncode == 0, result.stdout + result.stderr
    # Django prints this (with -v and -s) whenever it creates a test database.
    assert "Creating test database" not in result.stdout + result.stderr
    assert postgres.psql("SELECT oid FROM pg_database WHERE datname = 'test_notes'") == created


@pytest.mark.parametrize("kind", ["django", "sqlalchemy"])
def test_concurrent_requests_have_connections_of_their_own(pg_project: Project, kind: str) -> None:
    """Two runs at once, each holding its connection: neither uses the snapshot's."""
    barrier = pg_project.root.parent / "barrier"
    test = f"{FILE}::test_{kind}_connection_of_its_own"
    pg_project.start()
    log = pg_project.root / f"backends-{kind}.log"
    log.unlink(missing_ok=True)  # the module's other tests record theirs too
    for round in range(2):
        barrier.mkdir()
        runs = [
            subprocess.Popen(
                [SNAPD, "pytest", "-q", test], cwd=pg_project.root, env=pg_project.env,
                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
            )
            for _ in range(2)
        ]  # fmt: skip
        for run in runs:
            output = run.communicate(timeout=120)[0]
            assert run.returncode == 0, output
        shutil.rmtree(barrier)
        # Each run asserted its backend is not the snapshot's; nor is it the other run's.
        backends = log.read_text().split()[2 * round :]
        assert len(backends) == 2 and backends[0] != backends[1], backends
