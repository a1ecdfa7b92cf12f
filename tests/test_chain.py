"""Exact after every edit: each edit is followed at once by a run, compared with plain pytest.

A changed project module invalidates the session snapshot (never the base); a changed test
module that nothing imports is re-imported by the request child alone.
"""

from __future__ import annotations

import json
import os
import socket
import sys
import time
from pathlib import Path

import pytest
from conftest import Project, normalise

from snapd import fileset
from snapd.config import Settings
from snapd.manager.chain import Chain
from snapd.manager.snapshots import READY, Snapshot

pytestmark = pytest.mark.timeout(240)


@pytest.fixture(params=["bytecode", "no-bytecode"])
def project_graph(project: Project, request: pytest.FixtureRequest) -> Project:
    # Users' machines write bytecode; stale .pyc after an edit is the risk to cover.
    if request.param == "bytecode":
        project.env.pop("PYTHONDONTWRITEBYTECODE", None)
    else:
        project.env["PYTHONDONTWRITEBYTECODE"] = "1"
    project.write(
        "pyproject.toml",
        '[tool.pytest.ini_options]\ntestpaths = ["tests"]\npythonpath = ["."]\n',
    )
    project.write("pkg/__init__.py", "")
    project.write("pkg/deep.py", "VALUE = 1\n")
    project.write("pkg/mid.py", "from pkg import deep\n\nDOUBLED = deep.VALUE * 2\n")
    project.write("pkg/data.txt", "5\n")
    project.write(
        "pkg/config.py",
        "import os\n\nwith open(os.path.join(os.path.dirname(__file__), 'data.txt')) as f:\n"
        "    LIMIT = int(f.read())\n",
    )
    project.write(
        "tests/conftest.py",
        "import pytest\nfrom pkg import mid\n\nSETTING = 1\n\n"
        "@pytest.fixture(scope='session')\ndef setting():\n    return SETTING\n",
    )
    project.write(
        "tests/test_mid.py",
        "from pkg import mid\n\ndef test_doubled():\n    assert mid.DOUBLED == 2\n",
    )
    project.write("tests/test_conf.py", "def test_setting(setting):\n    assert setting == 1\n")
    project.write(
        "tests/test_data.py",
        "from pkg import config\n\ndef test_limit():\n    assert config.LIMIT < 9\n",
    )
    project.write("tests/test_leaf.py", "def test_leaf():\n    assert 1 == 1\n")
    project.start()
    return project


def same_as_cold(project: Project, *args: str) -> str:
    warm = project.run(*args)
    cold = project.cold(*args)
    assert warm.returncode == cold.returncode, warm.stdout + warm.stderr
    assert normalise(warm.stdout) == normalise(cold.stdout)
    return warm.stdout


def status(project: Project) -> dict[str, object]:
    return json.loads(project.snapd("status", "--json").stdout)  # type: ignore[no-any-return]


def snapshot_pids(project: Project) -> dict[str, int]:
    (chain,) = status(project)["chains"]  # type: ignore[misc]
    return {s["layer"]: s["pid"] for s in chain["snapshots"]}


def test_deep_module_edit_is_seen_at_once(project_graph: Project) -> None:
    assert "1 passed" in same_as_cold(project_graph, "tests/test_mid.py")
    base_before = snapshot_pids(project_graph)["base"]
    project_graph.write("pkg/deep.py", "VALUE = 2\n")  # same size, same second
    assert "1 failed" in same_as_cold(project_graph, "tests/test_mid.py")
    project_graph.write("pkg/deep.py", "VALUE = 1\n")
    assert "1 passed" in same_as_cold(project_graph, "tests/test_mid.py")
    assert snapshot_pids(project_graph)["base"] == base_before  # only project code rebuilt


def test_test_module_edit_keeps_the_session(project_graph: Project) -> None:
    same_as_cold(project_graph, "tests/test_leaf.py")
    session_before = snapshot_pids(project_graph)["session"]
    for expected in ("2 == 1", "1 == 1", "3 == 1"):
        project_graph.write("tests/test_leaf.py", f"def test_leaf():\n    assert {expected}\n")
        same_as_cold(project_graph, "tests/test_leaf.py")
    assert snapshot_pids(project_graph)["session"] == session_before
    assert status(project_graph)["counts"]["session"] >= 4  # type: ignore[index]


def test_conftest_edit(project_graph: Project) -> None:
    assert "1 passed" in same_as_cold(project_graph, "tests/test_conf.py")
    project_graph.write(
        "tests/conftest.py",
        "import pytest\nfrom pkg import mid\n\nSETTING = 7\n\n"
        "@pytest.fixture(scope='session')\ndef setting():\n    return SETTING\n",
    )
    assert "1 failed" in same_as_cold(project_graph, "tests/test_conf.py")


def test_config_edit(project_graph: Project) -> None:
    project_graph.write(
        "tests/test_x.py", "import pytest\n\n@pytest.mark.xfail\ndef test_x():\n    pass\n"
    )
    assert "1 xpassed" in same_as_cold(project_graph, "tests/test_x.py")
    project_graph.write(
        "pyproject.toml",
        '[tool.pytest.ini_options]\ntestpaths = ["tests"]\npythonpath = ["."]\nxfail_strict = true\n',
    )
    assert "1 failed" in same_as_cold(project_graph, "tests/test_x.py")


def test_added_and_deleted_files(project_graph: Project) -> None:
    project_graph.write("tests/test_new.py", "def test_new():\n    assert False\n")
    assert "1 failed" in same_as_cold(project_graph, "tests")
    os.unlink(project_graph.root / "tests/test_new.py")
    same_as_cold(project_graph, "tests")
    os.unlink(project_graph.root / "tests/test_leaf.py")
    same_as_cold(project_graph, "tests")
    project_graph.write("tests/conftest.py", "import pytest\n")  # a fixture disappears
    assert "fixture 'setting' not found" in same_as_cold(project_graph, "tests")


def test_new_conftest_in_a_subfolder(project_graph: Project) -> None:
    project_graph.write("tests/sub/test_s.py", "def test_s(extra):\n    assert extra == 3\n")
    same_as_cold(project_graph, "tests/sub")
    project_graph.write(
        "tests/sub/conftest.py", "import pytest\n\n@pytest.fixture\ndef extra():\n    return 3\n"
    )
    assert "1 passed" in same_as_cold(project_graph, "tests/sub")


def test_syntax_error_then_fix(project_graph: Project) -> None:
    project_graph.write("pkg/deep.py", "VALUE = (\n")
    same_as_cold(project_graph, "tests/test_mid.py")
    project_graph.write("pkg/deep.py", "VALUE = 1\n")
    assert "1 passed" in same_as_cold(project_graph, "tests/test_mid.py")
    project_graph.write("tests/test_leaf.py", "def test_leaf(:\n")
    same_as_cold(project_graph, "tests/test_leaf.py")
    project_graph.write("tests/test_leaf.py", "def test_leaf():\n    pass\n")
    assert "1 passed" in same_as_cold(project_graph, "tests/test_leaf.py")


def test_data_file_read_at_import(project_graph: Project) -> None:
    assert "1 passed" in same_as_cold(project_graph, "tests/test_data.py")
    project_graph.write("pkg/data.txt", "9\n")
    assert "1 failed" in same_as_cold(project_graph, "tests/test_data.py")


def test_status_names_the_invalidating_file(project_graph: Project) -> None:
    project_graph.write("pkg/deep.py", "VALUE = 3\n")
    same_as_cold(project_graph, "tests/test_mid.py")
    text = project_graph.snapd("status").stdout
    assert "invalidated: " in text and "pkg/deep.py changed" in text


def test_watch_ignore_keeps_the_session_warm(project: Project) -> None:
    project.write(
        "pyproject.toml",
        '[tool.pytest.ini_options]\ntestpaths = ["tests"]\n\n[tool.snapd]\nwatch_ignore = ["notes/*"]\n',
    )
    project.write("notes/todo.txt", "1\n")
    project.write(
        "tests/conftest.py",
        "import pathlib\nTODO = (pathlib.Path(__file__).parent.parent / 'notes/todo.txt').read_text()\n",
    )
    project.write("tests/test_a.py", "def test_a():\n    pass\n")
    project.start()
    session = snapshot_pids(project)["session"]
    project.write("notes/todo.txt", "2\n")
    assert project.run("tests/test_a.py").returncode == 0
    assert snapshot_pids(project)["session"] == session


# -- checks made ahead of a request ------------------------------------------------------------


def test_a_check_begun_after_the_client_connected_stands_for_its_request(tmp_path: Path) -> None:
    module = tmp_path / "mod.py"
    module.write_text("A = 1\n")
    chain = Chain(
        "key", str(tmp_path), str(tmp_path), sys.executable, [], {},
        str(tmp_path / "state.json"), str(tmp_path / "log"), lambda run: run(), Settings(),
    )  # fmt: skip
    ours, theirs = socket.socketpair()
    with ours, theirs:
        snapshot = Snapshot("base", ours, chain.changed)
        snapshot.state = READY
        snapshot.files = fileset.stamps([str(module)])
        chain.base = snapshot

        connected = time.monotonic()
        chain.check_ahead()
        module.write_text("A = 22\n")  # after the check began: after the client started
        assert chain._moved(snapshot, since=connected) == []
        # A request whose client connected after the check gets a check of its own.
        assert chain._moved(snapshot, since=time.monotonic()) == [str(module)]

        module.write_text("A = 1\n")
        connected = time.monotonic()
        chain.check_ahead()
        snapshot.files_version += 1  # the snapshot imported more since: that was not checked
        module.write_text("A = 3\n")
        assert chain._moved(snapshot, since=connected) == [str(module)]
