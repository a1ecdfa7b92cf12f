"""The snapshot's serve loop: the spares it forks, and the pages they copy ahead."""

from __future__ import annotations

import pytest
from conftest import Project

from snapd.snapshot import serve

pytestmark = pytest.mark.timeout(180)

MIB = 2**20
BIG = 32 * MIB

CONFTEST = f"""
    import pytest

    @pytest.fixture(scope="session")
    def big():
        return bytearray(b"x" * {BIG})  # every page present in the session snapshot
"""

TESTS = """
    import mmap
    import psutil

    def uss(name):
        with open(name, "a") as f:
            f.write(f"{psutil.Process().memory_full_info().uss}\\n")

    def test_write(big):
        for i in range(0, len(big), mmap.PAGESIZE):
            big[i] = 1
        uss("written.uss")

    def test_other(big):
        uss("other.uss")
"""


def test_pages_written_once_are_not_copied_into_every_child(project: Project) -> None:
    """One run writes 32 MiB of the session's memory; the runs after it do not. Spares copy
    ahead what a run wrote, but soon no longer those 32 MiB: a child holds copied pages as its
    own, so were every child to report, a page written once would be copied from then on."""
    project.write("tests/conftest.py", CONFTEST)
    project.write("tests/test_big.py", TESTS)
    project.start()
    for test in ("test_other", "test_write", *["test_other"] * (serve.CLEAN_EVERY + 4)):
        result = project.run(f"tests/test_big.py::{test}")
        assert result.returncode == 0, result.stdout + result.stderr
    before, *after = (int(n) for n in (project.root / "other.uss").read_text().split())
    assert int((project.root / "written.uss").read_text()) > before + BIG  # it can tell
    # A clean spare comes within CLEAN_EVERY; the spares forked after its run copy its pages.
    assert max(after[-2:]) < before + BIG // 2, [n // MIB for n in [before, *after]]
