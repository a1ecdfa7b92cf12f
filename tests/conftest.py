"""Real projects, real daemons: each test gets a temporary project and its own runtime dir."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

BIN = Path(sys.executable).parent
SNAPD = str(BIN / "snapd")
PYTEST = str(BIN / "pytest")
# Variables our own pytest run sets, which a user's shell would not have. Under pytest-xdist:
# the worker's own, and COLUMNS and LINES, which GNU readline (pytest imports it at start-up)
# puts in the C environment that the workers inherit. They would override a pty's size.
_OURS = ("PYTEST_ADDOPTS", "PYTEST_CURRENT_TEST", "PYTEST_VERSION", "PYTEST_PLUGINS")
_OURS += ("PYTEST_XDIST_WORKER", "PYTEST_XDIST_WORKER_COUNT", "PYTEST_XDIST_TESTRUNUID")
_OURS += ("COLUMNS", "LINES")


def normalise(output: str) -> str:
    """Output with what legitimately differs between two runs (durations) blanked out."""
    output = re.sub(r" in \d+\.\d+s( \([0-9:]+\))?", " in Xs", output)
    return re.sub(r"=+ (.* in Xs) =+", r"== \1 ==", output)


class Project:
    """A temporary pytest project, its snapd runtime dir, and ways to run it."""

    def __init__(self, root: Path, runtime: str) -> None:
        self.root = root
        self.runtime = runtime
        root.mkdir(parents=True, exist_ok=True)
        self.env = {k: v for k, v in os.environ.items() if k not in _OURS}
        self.env["SNAPD_RUNTIME_DIR"] = runtime

    def write(self, relative: str, text: str) -> Path:
        path = self.root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text))
        return path

    def snapd(
        self, *args: str, timeout: float = 120, **kw: object
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [SNAPD, *args], cwd=self.root, env=self.env, capture_output=True, text=True,
            stdin=subprocess.DEVNULL, timeout=timeout, **kw,  # type: ignore[arg-type]
        )  # fmt: skip

    def run(self, *args: str, **kw: object) -> subprocess.CompletedProcess[str]:
        """``snapd pytest ARGS``."""
        return self.snapd("pytest", *args, **kw)

    def cold(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        """Plain ``pytest ARGS``: what snapd must match."""
        return subprocess.run(
            [PYTEST, *args], cwd=self.root, env=self.env, capture_output=True, text=True,
            stdin=subprocess.DEVNULL, timeout=timeout,
        )  # fmt: skip

    def start(self) -> None:
        result = self.snapd("start", "--wait")
        assert result.returncode == 0, result.stdout + result.stderr

    def manager_pid(self) -> int | None:
        for pidfile in Path(self.runtime).glob("*/pid"):
            try:
                return int(pidfile.read_text())
            except ValueError:
                return None
        return None

    def processes(self) -> list[psutil.Process]:
        """The manager and everything below it."""
        pid = self.manager_pid()
        if pid is None:
            return []
        try:
            manager = psutil.Process(pid)
            return [manager, *manager.children(recursive=True)]
        except psutil.NoSuchProcess:
            return []

    def log(self) -> str:
        return "".join(p.read_text() for p in Path(self.runtime).glob("*/log"))


def wait_for(condition: object, timeout: float = 30, message: str = "condition") -> None:
    """Poll ``condition()`` until true: for states that only a poll can observe."""
    deadline = time.monotonic() + timeout
    while not condition():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {message}")
        time.sleep(0.02)


@pytest.fixture
def runtime_dir() -> Iterator[str]:
    # Short, so socket paths stay under 108 bytes whatever tmp_path looks like.
    path = tempfile.mkdtemp(prefix="sd", dir="/tmp")
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def project(tmp_path: Path, runtime_dir: str) -> Iterator[Project]:
    proj = Project(tmp_path / "proj", runtime_dir)
    proj.write("pyproject.toml", '[tool.pytest.ini_options]\ntestpaths = ["tests"]\n')
    yield proj
    stop_project(proj)


def stop_project(proj: Project) -> None:
    """``snapd stop``, and kill whatever of the daemon's processes is left."""
    survivors = proj.processes()
    proj.snapd("stop", timeout=60)
    for process in survivors:
        try:
            process.send_signal(signal.SIGKILL)
        except psutil.NoSuchProcess:
            pass
