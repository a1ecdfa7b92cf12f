"""The audit hook of snapshot processes, in real interpreters on real files."""

from __future__ import annotations

import os
import py_compile
import subprocess
import sys
from pathlib import Path

import pytest

from snapd.snapshot.record import refuse_stale_bytecode

pytestmark = pytest.mark.timeout(60)

_IMPORT = "import sys; sys.path.insert(0, {root!r}); import leaf; print(leaf.VALUE)"
_HOOKED = "from snapd.snapshot import record; record.start(); record.stop(); " + _IMPORT


def _same_second_same_size_save(tmp_path: Path) -> str:
    """leaf.py saved as VALUE = 8, compiled, then saved as VALUE = 3 within the same second:
    the .pyc of the first content matches the second's mtime second and size.

    That second is a past one: with the current one, the second save's mtime (half a second
    in) would be in the future whenever the test starts in the first half of a second, and
    bytecode written after it, before that instant, would look older than its source."""
    leaf = tmp_path / "leaf.py"
    leaf.write_text("VALUE = 8\n")
    second = os.stat(leaf).st_mtime_ns // 10**9 - 10
    os.utime(leaf, ns=(second * 10**9,) * 2)  # what the .pyc records
    pyc = py_compile.compile(str(leaf), invalidation_mode=py_compile.PycInvalidationMode.TIMESTAMP)
    os.utime(pyc, ns=(second * 10**9 + 400_000_000,) * 2)
    leaf.write_text("VALUE = 3\n")
    os.utime(leaf, ns=(second * 10**9 + 500_000_000,) * 2)
    return pyc


def _run(code: str, tmp_path: Path) -> str:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    result = subprocess.run(
        [sys.executable, "-c", code.format(root=str(tmp_path))],
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    return result.stdout.strip()


def test_plain_python_loads_the_stale_bytecode(tmp_path: Path) -> None:
    # What the hook is for: without it, the interpreter trusts the .pyc.
    _same_second_same_size_save(tmp_path)
    assert _run(_IMPORT, tmp_path) == "8"


def test_the_hook_compiles_the_source_instead(tmp_path: Path) -> None:
    pyc = _same_second_same_size_save(tmp_path)
    assert _run(_HOOKED, tmp_path) == "3"
    # The importer wrote fresh bytecode: the next plain run is right too.
    assert os.stat(pyc).st_mtime_ns > os.stat(tmp_path / "leaf.py").st_mtime_ns
    assert _run(_IMPORT, tmp_path) == "3"


def test_bytecode_newer_than_its_source_is_trusted(tmp_path: Path) -> None:
    leaf = tmp_path / "leaf.py"
    leaf.write_text("VALUE = 1\n")
    os.utime(leaf, ns=(1_600_000_000 * 10**9,) * 2)
    pyc = py_compile.compile(str(leaf))
    refuse_stale_bytecode(pyc)  # does not raise
    os.utime(leaf, ns=(os.stat(pyc).st_mtime_ns,) * 2)  # as old as its bytecode: unsure
    with pytest.raises(OSError, match="not newer than its source"):
        refuse_stale_bytecode(pyc)


def test_pytest_rewritten_bytecode_is_checked_too(tmp_path: Path) -> None:
    test = tmp_path / "test_leaf.py"
    test.write_text("def test_leaf():\n    assert 8 == 8\n")
    cache = tmp_path / "__pycache__"
    cache.mkdir()
    # Named as pytest's assertion rewriter names its cache.
    rewritten = cache / f"test_leaf.{sys.implementation.cache_tag}-pytest-{pytest.__version__}.pyc"
    rewritten.write_bytes(b"")
    os.utime(test, ns=(os.stat(rewritten).st_mtime_ns + 1,) * 2)
    with pytest.raises(OSError):
        refuse_stale_bytecode(str(rewritten))


def test_a_save_after_the_read_makes_the_snapshot_stale(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from snapd import fileset
    from snapd.snapshot import record

    read = tmp_path / "read.py"
    saved = tmp_path / "saved.py"
    for path in (read, saved):
        path.write_text("VALUE = 1\n")
        os.utime(path, ns=(0, 1_600_000_000_000_000_000))
    record.start()
    try:
        read.read_text()
        saved.read_text()
    finally:
        record.stop()
    saved.write_text("VALUE = 2\n")  # saved after the read, before the stamps
    real = fileset.digest

    def saved_while_stamped(path: str) -> str:  # and one saved while it is stamped
        if path == str(read):
            monkeypatch.setattr(fileset, "digest", real)
            read.write_text("VALUE = 3\n")
        return real(path)

    monkeypatch.setattr(fileset, "digest", saved_while_stamped)
    entries, stale = record.collect(set())
    assert str(saved) in stale
    assert str(read) in stale or str(read) in fileset.changed(entries)
