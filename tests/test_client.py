"""``snapd pytest`` is a drop-in for ``pytest``: exit codes, output, terminal, pdb, Ctrl-C."""

from __future__ import annotations

import re

import pytest
from conftest import PYTEST, SNAPD, Project, normalise, wait_for
from ptyrun import PtyProcess

pytestmark = pytest.mark.timeout(180)

OUTCOMES = """
    import pytest

    def test_pass():
        assert True

    def test_fail():
        assert 1 + 1 == 3

    @pytest.mark.skip(reason="not today")
    def test_skip():
        pass

    @pytest.mark.xfail(reason="known")
    def test_xfail():
        assert False
"""


@pytest.fixture
def started(project: Project) -> Project:
    project.write("tests/conftest.py", "import json  # a conftest, so the session holds one\n")
    project.write("tests/test_outcomes.py", OUTCOMES)
    project.write("tests/test_only_pass.py", "def test_ok():\n    pass\n")
    project.write("tests/test_broken.py", "import nonexistent_module_xyz\n")
    project.write("empty/test_nothing.py", "# no tests here\n")
    project.start()
    return project


@pytest.mark.parametrize(
    ("args", "code"),
    [
        (["tests/test_only_pass.py"], 0),
        # The core ones: how assertions, tracebacks, usage errors and "no tests" read.
        pytest.param(["tests/test_outcomes.py"], 1, marks=pytest.mark.core),
        pytest.param(["tests/test_broken.py"], 2, marks=pytest.mark.core),
        pytest.param(["--no-such-option"], 4, marks=pytest.mark.core),
        pytest.param(["empty"], 5, marks=pytest.mark.core),
        (["tests/test_outcomes.py", "-k", "nothing_matches"], 5),
    ],
    ids=["pass", "fail", "collection-error", "usage-error", "no-tests", "deselected"],
)
def test_exit_codes_and_output_match_plain_pytest(
    started: Project, args: list[str], code: int
) -> None:
    warm = started.run(*args)
    cold = started.cold(*args)
    assert cold.returncode == code
    assert warm.returncode == code, warm.stderr
    assert normalise(warm.stdout) == normalise(cold.stdout)
    assert normalise(warm.stderr) == normalise(cold.stderr)


@pytest.mark.core
def test_outcome_lines_match(started: Project) -> None:
    warm = started.run("-rA", "-v", "tests/test_outcomes.py")
    cold = started.cold("-rA", "-v", "tests/test_outcomes.py")
    for outcome in ("PASSED", "FAILED", "SKIPPED", "XFAIL"):
        assert outcome in warm.stdout
    assert "1 failed, 1 passed, 1 skipped, 1 xfailed" in warm.stdout
    assert normalise(warm.stdout) == normalise(cold.stdout)
    assert "from session" in started.snapd("status").stdout


def test_served_from_the_session_snapshot(started: Project) -> None:
    started.run("tests/test_only_pass.py")
    status = started.snapd("status", "--json").stdout
    assert '"session": 1' in status


@pytest.mark.core
def test_colours_and_width_follow_the_clients_terminal(started: Project) -> None:
    def on_pty(argv: list[str]) -> str:
        term = PtyProcess(argv, str(started.root), started.env, rows=30, cols=61)
        assert term.wait() == 1
        return term.text

    warm = on_pty([SNAPD, "pytest", "tests/test_outcomes.py"])
    cold = on_pty([PYTEST, "tests/test_outcomes.py"])
    assert "\x1b[" in warm  # coloured, as on a terminal
    rules = [
        line
        for line in warm.splitlines()
        if re.fullmatch(r"(\x1b\[[0-9;]*m)*=+ .* =+(\x1b\[0m)?", line)
    ]
    assert rules and all(len(re.sub(r"\x1b\[[0-9;]*m", "", r)) == 61 for r in rules)
    assert normalise(warm) == normalise(cold)


@pytest.mark.core
def test_pdb_takes_commands_from_the_terminal(started: Project) -> None:
    started.write(
        "tests/test_pdb.py", "def test_value():\n    secret = 41\n    assert secret == 42\n"
    )
    term = PtyProcess(
        [SNAPD, "pytest", "--pdb", "tests/test_pdb.py"], str(started.root), started.env
    )
    term.expect(r"\(Pdb\) ")
    term.send("p secret + 1\n")
    term.expect(r"\n42\r?\n")
    term.send("c\n")
    assert term.wait() == 1
    assert "1 failed" in term.text


@pytest.mark.core
def test_ctrl_c_interrupts_the_test_like_pytest(started: Project) -> None:
    started.write(
        "tests/test_sleep.py",
        "import time\n\ndef test_sleeps():\n    print('sleeping now', flush=True)\n    time.sleep(60)\n",
    )
    term = PtyProcess(
        [SNAPD, "pytest", "-s", "tests/test_sleep.py"], str(started.root), started.env
    )
    term.expect("sleeping now")
    # Python looks for a signal between bytecodes: one that lands after the print and before
    # the sleep's system call waits for the sleep to end (this test hit that on Python 3.13).
    # So the Ctrl-C comes once the test is inside its sleep.
    wait_for(lambda: _in_a_sleep(started), message="the test to sleep")
    term.send("\x03")
    assert term.wait(timeout=30) == 2, term.text
    assert "KeyboardInterrupt" in term.text, term.text
    assert "no tests ran" in term.text or "interrupted" in term.text.lower(), term.text


def _in_a_sleep(project: Project) -> bool:
    """Whether one of the processes below the manager waits in a sleep system call."""
    for process in project.processes()[1:]:
        try:
            with open(f"/proc/{process.pid}/wchan") as wchan:
                if "nanosleep" in wchan.read():
                    return True
        except OSError:  # it ended meanwhile
            pass
    return False


def test_child_killed_by_a_signal_ends_the_client_with_that_signal(started: Project) -> None:
    started.write(
        "tests/test_die.py",
        "import os, signal\n\ndef test_die():\n    os.kill(os.getpid(), signal.SIGKILL)\n",
    )
    result = started.run("tests/test_die.py")
    assert result.returncode == -9


@pytest.mark.core
def test_without_a_daemon_it_runs_plain_pytest_and_says_so(project: Project) -> None:
    project.write("tests/test_a.py", "def test_a():\n    pass\n")
    project.env["SNAPD_AUTOSTART"] = "0"
    result = project.run("tests/test_a.py")
    assert result.returncode == 0
    assert "1 passed" in result.stdout
    assert result.stderr.startswith("snapd: no daemon running")
    assert result.stderr.count("\n") == 1


def test_a_closed_stdin_is_served_like_dev_null(started: Project) -> None:
    import subprocess

    result = subprocess.run(
        f"exec 0<&- && {SNAPD} pytest tests/test_only_pass.py", shell=True, cwd=started.root,
        env=started.env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == 0
    assert "1 passed" in result.stdout
    assert "snapd:" not in result.stderr  # served, not a cold fallback


def test_the_run_has_the_clients_umask_and_limits(started: Project) -> None:
    import subprocess

    started.write(
        "tests/test_inherit.py",
        "import os, resource\n\ndef test_show(tmp_path):\n    (tmp_path / 'f').write_text('x')\n"
        "    print('MODE', oct((tmp_path / 'f').stat().st_mode & 0o777))\n"
        "    print('NOFILE', resource.getrlimit(resource.RLIMIT_NOFILE))\n",
    )

    def shell(command: str) -> str:
        result = subprocess.run(
            f"umask 077 && ulimit -n 512 && {command} -s -q tests/test_inherit.py",
            shell=True, cwd=started.root, env=started.env, capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert result.returncode == 0, result.stdout + result.stderr
        return "\n".join(
            line for line in result.stdout.splitlines() if line.startswith(("MODE", "NOFILE"))
        )

    warm = shell(f"{SNAPD} pytest")
    assert "MODE 0o600" in warm and "NOFILE (512, 512)" in warm
    assert warm == shell(PYTEST)
