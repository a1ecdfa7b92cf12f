"""Rootdir finding (as pytest does it) and the private runtime directory, on real files."""

from __future__ import annotations

import hashlib
import os
import socket
import stat
from pathlib import Path

import pytest

from snapd.paths import (
    ProjectPaths,
    RuntimeDirError,
    ensure_private_dir,
    find_rootdir,
    runtime_base,
)

SOCKET_PATH_MAX = 108  # sizeof(sun_path) on Linux, the terminating NUL included

PROJECT_MARKERS = (
    "pytest.toml",
    ".pytest.toml",
    "pytest.ini",
    ".pytest.ini",
    "pyproject.toml",
    "tox.ini",
    "setup.cfg",
    "setup.py",
)


def make(root: Path, files: dict[str, str]) -> None:
    for relative, content in files.items():
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(content)


@pytest.fixture
def root(tmp_path: Path) -> Path:
    """A directory with no project marker in it or above it."""
    for directory in (tmp_path, *tmp_path.parents):
        found = [n for n in PROJECT_MARKERS if (directory / n).is_file()]
        if found:
            pytest.skip(f"{directory} holds {found}: the temporary directory is inside a project")
    return tmp_path


# -- find_rootdir ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "content"),
    [
        ("pytest.ini", ""),
        ("pytest.ini", "[pytest]\naddopts = -x\n"),
        (".pytest.ini", "[pytest]\n"),
        (
            "pyproject.toml",
            "[project]\nname = 'app'\n\n[tool.pytest.ini_options]\naddopts = '-x'\n",
        ),
        ("pyproject.toml", "[tool.pytest]\naddopts = ['-x']\n"),
        ("tox.ini", "[tox]\nenvlist = py311\n\n[pytest]\naddopts = -x\n"),
        ("setup.cfg", "[metadata]\nname = app\n\n[tool:pytest]\naddopts = -x\n"),
    ],
)
def test_config_file_makes_its_directory_the_rootdir(root: Path, name: str, content: str) -> None:
    make(root, {f"proj/{name}": content, "proj/tests/unit/test_a.py": ""})
    assert find_rootdir(str(root / "proj" / "tests" / "unit")) == str(root / "proj")
    assert find_rootdir(str(root / "proj")) == str(root / "proj")


@pytest.mark.parametrize(
    ("name", "content"),
    [
        ("tox.ini", "[tox]\nenvlist = py311\n"),
        ("tox.ini", "[testenv]\ncommands = pytest  # [pytest] is not here\n"),
        ("setup.cfg", "[metadata]\nname = app\n"),
        ("setup.cfg", "[flake8]\nmax-line-length = 100\n"),
    ],
)
def test_config_file_without_a_pytest_section_is_passed_over(
    root: Path, name: str, content: str
) -> None:
    make(root, {"pytest.ini": "", f"proj/{name}": content, "proj/tests/test_a.py": ""})
    assert find_rootdir(str(root / "proj" / "tests")) == str(root)


def test_pyproject_without_pytest_section_yields_to_a_config_file_above(root: Path) -> None:
    make(
        root,
        {
            "setup.cfg": "[tool:pytest]\n",
            "proj/pyproject.toml": "[project]\nname = 'app'\n\n[tool.ruff]\nline-length = 100\n",
            "proj/tests/test_a.py": "",
        },
    )
    assert find_rootdir(str(root / "proj" / "tests")) == str(root)


def test_pyproject_without_pytest_section_is_the_fallback(root: Path) -> None:
    make(
        root,
        {
            "pyproject.toml": "[project]\nname = 'app'\n",
            "proj/pyproject.toml": "[project]\nname = 'inner'\n",
            "proj/tests/test_a.py": "",
        },
    )
    assert find_rootdir(str(root / "proj" / "tests")) == str(root / "proj")


def test_setup_py_fallback(root: Path) -> None:
    make(root, {"proj/setup.py": "", "proj/src/app/tests/test_a.py": ""})
    assert find_rootdir(str(root / "proj" / "src" / "app" / "tests")) == str(root / "proj")


def test_config_file_wins_over_a_nearer_setup_py(root: Path) -> None:
    make(root, {"tox.ini": "[pytest]\n", "proj/setup.py": "", "proj/tests/test_a.py": ""})
    assert find_rootdir(str(root / "proj" / "tests")) == str(root)


def test_no_marker_gives_the_start_directory(root: Path) -> None:
    make(root, {"a/b/test_a.py": ""})
    assert find_rootdir(str(root / "a" / "b")) == str(root / "a" / "b")
    assert find_rootdir(str(root)) == str(root)


def test_filesystem_root() -> None:
    assert find_rootdir("/") == "/"


@pytest.mark.parametrize(
    ("outer", "inner"),
    [
        ("pytest.ini", "pytest.ini"),
        ("pyproject.toml", "tox.ini"),
        ("tox.ini", "pyproject.toml"),
        ("setup.cfg", "pytest.ini"),
        ("pytest.ini", "setup.cfg"),
    ],
)
def test_nearest_config_file_wins(root: Path, outer: str, inner: str) -> None:
    content = {
        "pytest.ini": "[pytest]\n",
        "pyproject.toml": "[tool.pytest.ini_options]\n",
        "tox.ini": "[pytest]\n",
        "setup.cfg": "[tool:pytest]\n",
    }
    make(
        root,
        {
            outer: content[outer],
            f"a/{inner}": content[inner],
            "a/b/c/test_x.py": "",
        },
    )
    assert find_rootdir(str(root / "a" / "b" / "c")) == str(root / "a")
    assert find_rootdir(str(root)) == str(root)


def test_pytest_ini_wins_over_pyproject_in_the_same_directory(root: Path) -> None:
    make(root, {"a/pytest.ini": "", "a/pyproject.toml": "[tool.pytest.ini_options]\n"})
    assert find_rootdir(str(root / "a")) == str(root / "a")


def test_start_is_resolved(root: Path) -> None:
    make(root, {"real/pytest.ini": "", "real/tests/test_a.py": ""})
    os.symlink(root / "real" / "tests", root / "link")
    assert find_rootdir(str(root / "link")) == str(root / "real")
    assert find_rootdir(str(root / "real" / "tests" / ".." / "tests")) == str(root / "real")


# Rootdir choices where this module and pytest (9.x, `_pytest.config.findpaths`) disagree.


@pytest.mark.skipif(pytest.version_tuple < (9,), reason="pytest.toml is new in pytest 9")
@pytest.mark.parametrize("name", ["pytest.toml", ".pytest.toml"])
def test_pytest_toml_is_a_config_file(root: Path, name: str) -> None:
    make(root, {f"proj/{name}": "[pytest]\naddopts = ['-x']\n", "proj/tests/test_a.py": ""})
    assert find_rootdir(str(root / "proj" / "tests")) == str(root / "proj")


def test_pyproject_with_only_a_plugins_tool_pytest_table_is_not_config(root: Path) -> None:
    # pytest-env reads [tool.pytest_env]; pytest itself reads only [tool.pytest] and
    # [tool.pytest.ini_options].
    make(
        root,
        {
            "setup.cfg": "[tool:pytest]\n",
            "proj/pyproject.toml": "[project]\nname = 'app'\n\n[tool.pytest_env]\nDEBUG = '1'\n",
            "proj/tests/test_a.py": "",
        },
    )
    assert find_rootdir(str(root / "proj" / "tests")) == str(root)


def test_pyproject_fallback_comes_before_setup_py(root: Path) -> None:
    # pytest takes the nearest pyproject.toml, even one without pytest settings, before it
    # looks for setup.py.
    make(
        root,
        {
            "pyproject.toml": "[project]\nname = 'monorepo'\n",
            "libs/app/setup.py": "",
            "libs/app/tests/test_a.py": "",
        },
    )
    assert find_rootdir(str(root / "libs" / "app" / "tests")) == str(root)


# -- ensure_private_dir ----------------------------------------------------------------------


def mode(path: Path) -> int:
    return stat.S_IMODE(os.lstat(path).st_mode)


def test_creates_a_private_directory(tmp_path: Path) -> None:
    path = tmp_path / "run" / "snapd"
    assert ensure_private_dir(str(path)) == str(path)
    assert path.is_dir()
    assert mode(path) == 0o700
    assert path.stat().st_uid == os.getuid()


def test_creates_0700_whatever_the_umask(tmp_path: Path) -> None:
    old = os.umask(0)
    try:
        ensure_private_dir(str(tmp_path / "d"))
    finally:
        os.umask(old)
    assert mode(tmp_path / "d") == 0o700


def test_accepts_an_existing_private_directory(tmp_path: Path) -> None:
    path = tmp_path / "d"
    path.mkdir(mode=0o700)
    path.chmod(0o700)
    (path / "sock").write_text("")
    assert ensure_private_dir(str(path)) == str(path)
    assert ensure_private_dir(str(path)) == str(path)
    assert (path / "sock").exists()
    assert mode(path) == 0o700


@pytest.mark.parametrize("bad_mode", [0o755, 0o750, 0o705, 0o701, 0o770, 0o777, 0o1777])
def test_refuses_a_directory_others_can_use(tmp_path: Path, bad_mode: int) -> None:
    path = tmp_path / "d"
    path.mkdir()
    path.chmod(bad_mode)
    with pytest.raises(RuntimeDirError) as info:
        ensure_private_dir(str(path))
    message = str(info.value)
    assert str(path) in message
    assert f"{stat.S_IMODE(bad_mode):o}" in message
    assert "0700" in message
    # It is not "fixed" behind the user's back.
    assert mode(path) == bad_mode


def test_refuses_a_file(tmp_path: Path) -> None:
    path = tmp_path / "d"
    path.write_text("")
    path.chmod(0o600)
    with pytest.raises(RuntimeDirError, match="not a directory") as info:
        ensure_private_dir(str(path))
    assert str(path) in str(info.value)


def test_refuses_a_symlink_to_a_private_directory(tmp_path: Path) -> None:
    target = tmp_path / "target"
    target.mkdir(mode=0o700)
    link = tmp_path / "link"
    link.symlink_to(target)
    with pytest.raises(RuntimeDirError, match="not a directory") as info:
        ensure_private_dir(str(link))
    assert str(link) in str(info.value)


@pytest.mark.skipif(os.getuid() != 0, reason="giving a directory to another user needs root")
def test_refuses_a_directory_of_another_user(tmp_path: Path) -> None:
    path = tmp_path / "d"
    path.mkdir(mode=0o700)
    os.chown(path, 65534, 65534)
    with pytest.raises(RuntimeDirError, match="65534") as info:
        ensure_private_dir(str(path))
    assert str(path) in str(info.value)


# -- runtime_base and ProjectPaths -----------------------------------------------------------


def test_runtime_base_precedence(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    xdg = tmp_path / "xdg"
    xdg.mkdir()
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(xdg))
    monkeypatch.setenv("SNAPD_RUNTIME_DIR", str(tmp_path / "explicit"))
    assert runtime_base() == str(tmp_path / "explicit")
    monkeypatch.setenv("SNAPD_RUNTIME_DIR", "")
    assert runtime_base() == str(xdg / "snapd")
    monkeypatch.delenv("SNAPD_RUNTIME_DIR")
    assert runtime_base() == str(xdg / "snapd")
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path / "missing"))
    assert runtime_base() == f"/tmp/snapd-{os.getuid()}"
    monkeypatch.delenv("XDG_RUNTIME_DIR")
    assert runtime_base() == f"/tmp/snapd-{os.getuid()}"


def test_project_paths_files() -> None:
    paths = ProjectPaths("/src/app", "/run/snapd/1234")
    assert paths.rootdir == "/src/app"
    assert paths.directory == "/run/snapd/1234"
    assert paths.socket == "/run/snapd/1234/sock"
    assert {paths.socket, paths.pidfile, paths.lock, paths.log, paths.state} == {
        "/run/snapd/1234/sock",
        "/run/snapd/1234/pid",
        "/run/snapd/1234/lock",
        "/run/snapd/1234/log",
        "/run/snapd/1234/state.json",
    }


def test_one_directory_per_rootdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SNAPD_RUNTIME_DIR", str(tmp_path))
    a = ProjectPaths.for_rootdir("/src/app")
    assert ProjectPaths.for_rootdir("/src/app").directory == a.directory
    assert ProjectPaths.for_rootdir("/src/app2").directory != a.directory
    assert ProjectPaths.for_rootdir("/src/ap").directory != a.directory
    assert os.path.dirname(a.directory) == str(tmp_path)
    assert a.rootdir == "/src/app"
    # The name daemons of earlier versions listen under: an upgrade must find and stop them.
    assert os.path.basename(a.directory) == hashlib.sha256(b"/src/app").hexdigest()[:16]


def test_socket_path_is_short_for_a_long_rootdir(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    base = tmp_path / "rt"
    monkeypatch.setenv("SNAPD_RUNTIME_DIR", str(base))
    rootdir = "/workspaces/" + "/".join(["a-rather-long-directory-name"] * 30)
    assert len(rootdir) > 500
    paths = ProjectPaths.for_rootdir(rootdir)
    assert len(paths.socket.encode()) < SOCKET_PATH_MAX
    assert len(paths.socket) - len(str(base)) <= 1 + 16 + 1 + 4
    paths.create()
    assert mode(base) == 0o700
    assert mode(Path(paths.directory)) == 0o700
    # A real server socket binds there.
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        server.bind(paths.socket)
        server.listen(1)
        client = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            client.connect(paths.socket)
        finally:
            client.close()
    finally:
        server.close()
    assert stat.S_ISSOCK(os.lstat(paths.socket).st_mode)


def test_default_socket_path_is_short(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SNAPD_RUNTIME_DIR", raising=False)
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path))
    assert len(ProjectPaths.for_rootdir("/x" * 2000).socket.encode()) < SOCKET_PATH_MAX
    monkeypatch.delenv("XDG_RUNTIME_DIR")
    assert len(ProjectPaths.for_rootdir("/x" * 2000).socket.encode()) < SOCKET_PATH_MAX


def test_create_refuses_a_shared_runtime_base(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    base = tmp_path / "rt"
    base.mkdir()
    base.chmod(0o755)
    monkeypatch.setenv("SNAPD_RUNTIME_DIR", str(base))
    paths = ProjectPaths.for_rootdir("/src/app")
    with pytest.raises(RuntimeDirError, match="0700"):
        paths.create()
    assert not os.path.exists(paths.directory)
