"""The plugin compatibility leg: helpers shared by tests/plugins.

These tests need the plugins of tools/plugins-requirements.txt, installed in a venv of their
own (pytest-randomly reorders and reseeds every run of the environment it is in); in any other
venv this folder is not collected. Run them (PostgreSQL's programs installed, as Debian's
``postgresql`` package has them; the tests start a private cluster themselves)::

    python3 -m venv /tmp/vplug
    /tmp/vplug/bin/pip install -e '.[dev]' -r tools/plugins-requirements.txt
    /tmp/vplug/bin/python -m pytest -p no:cacheprovider -p no:randomly -ra tests/plugins

The projects written here turn pytest-randomly off in their own configuration unless the test
is about pytest-randomly: with a random seed per run, no two runs, cold or warm, print the
same thing.

Test modules here ``from conftest import ...``: this module re-exports the top-level tests
conftest's helpers, since ``conftest`` in ``sys.modules`` is this module once it is imported.
"""

from __future__ import annotations

import contextlib
import functools
import importlib.util
import os
import re
import shutil
import subprocess
import sys
import tempfile
import types
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

_TOP = Path(__file__).resolve().parents[1] / "conftest.py"


def _top_conftest() -> types.ModuleType:
    """The top-level tests conftest: pytest dropped it from ``sys.modules`` to import this one."""
    for module in list(sys.modules.values()):
        if getattr(module, "__file__", None) == str(_TOP):
            return module
    spec = importlib.util.spec_from_file_location("snapd_tests_conftest", _TOP)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


# The plugin leg's venv has them all (tools/plugins-requirements.txt). Anywhere else (the
# main test run, whose venv has hypothesis, pytest-timeout and pytest-xdist but not the rest)
# these tests are left out: they belong to that leg.
_NEEDED = ("django", "pytest_django", "pytest_asyncio", "hypothesis", "pytest_randomly",
           "pytest_mock", "pytest_cov", "xdist", "pytest_timeout", "psycopg", "sqlalchemy")  # fmt: skip
MISSING = [name for name in _NEEDED if importlib.util.find_spec(name) is None]
if MISSING:
    collect_ignore_glob = ["test_*.py"]

_top = _top_conftest()
# Re-exported as they are: test modules of the top-level folder collected after this one
# import these names from ``conftest`` too.
Project = _top.Project
normalise = _top.normalise
wait_for = _top.wait_for
SNAPD: str = _top.SNAPD
PYTEST: str = _top.PYTEST


def module_project() -> Callable[..., Iterator[Project]]:
    """A ``project`` fixture of module scope, for a test module to take as its own::

        project = module_project()

    One project, one daemon for the module's tests: building the snapshots, with every one of
    these plugins loaded, is most of such a test's time. The tests write the same files (a
    write of unchanged content keeps the snapshots: the manager compares content hashes) and
    start the daemon (a no-op once it runs); each cleans up the logs it reads.
    """

    @pytest.fixture(scope="module", name="project")
    def shared(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Project]:
        runtime = tempfile.mkdtemp(prefix="sd", dir="/tmp")
        proj = Project(tmp_path_factory.mktemp("shared") / "proj", runtime)
        proj.write("pyproject.toml", '[tool.pytest.ini_options]\ntestpaths = ["tests"]\n')
        try:
            yield proj
        finally:
            _top.stop_project(proj)
            shutil.rmtree(runtime, ignore_errors=True)

    return shared


# A ``-v`` line: ``tests/test_a.py::test_b PASSED   [ 50%]``.
_OUTCOME = re.compile(
    r"^(?P<node>\S+::\S.*?) (?P<outcome>PASSED|FAILED|ERROR|SKIPPED|XFAIL|XPASS)\b", re.M
)


def pyproject(*lines: str, randomly: bool = False) -> str:
    """A pyproject.toml whose ini options are ``lines`` (plus testpaths, pythonpath and
    pytest-asyncio's loop scope, whose absence it warns about)."""
    addopts = "" if randomly else 'addopts = "-p no:randomly"\n'
    body = "".join(f"{line}\n" for line in lines)
    return (
        '[tool.pytest.ini_options]\ntestpaths = ["tests"]\npythonpath = ["."]\n'
        f'asyncio_default_fixture_loop_scope = "function"\n{addopts}{body}'
    )


def canonical(output: str) -> str:
    """The top-level ``normalise``, and object addresses blanked out (``<… at 0x7f…>``):
    they differ between any two runs."""
    return re.sub(r"\b0x[0-9a-f]{6,}\b", "0x?", _top.normalise(output))


def outcomes(output: str) -> dict[str, str]:
    """Per-test outcomes from ``-v`` output: node id -> PASSED, FAILED, …"""
    return {m["node"]: m["outcome"] for m in _OUTCOME.finditer(output)}


def junit_outcomes(path: Path) -> dict[str, str]:
    """Per-test outcomes from a ``--junitxml`` report: ``classname::name`` -> outcome."""
    found: dict[str, str] = {}
    for case in ET.parse(path).getroot().iter("testcase"):
        outcome = "passed"
        for child in case:
            if child.tag in ("failure", "error", "skipped"):
                outcome = child.tag
        found[f"{case.get('classname')}::{case.get('name')}"] = outcome
    return found


RESTARTED = "snapd: snapd itself changed since the daemon started"


def warm(project: Project, *args: str) -> subprocess.CompletedProcess[str]:
    """``snapd pytest ARGS``, from a daemon that is up to date with snapd's own sources.

    When snapd's sources change under a running daemon (a developer editing snapd while
    these tests run) the daemon restarts and the client runs plain pytest: that run says
    nothing about snapd, so wait for the new daemon and run again.
    """
    for _ in range(3):
        result = project.run(*args)
        if not result.stderr.startswith(RESTARTED):
            return result
        project.start()
    return result


def warm_of(project: Project) -> Callable[..., subprocess.CompletedProcess[str]]:
    """``warm`` for ``project``, to pass where ``project.cold`` goes too."""
    return functools.partial(warm, project)


def notices(stderr: str) -> list[str]:
    """snapd's own one-line notices on stderr."""
    return [line for line in stderr.splitlines() if line.startswith("snapd: ")]


@dataclass
class Pair:
    cold: subprocess.CompletedProcess[str]
    warm: subprocess.CompletedProcess[str]

    @property
    def notices(self) -> list[str]:
        return notices(self.warm.stderr)


def same(
    project: Project, *args: str, output: bool = True, stderr: bool = True, notice: bool = False
) -> Pair:
    """Run ``pytest ARGS`` and ``snapd pytest ARGS``: the same exit code and outcomes, and
    (unless told otherwise) the same normalised output and stderr. With ``notice``, snapd
    may add its one-line notices to stderr (a run it serves from the base, say)."""
    cold = project.cold(*args)
    hot = warm(project, *args)
    assert (hot.returncode, outcomes(hot.stdout)) == (cold.returncode, outcomes(cold.stdout)), (
        f"cold:\n{cold.stdout}{cold.stderr}\nwarm:\n{hot.stdout}{hot.stderr}"
    )
    if output:
        assert canonical(hot.stdout) == canonical(cold.stdout)
    if stderr:
        hot_stderr = hot.stderr
        if notice:
            hot_stderr = "".join(
                line for line in hot.stderr.splitlines(keepends=True)
                if not line.startswith("snapd: ")
            )  # fmt: skip
        assert hot_stderr == cold.stderr
    return Pair(cold, hot)


# -- a private PostgreSQL cluster ------------------------------------------------------------


@dataclass(frozen=True)
class Postgres:
    """A running cluster: connect with ``host`` (a unix socket folder), ``port``, ``user``."""

    host: str
    port: int
    user: str

    def env(self) -> dict[str, str]:
        return {"PGHOST": self.host, "PGPORT": str(self.port), "PGUSER": self.user}

    def psql(self, sql: str, database: str = "postgres") -> str:
        psql = _pg_bin("psql")
        result = subprocess.run(
            [psql, "-X", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-d", database, "-c", sql],
            env={**os.environ, **self.env()}, capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert result.returncode == 0, result.stderr
        return result.stdout.strip()


def _pg_bin(name: str) -> str:
    found = shutil.which(name)
    if found:
        return found
    versions = sorted(Path("/usr/lib/postgresql").glob(f"*/bin/{name}"))
    if not versions:
        pytest.skip(f"PostgreSQL's {name} is not installed (apt-get install -y postgresql)")
    return str(versions[-1])


def _as_server_user(argv: list[str]) -> list[str]:
    """PostgreSQL refuses to run as root: run its programs as ``postgres`` then."""
    if os.getuid() != 0:
        return argv
    runuser = shutil.which("runuser")
    if runuser:
        return [runuser, "-u", "postgres", "--", *argv]
    return ["su", "postgres", "-s", "/bin/sh", "-c", " ".join(map(_quote, argv))]


def _quote(word: str) -> str:
    return "'" + word.replace("'", "'\\''") + "'"


@contextlib.contextmanager
def postgres_cluster() -> Iterator[Postgres]:
    """initdb into a fresh folder, start the server on a unix socket in it, stop it after."""
    initdb, pg_ctl = _pg_bin("initdb"), _pg_bin("pg_ctl")
    folder = tempfile.mkdtemp(prefix="pg", dir="/tmp")
    data = os.path.join(folder, "data")
    if os.getuid() == 0:
        shutil.chown(folder, "postgres", "postgres")
    run = _as_server_user
    try:
        init = subprocess.run(
            run([initdb, "-D", data, "-U", "postgres", "--auth=trust", "-E", "UTF8",
                 "--no-sync"]),
            capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        assert init.returncode == 0, init.stdout + init.stderr
        options = f"-k {folder} -c listen_addresses='' -c fsync=off -p 5432"
        start = subprocess.run(
            run([pg_ctl, "-D", data, "-o", options, "-l", os.path.join(folder, "log"), "-w",
                 "-t", "60", "start"]),
            capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        assert start.returncode == 0, start.stdout + start.stderr + _read(folder, "log")
        try:
            yield Postgres(folder, 5432, "postgres")
        finally:
            subprocess.run(
                run([pg_ctl, "-D", data, "-m", "fast", "-w", "-t", "60", "stop"]),
                capture_output=True, timeout=120,
            )  # fmt: skip
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _read(folder: str, name: str) -> str:
    try:
        return Path(folder, name).read_text()
    except OSError:
        return ""


# -- a tiny Django project -------------------------------------------------------------------

DJANGO_MODELS = """\
from django.db import models


class Note(models.Model):
    text = models.CharField(max_length=100)
"""

DJANGO_MIGRATION = """\
from django.db import migrations, models


class Migration(migrations.Migration):
    initial = True
    dependencies = []
    operations = [
        migrations.CreateModel(
            name="Note",
            fields=[
                ("id", models.AutoField(auto_created=True, primary_key=True, serialize=False)),
                ("text", models.CharField(max_length=100)),
            ],
        ),
    ]
"""

DJANGO_SQLITE = """\
DATABASES = {"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": "db.sqlite3"}}
"""

DJANGO_POSTGRES = """\
import os

DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.postgresql",
        "NAME": "notes",
        "USER": os.environ["PGUSER"],
        "HOST": os.environ["PGHOST"],
        "PORT": os.environ["PGPORT"],
        "TEST": {"NAME": os.environ.get("NOTES_TEST_DB", "test_notes")},
    }
}
"""

DJANGO_SETTINGS = """\
SECRET_KEY = "not secret"
INSTALLED_APPS = ["notes"]
USE_TZ = True
DEFAULT_AUTO_FIELD = "django.db.models.AutoField"
"""

DJANGO_TESTS = """\
import os

import pytest
from django.db import connection
from django.test import TestCase

from notes.models import Note


def test_create_rows(db):
    Note.objects.bulk_create(Note(text=str(i)) for i in range(3))
    assert Note.objects.count() == 3


@pytest.mark.django_db(transaction=True)
def test_create_committed_rows():
    Note.objects.create(text="committed")
    assert Note.objects.count() == 1


def test_table_is_empty(db):
    assert Note.objects.count() == 0


def test_no_access_without_db():
    with pytest.raises(RuntimeError, match="Database access not allowed"):
        Note.objects.count()


def test_fails(db):
    Note.objects.create(text="one")
    assert Note.objects.count() == 2


class NotesTestCase(TestCase):
    def test_in_a_test_case(self):
        Note.objects.create(text="x")
        self.assertEqual(Note.objects.count(), 1)
"""


def write_django_project(project: Project, database: str) -> None:
    """A tiny Django project: settings, one app with one model and its migration, tests."""
    project.write("pyproject.toml", pyproject('DJANGO_SETTINGS_MODULE = "mysite.settings"'))
    project.write("mysite/__init__.py", "")
    project.write("mysite/settings.py", DJANGO_SETTINGS + database)
    project.write("notes/__init__.py", "")
    project.write("notes/models.py", DJANGO_MODELS)
    project.write("notes/migrations/__init__.py", "")
    project.write("notes/migrations/0001_initial.py", DJANGO_MIGRATION)
    project.write("tests/test_notes.py", DJANGO_TESTS)
