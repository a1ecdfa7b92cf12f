"""The session snapshot: conftests, collection and session fixtures done once, reused by every
request; a broken build shown exactly as pytest shows it."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest
from conftest import Project, normalise

pytestmark = pytest.mark.timeout(180)

CONFTEST = """
    import os
    import pytest

    LOADED = os.getpid()

    @pytest.fixture(scope="session")
    def resource():
        with open(os.environ["COUNTER"], "a") as f:
            f.write("setup\\n")
        yield {"answer": 42}
        with open(os.environ["COUNTER"], "a") as f:
            f.write("teardown\\n")
"""


@pytest.mark.core
def test_session_fixture_is_set_up_once_across_requests(project: Project) -> None:
    counter = project.root / "counter.txt"
    project.env["COUNTER"] = str(counter)
    project.write("tests/conftest.py", CONFTEST)
    project.write(
        "tests/test_res.py", "def test_res(resource):\n    assert resource['answer'] == 42\n"
    )
    project.start()
    for _ in range(5):
        result = project.run("tests/test_res.py", "-q")
        assert result.returncode == 0, result.stdout + result.stderr
    assert counter.read_text() == "setup\n"
    project.snapd("stop")
    assert counter.read_text() == "setup\nteardown\n"  # the snapshot owns the teardown


@pytest.mark.core
def test_conftest_is_not_imported_again(project: Project) -> None:
    project.write("tests/conftest.py", CONFTEST)
    project.write(
        "tests/test_pid.py",
        "import os\nimport conftest\n\ndef test_loaded_in_snapshot():\n"
        "    assert conftest.LOADED != os.getpid()\n",
    )
    project.env["COUNTER"] = str(project.root / "counter.txt")
    project.start()
    result = project.run("tests/test_pid.py", "-q")
    assert result.returncode == 0, result.stdout


@pytest.mark.core
def test_conftest_syntax_error_is_shown_as_pytest_shows_it(project: Project) -> None:
    project.write("tests/conftest.py", "def broken(:\n")
    project.write("tests/test_a.py", "def test_a():\n    pass\n")
    result = project.snapd("start", "--wait")
    assert "failed" in result.stdout
    warm = project.run("tests/test_a.py")
    cold = project.cold("tests/test_a.py")
    assert cold.returncode == 4
    assert warm.returncode == 4
    assert "SyntaxError" in warm.stderr
    assert normalise(warm.stderr) == normalise(cold.stderr)
    assert normalise(warm.stdout) == normalise(cold.stdout)


@pytest.mark.core
def test_collection_errors_in_one_module_do_not_stop_the_others(project: Project) -> None:
    project.write("tests/test_ok.py", "def test_ok():\n    pass\n")
    project.write("tests/test_bad.py", "raise RuntimeError('boom at import')\n")
    project.start()
    ok = project.run("tests/test_ok.py", "-q")
    assert ok.returncode == 0
    bad = project.run("tests/test_bad.py", "-q")
    cold = project.cold("tests/test_bad.py", "-q")
    assert bad.returncode == cold.returncode == 2
    assert normalise(bad.stdout) == normalise(cold.stdout)


@pytest.mark.core
def test_a_thread_in_the_snapshot_is_named_and_the_run_stays_exact(project: Project) -> None:
    project.write(
        "tests/conftest.py",
        """
        import threading, time
        import pytest

        @pytest.fixture(scope="session", autouse=True)
        def poller():
            stop = threading.Event()
            thread = threading.Thread(target=stop.wait, name="metrics-poller", daemon=True)
            thread.start()
            yield
            stop.set()
        """,
    )
    project.write("tests/test_a.py", "def test_a():\n    assert 2 + 2 == 5\n")
    project.snapd("start", "--wait")
    status = project.snapd("status").stdout
    assert "threads alive, cannot fork" in status and "metrics-poller" in status
    warm = project.run("tests/test_a.py")
    cold = project.cold("tests/test_a.py")
    assert warm.returncode == cold.returncode == 1
    assert normalise(warm.stdout) == normalise(cold.stdout)
    assert "metrics-poller" in warm.stderr and "served from the base" in warm.stderr


def test_numpy_blas_threads_do_not_keep_the_session_from_serving(project: Project) -> None:
    # OpenBLAS, which numpy loads, starts worker threads at import and parks them in a fork
    # handler: the session snapshot of a project that imports numpy must still serve.
    probe = subprocess.run(
        [sys.executable, "-c", "import os, numpy; print(len(os.listdir('/proc/self/task')))"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    if int(probe.stdout) < 2:
        pytest.skip("numpy's BLAS starts no worker thread here (one core?)")
    project.write(
        "tests/conftest.py",
        """
        import numpy as np
        import pytest

        @pytest.fixture(scope="session")
        def matrix():
            a = np.arange(90_000.0).reshape(300, 300) / 90_000
            return a @ a.T
        """,
    )
    project.write(
        "tests/test_m.py",
        "def test_m(matrix):\n    value = round(float((matrix @ matrix).trace()), 3)\n"
        "    assert value == 0.0\n",
    )
    project.snapd("start", "--wait")
    status = project.snapd("status").stdout
    assert re.search(r"session\s+ready", status), status
    warm = project.run("tests/test_m.py")
    cold = project.cold("tests/test_m.py")
    assert warm.returncode == cold.returncode == 1
    assert normalise(warm.stdout) == normalise(cold.stdout)
    assert "served from the base" not in warm.stderr


@pytest.mark.core
def test_the_snapshots_log_handlers_stay_out_of_runs(project: Project) -> None:
    project.write(
        "pyproject.toml",
        '[tool.pytest.ini_options]\ntestpaths = ["tests"]\nlog_cli = true\nlog_cli_level = "INFO"\n'
        'log_file = "run.log"\nlog_file_level = "INFO"\nlog_file_format = "%(levelname)s %(message)s"\n',
    )
    project.write(
        "tests/test_log.py",
        "import logging\n\ndef test_log():\n    logging.getLogger('app').warning('from the test')\n"
        "    print(sorted(type(h).__name__ for h in logging.root.handlers))\n",
    )
    project.start()
    log = project.root / "run.log"
    warm = project.run("-s", "tests/test_log.py")
    warm_log = log.read_text()
    cold = project.cold("-s", "tests/test_log.py")
    assert warm.returncode == cold.returncode == 0
    assert normalise(warm.stdout) == normalise(cold.stdout)
    assert warm.stdout.count("from the test") == 1
    assert warm_log == log.read_text() == "WARNING from the test\n"


@pytest.mark.core
def test_a_session_fixture_whose_value_is_none_is_set_up_once(project: Project) -> None:
    counter = project.root / "counter.txt"
    project.env["COUNTER"] = str(counter)
    project.write(
        "tests/conftest.py",
        "import os, pytest\n\n@pytest.fixture(scope='session', autouse=True)\ndef environment():\n"
        "    with open(os.environ['COUNTER'], 'a') as f:\n        f.write('setup\\n')\n    yield\n",
    )
    project.write("tests/test_a.py", "def test_a():\n    pass\n")
    project.start()
    for _ in range(3):
        assert project.run("tests/test_a.py", "-q").returncode == 0
    assert counter.read_text() == "setup\n"
    warm = project.run("--setup-show", "tests/test_a.py")
    assert "SETUP    S environment" in warm.stdout


def test_a_session_fixture_that_draws_random_numbers_is_set_up_by_every_run(
    project: Project,
) -> None:
    """Its value depends on the run's random state (pytest-randomly seeds it per run): each
    run sets it up, as a cold run does. A fixture that depends on it too; others not."""
    counter = project.root / "counter.txt"
    project.env["COUNTER"] = str(counter)
    project.write(
        "tests/conftest.py",
        """\
        import os
        import random

        import pytest


        def log(name):
            with open(os.environ["COUNTER"], "a") as f:
                f.write(f"{name}\\n")


        @pytest.fixture(scope="session")
        def drawn():
            log("drawn")
            return random.random()


        @pytest.fixture(scope="session")
        def derived(drawn):
            log("derived")
            return drawn * 2


        @pytest.fixture(scope="session")
        def steady():
            log("steady")
            return 42
        """,
    )
    project.write(
        "tests/test_a.py",
        "def test_a(drawn, derived, steady):\n    print('value', drawn)\n"
        "    assert derived == 2 * drawn and steady == 42\n",
    )
    project.start()
    assert sorted(counter.read_text().split()) == ["derived", "drawn", "steady"]
    values = set()
    for _ in range(2):
        result = project.run("-q", "-s", "tests/test_a.py")
        assert result.returncode == 0, result.stdout + result.stderr
        values.add(result.stdout.split("value ")[1].split()[0])
    assert len(values) == 2  # drawn afresh by each run, as cold runs do
    assert sorted(counter.read_text().split()) == sorted(
        ["derived", "drawn", "steady"] + ["derived", "drawn"] * 2
    )


SLOW_FIXTURE = """\
import os
import time

import pytest


@pytest.fixture(scope="session")
def slow():
    with open(os.environ["COUNTER"], "a") as f:
        f.write("setup\\n")
    time.sleep(2)
    return "ready"


def test_uses_slow(slow):
    assert slow == "ready"
"""


def test_a_timeout_covers_a_session_fixture_set_up_in_the_snapshot(project: Project) -> None:
    """pytest-timeout's clock covers fixture setup: with ``--timeout`` shorter than the
    fixture's setup a cold run errors in that setup, so the run sets it up itself; with a
    longer one (or none) the snapshot's value serves."""
    counter = project.root / "counter.txt"
    project.env["COUNTER"] = str(counter)
    project.write("tests/test_slow.py", SLOW_FIXTURE)
    project.start()
    for args, setups in ((["--timeout=1"], 1), (["--timeout=30"], 0), ([], 0)):
        cold = project.cold("-v", *args, "tests/test_slow.py")
        before = len(counter.read_text().split())
        warm = project.run("-v", *args, "tests/test_slow.py")
        assert len(counter.read_text().split()) - before == setups
        assert warm.returncode == cold.returncode, warm.stdout + warm.stderr
        assert normalise(warm.stdout) == normalise(cold.stdout)
        assert ("Timeout (>1.0s) from pytest-timeout" in warm.stdout) == bool(setups)
