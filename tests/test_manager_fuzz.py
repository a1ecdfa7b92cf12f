"""Hostile input on the manager's socket: malformed, truncated, oversized and wrongly typed
messages, and wrong numbers of fds, over real connections to one live daemon.

Each message must get an error reply or a closed connection within a bounded time; the
manager must stay up, keep serving, and not accumulate file descriptors or threads.
"""

from __future__ import annotations

import array
import os
import shutil
import socket
import struct
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgpack
import psutil
import pytest
from conftest import Project, wait_for
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from snapd import protocol

# One xdist worker runs the whole module (tools/test.sh uses --dist loadgroup), so its
# module-scoped fixtures are built once, not once per worker.
pytestmark = [pytest.mark.timeout(240), pytest.mark.xdist_group("manager_fuzz")]

MAX_EXAMPLES = 500
REPLY_TIMEOUT = 15.0  # every message is answered (or its connection closed) within this
FD_SLACK = 3
THREAD_SLACK = 2
RUN_FIELDS: dict[str, type] = {
    "args": list,
    "cwd": str,
    "env": dict,
    "argv0": str,
    "interpreter": str,
}
HARMLESS_OPS = {"ping": "pong", "status": "status", "wait": "waited"}  # never "stop"


@dataclass
class Daemon:
    project: Project
    socket: str
    manager: psutil.Process
    fds: int
    threads: int


def _good_run(project: Project) -> None:
    result = project.run("-q", "tests/test_a.py")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "2 passed" in result.stdout
    assert result.stderr == ""


def _settled_counts(manager: psutil.Process) -> tuple[int, int]:
    """The manager's fd and thread counts once they stop moving (connections wind down)."""
    last: list[tuple[int, int]] = []

    def steady() -> bool:
        last.append((manager.num_fds(), manager.num_threads()))
        return len(last) >= 10 and len(set(last[-10:])) == 1

    wait_for(steady, timeout=30, message="the manager's fd and thread counts to settle")
    return last[-1]


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Daemon]:
    runtime = tempfile.mkdtemp(prefix="sd", dir="/tmp")
    project = Project(tmp_path_factory.mktemp("fuzz") / "proj", runtime)
    project.write("pyproject.toml", '[tool.pytest.ini_options]\ntestpaths = ["tests"]\n')
    project.write("tests/conftest.py", "import json\n")
    project.write("tests/test_a.py", "def test_a():\n    pass\n\ndef test_b():\n    pass\n")
    try:
        project.start()
        _good_run(project)
        pid = project.manager_pid()
        assert pid is not None
        manager = psutil.Process(pid)
        (sock,) = Path(runtime).glob("*/sock")
        fds, threads = _settled_counts(manager)
        yield Daemon(project, str(sock), manager, fds, threads)
    finally:
        survivors = project.processes()
        project.snapd("stop", timeout=60)
        for process in survivors:
            try:
                process.kill()
            except psutil.Error:
                pass
        shutil.rmtree(runtime, ignore_errors=True)


# -- what is sent -----------------------------------------------------------------------------


@dataclass
class Case:
    kind: str
    data: bytes
    nfds: int

    def __repr__(self) -> str:
        shown = self.data if len(self.data) <= 200 else self.data[:200] + b"..."
        return f"Case({self.kind}, {len(self.data)} bytes, {self.nfds} fds, {shown!r})"


def frame(body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + body


def pack(value: Any) -> bytes:
    packed: bytes = msgpack.packb(value, use_bin_type=True)
    return packed


def valid_run(cwd: str) -> dict[str, Any]:
    return {
        "op": "run",
        "args": ["-q", "tests/test_a.py"],
        "cwd": cwd,
        "env": {"HOME": "/nonexistent"},
        "argv0": "pytest",
        "interpreter": sys.executable,
    }


leaves = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.floats()
    | st.text(max_size=12)
    | st.binary(max_size=12)
)
values = st.recursive(
    leaves,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=4)
    ),
    max_leaves=12,
)
fd_counts = st.integers(min_value=0, max_value=8)
ops = st.sampled_from(["run", "status", "ping", "wait", "", "RUN", "run\x00", "stop!"]) | st.text(
    max_size=8
).filter(lambda op: op != "stop")


@st.composite
def cases(draw: st.DrawFn, cwd: str) -> Case:
    kind = draw(
        st.sampled_from(
            [
                "garbage",
                "framed garbage",
                "not a map",
                "bad op",
                "wrong types",
                "random map",
                "wrong fd count",
                "truncated",
                "oversized header",
            ]
        )
    )
    nfds = draw(fd_counts)
    if kind == "garbage":
        data = draw(st.binary(min_size=1, max_size=64))
    elif kind == "framed garbage":
        data = frame(draw(st.binary(max_size=64)))
    elif kind == "not a map":
        data = frame(pack(draw(values.filter(lambda v: not isinstance(v, dict)))))
    elif kind == "bad op":
        message = draw(st.dictionaries(st.text(max_size=6), values, max_size=4))
        message["op"] = draw(values.filter(lambda v: not isinstance(v, str)))
        if draw(st.booleans()):
            del message["op"]
        data = frame(pack(message))
    elif kind == "wrong types":
        message = valid_run(cwd)
        for name in draw(st.sets(st.sampled_from(sorted(RUN_FIELDS)), min_size=1)):
            kind_of = RUN_FIELDS[name]
            choice = draw(st.sampled_from(["wrong type", "missing", "bad items"]))
            if choice == "missing":
                del message[name]
            elif choice == "bad items" and kind_of in (list, dict):
                if kind_of is list:
                    message[name] = [*message[name], draw(values.filter(_not_str))]
                else:
                    message[name] = {**message[name], "X": draw(values.filter(_not_str))}
            else:
                message[name] = draw(values.filter(lambda v, k=kind_of: not isinstance(v, k)))
        data = frame(pack(message))
    elif kind == "random map":
        message = draw(st.dictionaries(st.text(max_size=12), values, max_size=6))
        message["op"] = draw(ops)
        data = frame(pack(message))
    elif kind == "wrong fd count":
        nfds = draw(fd_counts.filter(lambda n: n != 3))
        data = frame(pack(valid_run(cwd)))
    elif kind == "truncated":
        whole = frame(pack(draw(st.sampled_from([valid_run(cwd), {"op": "ping"}]))))
        data = whole[: draw(st.integers(min_value=1, max_value=len(whole) - 1))]
    else:  # oversized header
        length = draw(st.integers(min_value=protocol.MAX_MESSAGE + 1, max_value=2**32 - 1))
        data = struct.pack(">I", length) + draw(st.binary(max_size=64))
    return Case(kind, data, nfds)


def _not_str(value: Any) -> bool:
    return not isinstance(value, str)


def expected_replies(case: Case) -> set[str] | None:
    """The replies the manager may give (besides closing the connection); ``None`` for a
    message it would act on for real (a valid run would run; stop would stop it)."""
    message = _decode(case.data)
    if message is None or not isinstance(message.get("op"), str):
        return {"error"}
    op = message["op"]
    if op == "stop" or (op == "run" and _acceptable_run(message, case.nfds)):
        return None
    if op in HARMLESS_OPS:
        return {HARMLESS_OPS[op]}
    return {"error"}


def _decode(data: bytes) -> dict[str, Any] | None:
    if len(data) < 4:
        return None
    (length,) = struct.unpack(">I", data[:4])
    body = data[4 : 4 + length]
    if length > protocol.MAX_MESSAGE or len(body) < length:
        return None
    try:
        message = msgpack.unpackb(body, raw=False, strict_map_key=True)
    except Exception:
        return None
    return message if isinstance(message, dict) else None


def _acceptable_run(message: dict[str, Any], nfds: int) -> bool:
    if not all(isinstance(message.get(k), t) for k, t in RUN_FIELDS.items()):
        return False
    return (
        all(isinstance(a, str) for a in message["args"])
        and all(isinstance(k, str) and isinstance(v, str) for k, v in message["env"].items())
        and os.path.isdir(message["cwd"])
        and nfds == 3
    )


# -- how it is sent ---------------------------------------------------------------------------


def exchange(path: str, data: bytes, nfds: int) -> tuple[str, dict[str, Any] | None]:
    """Send ``data`` with ``nfds`` fds of /dev/null, end our side, and read the answer:
    ("reply", message), ("closed", None), or ("timeout", None)."""
    devnull = [os.open(os.devnull, os.O_RDWR) for _ in range(nfds)]
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(REPLY_TIMEOUT)
            sock.connect(path)
            try:
                if devnull:
                    rights = [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", devnull))]
                    sent = sock.sendmsg([data[:1]], rights)
                    data = data[sent:]
                sock.sendall(data)
                sock.shutdown(socket.SHUT_WR)
            except (BrokenPipeError, ConnectionResetError):
                pass  # it stopped reading, say at an oversized header: its answer may be there
            try:
                got = protocol.recv(sock)
            except TimeoutError:
                return "timeout", None
            except ConnectionResetError:
                return "closed", None
            if got is None:
                return "closed", None
            message, fds = got
            protocol.close_fds(fds)
            return "reply", message
    finally:
        for fd in devnull:
            os.close(fd)


def check(daemon: Daemon, case: Case) -> None:
    allowed = expected_replies(case)
    assert allowed is not None, f"{case!r} is not hostile"
    outcome, reply = exchange(daemon.socket, case.data, case.nfds)
    assert outcome != "timeout", f"no answer within {REPLY_TIMEOUT}s to {case!r}"
    if outcome == "reply":
        assert reply is not None and reply["op"] in allowed, (case, reply)


def check_still_serving(daemon: Daemon) -> None:
    assert daemon.manager.is_running()
    assert daemon.project.manager_pid() == daemon.manager.pid
    _good_run(daemon.project)
    fds, threads = _settled_counts(daemon.manager)
    assert fds <= daemon.fds + FD_SLACK, f"fds grew from {daemon.fds} to {fds}"
    assert threads <= daemon.threads + THREAD_SLACK, (
        f"threads grew from {daemon.threads} to {threads}"
    )


# -- the tests --------------------------------------------------------------------------------


def test_fuzzed_messages_get_an_error_or_a_close_and_the_manager_stays_up(daemon: Daemon) -> None:
    seen: dict[str, int] = {}

    @settings(
        max_examples=MAX_EXAMPLES,
        deadline=None,
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
    )
    @given(case=cases(str(daemon.project.root)))
    def fuzz(case: Case) -> None:
        assume(expected_replies(case) is not None)
        seen[case.kind] = seen.get(case.kind, 0) + 1
        check(daemon, case)

    fuzz()
    assert len(seen) == 9, seen  # every kind of hostile message was tried
    print(f"sent {sum(seen.values())} messages: {seen}")
    errors = _status(daemon)["counts"]["errors"]
    assert errors > 0  # the manager did see them as bad requests
    check_still_serving(daemon)


@pytest.mark.parametrize(
    "size", [protocol.MAX_MESSAGE - 64, protocol.MAX_MESSAGE + 1, 3 * protocol.MAX_MESSAGE]
)
def test_large_and_oversized_messages(daemon: Daemon, size: int) -> None:
    """A real body near and over the 4 MiB cap (a run with a huge argument and one fd)."""
    message = valid_run(str(daemon.project.root))
    message["args"] = ["x" * 0]
    overhead = len(pack(message))
    message["args"] = ["x" * (size - overhead - 4)]
    body = pack(message)
    assert abs(len(body) - size) <= 8
    check(daemon, Case("large", frame(body), 1))
    check_still_serving(daemon)


@pytest.mark.parametrize("nfds", [9, 16, 64])
def test_more_fds_than_allowed_are_refused_and_not_kept(daemon: Daemon, nfds: int) -> None:
    case = Case("too many fds", frame(pack(valid_run(str(daemon.project.root)))), nfds)
    outcome, reply = exchange(daemon.socket, case.data, case.nfds)
    assert outcome != "timeout"
    if outcome == "reply":
        assert reply is not None and reply["op"] == "error", reply
    check_still_serving(daemon)


def test_deeply_nested_message(daemon: Daemon) -> None:
    body = b"\x81\xa2op" + b"\x91" * 100_000 + b"\xc0"  # {"op": [[[[...]]]]}
    check(daemon, Case("nested", frame(body), 0))
    check_still_serving(daemon)


def test_stalled_connections_do_not_hold_up_others(daemon: Daemon) -> None:
    """Peers that connect and stall (nothing sent, half a header, half a body) must not stop
    the manager from serving everyone else; once they go, what they held is released."""
    whole = frame(pack({"op": "ping"}))
    stalled = []
    try:
        for partial in (b"", whole[:2], whole[:6]) * 4:
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.connect(daemon.socket)
            sock.sendall(partial)
            stalled.append(sock)
        outcome, reply = exchange(daemon.socket, whole, 0)
        assert outcome == "reply" and reply is not None and reply["op"] == "pong"
        _good_run(daemon.project)
    finally:
        for sock in stalled:
            sock.close()
    check_still_serving(daemon)


def test_a_run_naming_a_missing_interpreter_is_answered_every_time(daemon: Daemon) -> None:
    """Well typed, wrongly valued: the interpreter does not exist. The manager cannot build a
    chain for it; it must say so, fall back, or close the connection (the client then runs
    plain pytest), and do so promptly every time, not only the first."""
    message = valid_run(str(daemon.project.root))
    message["interpreter"] = "/nonexistent/python3"
    for attempt in range(3):
        outcome, reply = exchange(daemon.socket, frame(pack(message)), 3)
        assert outcome != "timeout", f"attempt {attempt + 1}: no answer in {REPLY_TIMEOUT}s"
        if outcome == "reply":
            assert reply is not None and reply["op"] in ("error", "fallback"), reply
    check_still_serving(daemon)


def _status(daemon: Daemon) -> dict[str, Any]:
    outcome, reply = exchange(daemon.socket, frame(pack({"op": "status"})), 0)
    assert outcome == "reply" and reply is not None
    return reply
