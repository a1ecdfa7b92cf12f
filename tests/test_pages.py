"""The pages a request child writes, and copying them ahead in a spare."""

from __future__ import annotations

import array
import ctypes
import os
import resource
from collections.abc import Callable

import pytest

from snapd.snapshot import pages

PAGE = os.sysconf("SC_PAGE_SIZE")
COUNT = 64


def populate_works() -> bool:
    release = tuple(int(part) for part in os.uname().release.split(".")[:2] if part.isdigit())
    return release >= (5, 14)


def ranges(data: bytes) -> list[tuple[int, int]]:
    values = array.array("Q")
    values.frombytes(data)
    return list(zip(values[::2], values[1::2], strict=True))


def in_child(work: Callable[[], bytes]) -> bytes:
    """What ``work`` returns in a forked child: the memory it sees is a fresh fork's."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            os.close(r)
            data = work()
            os.write(w, len(data).to_bytes(8, "little") + data)
        finally:
            os._exit(0)
    os.close(w)
    with os.fdopen(r, "rb") as f:
        size = int.from_bytes(f.read(8), "little")
        data = f.read(size)
    os.waitpid(pid, 0)
    return data


@pytest.fixture
def buffer() -> bytearray:
    """Memory of this process's own, every page of it present, shared with a fork."""
    return bytearray(b"x" * (COUNT + 1) * PAGE)


def first_page(buffer: bytearray) -> int:
    address = ctypes.addressof(ctypes.c_char.from_buffer(buffer))
    return -(-address // PAGE)  # the first page wholly inside the buffer


def test_a_fork_owns_the_pages_it_wrote(buffer: bytearray) -> None:
    first = first_page(buffer)
    offset = first * PAGE - ctypes.addressof(ctypes.c_char.from_buffer(buffer))

    def write_every_other_page() -> bytes:
        for i in range(0, COUNT, 2):
            buffer[offset + i * PAGE] = ord("y")
        return pages.written()

    owned = {page for start, count in ranges(in_child(write_every_other_page)) for page in
             range(start, start + count)}  # fmt: skip
    mine = set(range(first, first + COUNT))
    assert owned & mine == set(range(first, first + COUNT, 2))


@pytest.mark.skipif(not populate_works(), reason="MADV_POPULATE_WRITE needs Linux 5.14")
def test_populated_pages_take_no_fault_when_written(buffer: bytearray) -> None:
    first = first_page(buffer)
    offset = first * PAGE - ctypes.addressof(ctypes.c_char.from_buffer(buffer))
    learned = array.array("Q", [first, COUNT]).tobytes()

    def populate_then_write() -> bytes:
        pages.populate(learned)
        before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        for i in range(COUNT):
            buffer[offset + i * PAGE] = ord("z")
        faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
        return faults.to_bytes(8, "little")

    assert int.from_bytes(in_child(populate_then_write), "little") < COUNT // 4
    assert buffer[offset] == ord("x")  # the parent's copy is untouched


def test_populate_keeps_contents_and_skips_what_is_not_mapped(buffer: bytearray) -> None:
    first = first_page(buffer)
    offset = first * PAGE - ctypes.addressof(ctypes.c_char.from_buffer(buffer))
    buffer[offset : offset + COUNT * PAGE] = os.urandom(COUNT * PAGE)
    expected = bytes(buffer)
    bogus = array.array("Q", [1, 4, first, COUNT, 2**40, 3]).tobytes() + b"\x01\x02\x03"

    def populate_and_read() -> bytes:
        pages.populate(bogus)
        return bytes(buffer)

    assert in_child(populate_and_read) == expected


def test_nothing_to_populate() -> None:
    pages.populate(b"")
