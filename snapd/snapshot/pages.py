"""Memory a request child writes, copied ahead of time in the next spares.

A child shares its snapshot's memory copy-on-write: the first write to each shared page costs a
page fault and a copy. A run of pytest writes to a couple of thousand of them (reference counts,
the interpreter's inline caches) before its first test, a few milliseconds of faults on the
critical path. So a child that copied nothing ahead (``serve`` says which), once its run is
over and its exit is reported, tells its snapshot which pages it holds privately; the snapshot
keeps the latest list, and the other spares forked after that copy those pages with
``MADV_POPULATE_WRITE`` while they wait for their request. Page
contents do not change (the kernel copies the page as a write fault would, without writing),
so this moves time, never behaviour; a page an address no longer maps writably is skipped.
"""

from __future__ import annotations

import array
import ctypes
import os
import re
import sys

_PAGE = os.sysconf("SC_PAGE_SIZE")
# /proc/PID/pagemap has one 64-bit entry per page (Documentation/admin-guide/mm/pagemap.rst).
# Its top byte says whether a page is present (bit 63), file-backed or shared (61), and mapped
# by this process alone (56): a page of our own is 0x81 under the mask 0xA1.
_TOP_BYTE = 7 if sys.byteorder == "little" else 0
_OWN = bytes(1 if value & 0xA1 == 0x81 else 0 for value in range(256))
_MADV_POPULATE_WRITE = 23  # Linux 5.14+; older kernels answer EINVAL
_EINVAL = 22
# A list is sent as one datagram of (first page, page count) pairs: stay well within the
# default socket buffer, and do not copy more than this many bytes ahead per spare.
MAX_RANGES = 8192
MAX_BYTES = 256 * 1024 * 1024


def _private_writable() -> list[tuple[int, int]]:
    """The private writable mappings of this process, as ascending (start, end) addresses."""
    found = []
    with open("/proc/self/maps") as f:
        for line in f:
            fields = line.split()
            if fields[1] == "rw-p" and not (len(fields) > 5 and fields[5] == "[stack]"):
                start, end = fields[0].split("-")
                found.append((int(start, 16), int(end, 16)))
    return found


def written() -> bytes:
    """The pages of private writable mappings this process holds as its own (written since the
    fork, or new), as (first page, count) pairs of native 64-bit ints."""
    ranges = array.array("Q")
    total = 0
    with open("/proc/self/pagemap", "rb") as pagemap:
        for start, end in _private_writable():
            pagemap.seek(start // _PAGE * 8)
            # Byte-wise, at C speed: a mapping of a gigabyte has a quarter million entries.
            own = pagemap.read((end - start) // _PAGE * 8)[_TOP_BYTE::8].translate(_OWN)
            for run in re.finditer(b"\x01+", own):
                ranges.extend((start // _PAGE + run.start(), run.end() - run.start()))
                total += run.end() - run.start()
            if len(ranges) >= 2 * MAX_RANGES or total * _PAGE >= MAX_BYTES:
                break
    return ranges[: 2 * MAX_RANGES].tobytes()


def populate(pages: bytes) -> None:
    """Copy ``pages`` (as ``written`` gives them) into this process ahead of any write, where
    they lie in private writable mappings. Never raises: it runs in a fresh fork, where an
    exception would unwind into the snapshot's own code."""
    if not pages:
        return
    ranges = array.array("Q")
    ranges.frombytes(pages[: len(pages) - len(pages) % 16])
    try:
        mappings = _private_writable()
        madvise = ctypes.CDLL(None, use_errno=True).madvise
    except OSError:
        return
    madvise.argtypes = (ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int)
    m = 0  # both lists ascend: walk them together
    for i in range(0, len(ranges) - 1, 2):
        start = ranges[i] * _PAGE
        end = start + ranges[i + 1] * _PAGE
        while m < len(mappings) and mappings[m][1] <= start:
            m += 1
        for low, high in mappings[m:]:
            if low >= end:
                break
            low, high = max(low, start), min(high, end)
            if madvise(low, high - low, _MADV_POPULATE_WRITE) and ctypes.get_errno() == _EINVAL:
                return  # EINVAL: this kernel cannot populate
