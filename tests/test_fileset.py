"""File stamps and change detection, on real files."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from snapd.fileset import Entries, changed, digest, stamp, stamps

OLD_NS = 1_600_000_000_123_456_789  # some time in 2020


def write(path: Path, text: str) -> str:
    path.write_text(text)
    return str(path)


def set_mtime_ns(path: str, mtime_ns: int) -> None:
    os.utime(path, ns=(os.stat(path).st_atime_ns, mtime_ns))


@pytest.fixture
def module(tmp_path: Path) -> str:
    path = write(tmp_path / "models.py", "x = 1\n")
    # A file saved a while ago, as a snapshot's files usually are.
    set_mtime_ns(path, OLD_NS)
    return path


# -- stamp -----------------------------------------------------------------------------------


def test_stamp_of_a_file(module: str) -> None:
    info = os.stat(module)
    assert stamp(module) == (OLD_NS, 6, digest(module))
    assert stamp(module) == (info.st_mtime_ns, info.st_size, digest(module))
    assert len(digest(module)) == 32


def test_digest_depends_on_content_only(tmp_path: Path) -> None:
    a = write(tmp_path / "a.py", "x = 1\n")
    b = write(tmp_path / "b.py", "x = 1\n")
    c = write(tmp_path / "c.py", "x = 2\n")
    assert digest(a) == digest(b) != digest(c)


def test_stamp_of_missing_paths_is_none(tmp_path: Path, module: str) -> None:
    assert stamp(str(tmp_path / "nope.py")) is None
    assert stamp(str(tmp_path / "nope" / "conftest.py")) is None
    # Under a path that is a file, not a directory.
    assert stamp(os.path.join(module, "conftest.py")) is None
    assert stamp(module + "/") is None


def test_stamp_of_a_directory(tmp_path: Path) -> None:
    directory = tmp_path / "pkg"
    directory.mkdir()
    (directory / "a.py").write_text("x = 1\n")
    os.utime(directory, ns=(OLD_NS, OLD_NS))
    assert stamp(str(directory) + "/") == (OLD_NS, 0, "")


def test_stamps(tmp_path: Path, module: str) -> None:
    missing = str(tmp_path / "conftest.py")
    assert stamps([module, missing]) == {module: stamp(module), missing: None}


def save_while_read(monkeypatch: pytest.MonkeyPatch, text: str) -> None:
    """Make the next read of a file's content land just after a save of ``text`` to it: an
    editor saving while a stamp is taken."""
    from snapd import fileset

    real = fileset.digest

    def saved_then_read(target: str) -> str:
        monkeypatch.setattr(fileset, "digest", real)
        Path(target).write_text(text)
        return real(target)

    monkeypatch.setattr(fileset, "digest", saved_then_read)


def test_a_save_while_stamping_shows_as_a_change(
    monkeypatch: pytest.MonkeyPatch, module: str
) -> None:
    save_while_read(monkeypatch, "x = 2\n")  # same size, new mtime
    entries = {module: stamp(module)}
    assert changed(entries) == [module]


# -- changed ---------------------------------------------------------------------------------


def test_unchanged_files_report_nothing(tmp_path: Path, module: str) -> None:
    other = write(tmp_path / "views.py", "from models import x\n")
    directory = str(tmp_path) + "/"
    entries = stamps([module, other, str(tmp_path / "conftest.py"), directory])
    before = dict(entries)
    assert changed(entries) == []
    assert changed(entries) == []
    assert entries == before


def test_content_edit_is_changed(module: str) -> None:
    entries = stamps([module])
    recorded = entries[module]
    Path(module).write_text("x = 2 + 2\n")
    assert changed(entries) == [module]
    # A change is not absorbed: it is reported until the snapshot is rebuilt and re-stamped.
    assert entries[module] == recorded
    assert changed(entries) == [module]


def test_only_the_changed_paths_are_reported_in_entry_order(tmp_path: Path) -> None:
    paths = [write(tmp_path / f"m{i}.py", f"x = {i}\n") for i in range(5)]
    entries = stamps(paths)
    for i in (3, 1):
        Path(paths[i]).write_text(f"x = {i}  # edited\n")
    assert changed(entries) == [paths[1], paths[3]]


def test_same_size_edit_within_the_same_second(module: str) -> None:
    """The edit that fools Python's .pyc check: same second, same size, new content."""
    entries = stamps([module])
    Path(module).write_text("x = 2\n")
    # Same whole second as the recorded stamp, a different sub-second part.
    set_mtime_ns(module, OLD_NS + 1_000)
    info = os.stat(module)
    recorded = entries[module]
    assert recorded is not None
    assert info.st_size == recorded[1]
    assert info.st_mtime_ns // 10**9 == recorded[0] // 10**9
    assert info.st_mtime_ns != recorded[0]
    assert changed(entries) == [module]


def test_edit_that_keeps_mtime_ns_but_moves_the_size(module: str) -> None:
    entries = stamps([module])
    Path(module).write_text("x = 10\n")
    set_mtime_ns(module, OLD_NS)
    recorded = entries[module]
    assert recorded is not None
    assert os.stat(module).st_mtime_ns == recorded[0]
    assert changed(entries) == [module]


def test_touch_with_identical_content_is_not_changed_and_refreshes(module: str) -> None:
    entries = stamps([module])
    Path(module).touch()
    new = os.stat(module).st_mtime_ns
    assert new != OLD_NS
    assert changed(entries) == []
    # Refreshed in place: the next check does not see a moved mtime again.
    assert entries[module] == (new, 6, digest(module))
    assert entries[module] == stamp(module)


def test_rewrite_with_identical_content_is_not_changed(module: str) -> None:
    entries = stamps([module])
    Path(module).write_text("x = 1\n")
    set_mtime_ns(module, OLD_NS + 5 * 10**9)
    assert changed(entries) == []
    assert entries[module] == (OLD_NS + 5 * 10**9, 6, digest(module))


def test_atomic_save_with_identical_content_is_not_changed(tmp_path: Path, module: str) -> None:
    """Editors save by writing a temporary file and renaming it over the original."""
    entries = stamps([module])
    temporary = write(tmp_path / ".models.py.swp", "x = 1\n")
    os.replace(temporary, module)
    assert changed(entries) == []
    assert entries[module] == stamp(module)


def test_atomic_save_with_new_content_is_changed(tmp_path: Path, module: str) -> None:
    entries = stamps([module])
    temporary = write(tmp_path / ".models.py.swp", "x = 3\n")
    os.replace(temporary, module)
    assert changed(entries) == [module]


def test_deleted_file_is_changed(module: str) -> None:
    entries = stamps([module])
    os.unlink(module)
    assert changed(entries) == [module]


def test_deleted_directory_of_a_file_is_changed(tmp_path: Path) -> None:
    package = tmp_path / "pkg"
    package.mkdir()
    path = write(package / "mod.py", "x = 1\n")
    entries = stamps([path])
    shutil.rmtree(package)
    assert changed(entries) == [path]
    # The directory replaced by a file of the same name.
    package.write_text("")
    assert changed(entries) == [path]


def test_file_replaced_by_a_directory_is_changed(module: str) -> None:
    entries = stamps([module])
    os.unlink(module)
    os.mkdir(module)
    assert changed(entries) == [module]


def test_absent_entry_that_now_exists_is_changed(tmp_path: Path) -> None:
    conftest = str(tmp_path / "conftest.py")
    entries: Entries = {conftest: None}
    assert changed(entries) == []
    write(tmp_path / "conftest.py", "")
    assert changed(entries) == [conftest]
    assert entries[conftest] is None


def test_absent_entry_under_a_missing_or_file_parent_stays_unchanged(
    tmp_path: Path, module: str
) -> None:
    entries: Entries = {
        str(tmp_path / "missing" / "conftest.py"): None,
        os.path.join(module, "conftest.py"): None,
        str(tmp_path / "missing") + "/": None,
    }
    assert changed(entries) == []


def test_absent_entry_that_becomes_a_directory_is_changed(tmp_path: Path) -> None:
    """A package directory that did not exist (a probe that failed) and now does."""
    directory = str(tmp_path / "utils") + "/"
    entries: Entries = {directory: None}
    assert changed(entries) == []
    (tmp_path / "utils").mkdir()
    assert changed(entries) == [directory]


@pytest.fixture
def package(tmp_path: Path) -> str:
    directory = tmp_path / "pkg"
    directory.mkdir()
    (directory / "a.py").write_text("x = 1\n")
    os.utime(directory, ns=(OLD_NS, OLD_NS))
    return str(directory) + "/"


def test_directory_entry_changes_when_a_file_is_added(package: str) -> None:
    entries = stamps([package])
    assert changed(entries) == []
    Path(package, "b.py").write_text("")
    assert changed(entries) == [package]


def test_directory_entry_changes_when_a_file_is_removed_or_renamed(package: str) -> None:
    entries = stamps([package])
    os.rename(os.path.join(package, "a.py"), os.path.join(package, "c.py"))
    assert changed(entries) == [package]
    os.utime(package, ns=(OLD_NS, OLD_NS))
    entries = stamps([package])
    os.unlink(os.path.join(package, "c.py"))
    assert changed(entries) == [package]


def test_directory_entry_ignores_edits_inside_its_files(package: str) -> None:
    entries = stamps([package])
    Path(package, "a.py").write_text("x = 2  # edited in place\n")
    assert changed(entries) == []


def test_directory_entry_changes_when_the_directory_goes(package: str) -> None:
    entries = stamps([package])
    shutil.rmtree(package)
    assert changed(entries) == [package]


# -- paths this process may not read ---------------------------------------------------------


@pytest.fixture
def shared_dir() -> Iterator[Path]:
    """A directory that an unprivileged user may enter (tmp_path's parents are 0700)."""
    directory = Path(tempfile.mkdtemp(prefix="snapd-fileset-"))
    directory.chmod(0o755)
    try:
        yield directory
    finally:
        for path in (directory, *directory.rglob("*")):
            if path.is_dir():
                path.chmod(0o755)
        shutil.rmtree(directory)


def as_unprivileged(function: Callable[[], Any]) -> Any:
    """``function()`` run in a forked child that cannot override file permissions.

    Root reads files of any mode, so a root test process drops to ``nobody``; any other
    user is already subject to them.
    """
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child reports through the pipe
        code = 0
        try:
            os.close(read_end)
            if os.getuid() == 0:
                os.setgroups([])
                os.setgid(65534)
                os.setuid(65534)
            try:
                result: Any = {"value": function()}
            except BaseException as e:
                result = {"error": f"{type(e).__name__}: {e}"}
            os.write(write_end, json.dumps(result).encode())
        except BaseException:
            code = 1
        finally:
            os._exit(code)
    os.close(write_end)
    with os.fdopen(read_end, "rb") as f:
        output = f.read()
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0, output
    return json.loads(output)


def test_unreadable_unchanged_file_is_not_changed(shared_dir: Path) -> None:
    """A file the snapshot failed to read is part of its file set, and stays as it was.

    ``stamp`` documents ``None`` as "does not exist"; for an existing file it may not read, it
    returns ``None`` too, and ``changed`` then reports that untouched file on every check, so
    the snapshot holding it is never valid.
    """
    secret = write(shared_dir / "secret.cfg", "token\n")
    os.chmod(secret, 0)

    def check() -> dict[str, Any]:
        entries: Entries = {secret: stamp(secret)}
        return {"stamp_is_none": entries[secret] is None, "changed": changed(entries)}

    assert as_unprivileged(check) == {"value": {"stamp_is_none": False, "changed": []}}


def test_path_in_an_unsearchable_directory_does_not_break_changed(shared_dir: Path) -> None:
    """``changed`` reports on what it cannot stat; it does not raise (the manager calls it
    on every request)."""
    private = shared_dir / "private"
    private.mkdir()
    inside = write(private / "settings.py", "x = 1\n")
    private.chmod(0o700 if os.getuid() == 0 else 0o000)

    def check() -> list[list[str]]:
        entries = {inside: stamp(inside)}
        return [changed(entries), changed(entries)]

    result = as_unprivileged(check)
    assert "error" not in result, result["error"]
    first, second = result["value"]
    assert first == second
