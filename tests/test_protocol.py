"""The wire protocol over real Unix socket pairs: framing, fd passing, and hostile input."""

from __future__ import annotations

import array
import fcntl
import os
import socket
import struct
import threading
from collections.abc import Iterator
from typing import Any

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from snapd import protocol
from snapd.protocol import MAX_FDS, MAX_MESSAGE, ProtocolError


def open_fd_count() -> int:
    return len(os.listdir("/proc/self/fd"))


def frame(body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + body


def send_raw(sock: socket.socket, data: bytes, fds: list[int] | tuple[int, ...] = ()) -> None:
    """Write ``data``, with ``fds`` attached to its first byte, bypassing ``protocol.send``."""
    if fds:
        sent = sock.sendmsg([data], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", fds))])
        data = data[sent:]
    if data:
        sock.sendall(data)


def identity(fd: int) -> tuple[int, int, int]:
    """The open file behind ``fd``: both ends of a pipe share an inode, not an access mode."""
    info = os.fstat(fd)
    return info.st_dev, info.st_ino, fcntl.fcntl(fd, fcntl.F_GETFL) & os.O_ACCMODE


def same_file(a: int, b: int) -> bool:
    return identity(a) == identity(b)


@pytest.fixture
def pair() -> Iterator[tuple[socket.socket, socket.socket]]:
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    a.settimeout(10)
    b.settimeout(10)
    try:
        yield a, b
    finally:
        a.close()
        b.close()


@pytest.fixture
def pipe() -> Iterator[tuple[int, int]]:
    r, w = os.pipe()
    try:
        yield r, w
    finally:
        for fd in (r, w):
            try:
                os.close(fd)
            except OSError:
                pass


# -- round trips -----------------------------------------------------------------------------


def test_round_trip_without_fds(pair: tuple[socket.socket, socket.socket]) -> None:
    a, b = pair
    message = {"op": "run", "args": ["-x", "tests/test_a.py::t"], "env": {"HOME": "/root"}}
    protocol.send(a, message)
    assert protocol.recv(b) == (message, [])


def test_str_and_bytes_keep_their_types(pair: tuple[socket.socket, socket.socket]) -> None:
    a, b = pair
    protocol.send(a, {"op": "x", "text": "é", "blob": b"\x00\xff", "n": -(2**63), "f": 0.5})
    received = protocol.recv(b)
    assert received is not None
    message, _ = received
    assert message == {"op": "x", "text": "é", "blob": b"\x00\xff", "n": -(2**63), "f": 0.5}
    assert type(message["text"]) is str
    assert type(message["blob"]) is bytes


def test_several_messages_in_a_row_then_eof(pair: tuple[socket.socket, socket.socket]) -> None:
    a, b = pair
    for i in range(5):
        protocol.send(a, {"op": "n", "i": i})
    a.shutdown(socket.SHUT_WR)
    got = []
    while (received := protocol.recv(b)) is not None:
        message, fds = received
        assert fds == []
        got.append(message["i"])
    assert got == [0, 1, 2, 3, 4]


def test_clean_eof_returns_none(pair: tuple[socket.socket, socket.socket]) -> None:
    a, b = pair
    a.close()
    assert protocol.recv(b) is None
    # And it stays at end of stream.
    assert protocol.recv(b) is None


def test_large_message_arrives_in_pieces(pair: tuple[socket.socket, socket.socket]) -> None:
    a, b = pair
    message = {"op": "big", "data": os.urandom(MAX_MESSAGE - 64)}
    sender = threading.Thread(target=protocol.send, args=(a, message))
    sender.start()
    try:
        received = protocol.recv(b)
    finally:
        sender.join(10)
    assert received == (message, [])


def test_message_of_exactly_max_size_is_accepted(pair: tuple[socket.socket, socket.socket]) -> None:
    a, b = pair
    overhead = len(msgpack.packb({"op": "x", "d": b""}, use_bin_type=True))
    # bin 32 needs 3 more header bytes than the bin 8 used for b"".
    message = {"op": "x", "d": b"\x01" * (MAX_MESSAGE - overhead - 3)}
    data = protocol.encode(message)
    assert len(data) == 4 + MAX_MESSAGE
    sender = threading.Thread(target=a.sendall, args=(data,))
    sender.start()
    try:
        received = protocol.recv(b)
    finally:
        sender.join(10)
    assert received == (message, [])


def test_encode_refuses_an_oversized_message() -> None:
    with pytest.raises(ProtocolError, match="exceeds"):
        protocol.encode({"op": "x", "d": b"\0" * MAX_MESSAGE})


# -- file descriptors ------------------------------------------------------------------------


def test_pipe_write_end_really_passes(
    pair: tuple[socket.socket, socket.socket], pipe: tuple[int, int]
) -> None:
    a, b = pair
    r, w = pipe
    protocol.send(a, {"op": "stdout"}, [w])
    received = protocol.recv(b)
    assert received is not None
    message, fds = received
    assert message == {"op": "stdout"}
    assert len(fds) == 1
    (got,) = fds
    try:
        assert got != w
        assert same_file(got, w)
        os.write(got, b"through the received fd")
    finally:
        os.close(got)
    assert os.read(r, 100) == b"through the received fd"


def test_received_fds_are_close_on_exec(
    pair: tuple[socket.socket, socket.socket], pipe: tuple[int, int]
) -> None:
    a, b = pair
    r, w = pipe
    os.set_inheritable(r, True)
    os.set_inheritable(w, True)
    protocol.send(a, {"op": "stdio"}, [r, w, w])
    received = protocol.recv(b)
    assert received is not None
    _, fds = received
    try:
        assert len(fds) == 3
        for fd in fds:
            assert os.get_inheritable(fd) is False
    finally:
        protocol.close_fds(fds)


def test_max_fds_pass_in_order(
    pair: tuple[socket.socket, socket.socket], pipe: tuple[int, int]
) -> None:
    a, b = pair
    r, w = pipe
    other_r, other_w = os.pipe()
    try:
        sent = [r, w, other_r, other_w, w, r, other_w, other_r][:MAX_FDS]
        protocol.send(a, {"op": "many"}, sent)
        received = protocol.recv(b)
        assert received is not None
        _, fds = received
        try:
            assert len(fds) == len(sent) == MAX_FDS
            assert [identity(fd) for fd in fds] == [identity(fd) for fd in sent]
        finally:
            protocol.close_fds(fds)
    finally:
        os.close(other_r)
        os.close(other_w)


def test_fds_stay_with_their_own_frame(
    pair: tuple[socket.socket, socket.socket], pipe: tuple[int, int]
) -> None:
    a, b = pair
    r, w = pipe
    protocol.send(a, {"op": "first"}, [r])
    protocol.send(a, {"op": "second"}, [w, w])
    protocol.send(a, {"op": "third"})
    first, second, third = protocol.recv(b), protocol.recv(b), protocol.recv(b)
    assert first is not None and second is not None and third is not None
    try:
        assert first[0]["op"] == "first" and len(first[1]) == 1 and same_file(first[1][0], r)
        assert second[0]["op"] == "second" and len(second[1]) == 2
        assert all(same_file(fd, w) for fd in second[1])
        assert third == ({"op": "third"}, [])
    finally:
        protocol.close_fds(first[1] + second[1])


def test_close_fds_closes_them(
    pair: tuple[socket.socket, socket.socket], pipe: tuple[int, int]
) -> None:
    a, b = pair
    _, w = pipe
    protocol.send(a, {"op": "x"}, [w, w])
    before = open_fd_count()
    received = protocol.recv(b)
    assert received is not None
    assert open_fd_count() == before + 2
    protocol.close_fds(received[1])
    assert open_fd_count() == before


# -- malformed input: ProtocolError, and no fd left behind -----------------------------------


def _bad_frames() -> list[tuple[str, bytes]]:
    return [
        ("truncated header", b"\x00\x00"),
        ("truncated body", frame(msgpack.packb({"op": "run", "x": "y" * 40}))[:-5]),
        ("header only", struct.pack(">I", 10)),
        ("oversized length", struct.pack(">I", MAX_MESSAGE + 1) + b"\x80"),
        ("huge length", b"\xff\xff\xff\xff"),
        ("empty body", frame(b"")),
        ("reserved byte", frame(b"\xc1")),
        ("trailing garbage", frame(msgpack.packb({"op": "x"}) + b"\x00")),
        ("incomplete msgpack", frame(b"\x82\xa2op")),
        ("invalid utf-8", frame(b"\x81\xa2op\xa2\xff\xfe")),
        ("non-string map key", frame(b"\x81\x01\xa1x")),
        ("list", frame(msgpack.packb(["op", "x"]))),
        ("string", frame(msgpack.packb("op"))),
        ("nil", frame(msgpack.packb(None))),
        ("no op", frame(msgpack.packb({"cmd": "run"}))),
        ("integer op", frame(msgpack.packb({"op": 1}))),
        ("bytes op", frame(msgpack.packb({"op": b"run"}, use_bin_type=True))),
        ("bytes key op", frame(msgpack.packb({b"op": "run"}, use_bin_type=True))),
        ("nested too deep", frame(b"\x91" * 5000 + b"\xc0")),
    ]


@pytest.mark.parametrize("data", [d for _, d in _bad_frames()], ids=[n for n, _ in _bad_frames()])
@pytest.mark.parametrize("with_fds", [False, True], ids=["no-fds", "fds"])
def test_malformed_frame_raises_and_leaks_no_fd(
    pair: tuple[socket.socket, socket.socket],
    pipe: tuple[int, int],
    data: bytes,
    with_fds: bool,
) -> None:
    a, b = pair
    r, w = pipe
    send_raw(a, data, [r, w, w] if with_fds else [])
    a.shutdown(socket.SHUT_WR)
    before = open_fd_count()
    with pytest.raises(ProtocolError):
        protocol.recv(b)
    assert open_fd_count() == before


def test_oversized_length_fails_without_waiting_for_the_body(
    pair: tuple[socket.socket, socket.socket], pipe: tuple[int, int]
) -> None:
    # The writer stays open: a receiver that tried to read 4 MiB + 1 would block (and time out).
    a, b = pair
    _, w = pipe
    send_raw(a, struct.pack(">I", MAX_MESSAGE + 1), [w])
    before = open_fd_count()
    with pytest.raises(ProtocolError, match="exceeds"):
        protocol.recv(b)
    assert open_fd_count() == before


def test_too_many_fds_in_one_sendmsg(
    pair: tuple[socket.socket, socket.socket], pipe: tuple[int, int]
) -> None:
    a, b = pair
    r, w = pipe
    send_raw(a, protocol.encode({"op": "x"}), [w] * (MAX_FDS + 1))
    before = open_fd_count()
    with pytest.raises(ProtocolError, match="file descriptors"):
        protocol.recv(b)
    assert open_fd_count() == before
    # None of the received copies survived: closing ours leaves the pipe without writers.
    os.close(w)
    assert os.read(r, 10) == b""


def test_too_many_fds_spread_over_one_frame(
    pair: tuple[socket.socket, socket.socket], pipe: tuple[int, int]
) -> None:
    """A frame carrying more than MAX_FDS fds in total is refused, however the peer splits it.

    Each ``sendmsg`` below carries at most MAX_FDS fds, but the frame as a whole carries
    ``len(data) * (MAX_FDS - 1)`` of them.
    """
    a, b = pair
    _, w = pipe
    data = protocol.encode({"op": "x"})
    for i in range(len(data)):
        send_raw(a, data[i : i + 1], [w] * (MAX_FDS - 1))
    before = open_fd_count()
    try:
        with pytest.raises(ProtocolError):
            received = protocol.recv(b)
            if received is not None:
                protocol.close_fds(received[1])
    finally:
        assert open_fd_count() == before


# -- property tests --------------------------------------------------------------------------

_FUZZ_SETTINGS = settings(
    max_examples=100,
    deadline=None,
    database=None,
)

_msgpack_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.floats(allow_nan=False)
    | st.text(max_size=20)
    | st.binary(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=12,
)

_framed_any = st.builds(
    lambda value: frame(msgpack.packb(value, use_bin_type=True)),
    _msgpack_values
    | st.dictionaries(st.sampled_from(["op", "x", ""]), _msgpack_values, max_size=3),
)

_hostile_bytes = st.one_of(
    st.binary(max_size=64),
    st.binary(max_size=64).map(frame),
    st.tuples(st.integers(0, 2**32 - 1), st.binary(max_size=64)).map(
        lambda t: struct.pack(">I", t[0]) + t[1]
    ),
    _framed_any,
    st.lists(_framed_any, min_size=1, max_size=3).map(b"".join),
)


@_FUZZ_SETTINGS
@given(data=_hostile_bytes, with_fds=st.booleans())
def test_arbitrary_bytes_give_messages_none_or_protocol_error(data: bytes, with_fds: bool) -> None:
    r, w = os.pipe()
    a, b = socket.socketpair()
    b.settimeout(10)
    try:
        send_raw(a, data, [r, w] if with_fds and data else [])
        a.close()
        before = open_fd_count()
        for _ in range(len(data) + 1):
            try:
                received = protocol.recv(b)
            except ProtocolError:
                break
            if received is None:
                break
            message, fds = received
            assert isinstance(message, dict)
            assert isinstance(message["op"], str)
            protocol.close_fds(fds)
        else:
            pytest.fail("recv never reached the end of the stream")
        assert open_fd_count() == before
    finally:
        b.close()
        if a.fileno() != -1:
            a.close()
        os.close(r)
        os.close(w)


_message_dicts = st.builds(
    lambda op, rest: {**rest, "op": op},
    st.text(max_size=20),
    st.dictionaries(st.text(max_size=10), _msgpack_values, max_size=5),
)


def _normalise(value: Any) -> Any:
    """What msgpack gives back: tuples and lists both come back as lists."""
    if isinstance(value, dict):
        return {k: _normalise(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_normalise(v) for v in value]
    return value


@_FUZZ_SETTINGS
@given(message=_message_dicts, nfds=st.integers(0, MAX_FDS))
def test_round_trip_of_arbitrary_messages(message: dict[str, Any], nfds: int) -> None:
    r, w = os.pipe()
    a, b = socket.socketpair()
    try:
        protocol.send(a, message, [w] * nfds)
        received = protocol.recv(b)
        assert received is not None
        got, fds = received
        try:
            assert got == _normalise(message)
            assert len(fds) == nfds
            assert all(same_file(fd, w) and not os.get_inheritable(fd) for fd in fds)
        finally:
            protocol.close_fds(fds)
    finally:
        a.close()
        b.close()
        os.close(r)
        os.close(w)
