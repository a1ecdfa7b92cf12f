"""Messages between the processes: msgpack maps framed by a 4-byte length, fds by SCM_RIGHTS.

Every process (client, manager, snapshots, request children) speaks this over Unix stream
sockets. A frame is ``>I`` length + msgpack body; file descriptors travel in the same
``sendmsg`` as the frame's first byte, so the receiver gets them with the header.

>>> import socket
>>> a, b = socket.socketpair()
>>> send(a, {"op": "ping"})
>>> recv(b)
({'op': 'ping'}, [])
"""

from __future__ import annotations

# _socket, not socket: the client speaks this on every run, and socket.py spends milliseconds
# building enums at import. socket.socket is a subclass of _socket.socket.
import _socket
import array
import os
import struct

# msgpack is imported where it is used, on first use: a client connects before that, so the
# manager checks the snapshots' files while msgpack loads.

TYPE_CHECKING = False  # see snapd/__init__.py
if TYPE_CHECKING:
    from collections.abc import Sequence
    from typing import Any

MAX_MESSAGE = 4 * 1024 * 1024
MAX_FDS = 8
_HEADER = struct.Struct(">I")

Message = dict[str, "Any"]


class ProtocolError(Exception):
    """The peer sent something that is not a valid frame."""


def encode(message: Message) -> bytes:
    import msgpack

    body: bytes = msgpack.packb(message, use_bin_type=True)
    if len(body) > MAX_MESSAGE:
        raise ProtocolError(f"message of {len(body)} bytes exceeds {MAX_MESSAGE}")
    return _HEADER.pack(len(body)) + body


def send(sock: _socket.socket, message: Message, fds: Sequence[int] = ()) -> None:
    """Send one frame, with ``fds`` attached to its first byte."""
    data = encode(message)
    if fds:
        ancillary = [(_socket.SOL_SOCKET, _socket.SCM_RIGHTS, array.array("i", fds))]
        sent = sock.sendmsg([data], ancillary)
        data = data[sent:]
    if data:
        sock.sendall(data)


def recv(sock: _socket.socket) -> tuple[Message, list[int]] | None:
    """Receive one frame and the fds sent with it; ``None`` on a clean end of stream.

    Raises ``ProtocolError`` for a truncated or malformed frame; received fds are then closed,
    so a bad peer cannot leak descriptors into this process.
    """
    import msgpack

    fds: list[int] = []
    try:
        header = _read(sock, _HEADER.size, fds, allow_eof=True)
        if header is None:
            return None
        (length,) = _HEADER.unpack(header)
        if length > MAX_MESSAGE:
            raise ProtocolError(f"message of {length} bytes exceeds {MAX_MESSAGE}")
        body = _read(sock, length, fds, allow_eof=False)
        assert body is not None
        message = msgpack.unpackb(body, raw=False, strict_map_key=True)
    except (ValueError, msgpack.UnpackException, ProtocolError) as e:
        _close_all(fds)
        raise ProtocolError(str(e) or type(e).__name__) from e
    except BaseException:
        _close_all(fds)
        raise
    if not isinstance(message, dict) or not isinstance(message.get("op"), str):
        _close_all(fds)
        raise ProtocolError("a message must be a map with a string 'op'")
    return message, fds


def _read(sock: _socket.socket, size: int, fds: list[int], *, allow_eof: bool) -> bytes | None:
    chunks = bytearray()
    fd_space = _socket.CMSG_SPACE(MAX_FDS * array.array("i").itemsize)
    while len(chunks) < size:
        # MSG_CMSG_CLOEXEC: socket.recv_fds ignores its flags on some Pythons (3.12.1, 3.13.0),
        # and a received fd that stays inheritable leaks into every process we spawn.
        data, ancillary, flags, _ = sock.recvmsg(
            size - len(chunks), fd_space, _socket.MSG_CMSG_CLOEXEC
        )
        for level, kind, payload in ancillary:
            if level == _socket.SOL_SOCKET and kind == _socket.SCM_RIGHTS:
                received = array.array("i")
                received.frombytes(payload[: len(payload) - len(payload) % received.itemsize])
                fds.extend(received)
        if flags & _socket.MSG_CTRUNC or len(fds) > MAX_FDS:
            raise ProtocolError(f"too many file descriptors (at most {MAX_FDS})")
        if not data:
            if allow_eof and not chunks:
                return None
            raise ProtocolError("connection closed in the middle of a message")
        chunks += data
    return bytes(chunks)


def _close_all(fds: list[int]) -> None:
    for fd in fds:
        try:
            os.close(fd)
        except OSError:
            pass
    fds.clear()


def close_fds(fds: Sequence[int]) -> None:
    """Close received fds that are not going to be used."""
    _close_all(list(fds))
