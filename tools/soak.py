"""Soak the daemon: many requests, sequential and concurrent, and whether it stays healthy.

Usage: python tools/soak.py [--project DIR --case ARGS ... --memory-case ARGS]
                            [--requests 10000] [--burst 1000] [--concurrency 32]
                            [--window 1000] [--warmup N] [--memory-runs 5] [--json FILE]

Without --project a small project is generated in a temporary directory. The tool starts a
daemon of its own (a private SNAPD_RUNTIME_DIR) and always stops it at the end.

1. Expectations: each case is run once with plain pytest; its exit code and summary line are
   what every `snapd pytest` run of that case must give.
2. Sequential: N requests, one at a time, cycling through the cases.
3. Burst: M requests with at most K in flight.
4. Memory: a request that sleeps (the generated project's 0.5 s test, or --memory-case) is
   sampled while it runs: the request child's USS against the session snapshot's RSS.

Meanwhile a sampler records the manager's fd count, thread count and RSS and the zombies
below it. The report gives p50/p95 latency per window of requests, whether fds, threads and
RSS stayed flat within 5 % after the warm-up (per-window medians, and the idle manager before
and after each phase), zombies, and the USS ratio against its 15 % goal.

Exit status: 0 all runs right and all goals met; 1 a run gave a wrong result (or none);
2 runs right but a goal missed.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import psutil

RUN_TIMEOUT_SECONDS = 120.0
START_TIMEOUT_SECONDS = 600.0
SETTLE_TIMEOUT_SECONDS = 30.0
FLAT_TOLERANCE = 0.05
USS_GOAL = 0.15
DURATION = re.compile(r" in [0-9.]+s( \([0-9:]+\))?")
# Variables a pytest run of ours would set, which a user's shell would not have.
OUR_VARIABLES = ("PYTEST_ADDOPTS", "PYTEST_CURRENT_TEST", "PYTEST_VERSION", "PYTEST_PLUGINS")

PROJECT = {
    "pyproject.toml": """\
        [tool.pytest.ini_options]
        testpaths = ["tests"]
        """,
    "tests/conftest.py": """\
        import json

        import pytest


        @pytest.fixture(scope="session")
        def settings():
            return json.loads('{"answer": 42, "items": [1, 2, 3]}')
        """,
    "tests/test_soak.py": """\
        import time

        import pytest


        def test_pass(settings):
            assert settings["answer"] == 42


        def test_fail(settings):
            assert settings["answer"] == 41


        @pytest.mark.parametrize("n", range(5))
        def test_param(n, settings):
            assert n in settings["items"] or n not in (1, 2, 3)


        def test_sleep_half():
            time.sleep(0.5)
        """,
}
COMMON = ("-q", "-p", "no:cacheprovider")  # no cache file written by one run read by the next
GENERATED_CASES = (
    (*COMMON, "tests/test_soak.py::test_pass"),
    (*COMMON, "tests/test_soak.py::test_fail"),
    (*COMMON, "tests/test_soak.py", "-k", "param"),
    (*COMMON, "tests/test_soak.py", "-k", "not sleep"),
)
GENERATED_MEMORY_CASE = (*COMMON, "tests/test_soak.py::test_sleep_half")


# -- records ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Case:
    """An invocation and what plain pytest gave for it."""

    args: tuple[str, ...]
    code: int
    summary: str
    stderr: str


@dataclass(frozen=True)
class Outcome:
    """One `snapd pytest` run."""

    phase: str
    index: int
    seconds: float
    problem: str | None  # why the result was wrong; None when it was right
    notice: str | None  # what snapd said on stderr (it fell back to plain pytest, say)


@dataclass(frozen=True)
class Sample:
    seconds: float  # since the start of the soak
    phase: str
    done: int  # requests of the phase completed so far
    fds: int
    threads: int
    rss: int
    zombies: tuple[int, ...]
    processes: int


@dataclass(frozen=True)
class Idle:
    """The manager at rest (no request in flight): its counts once they stop moving."""

    label: str
    phase: str  # "start", "sequential" (after the warm-up) or "burst"
    fds: int
    threads: int
    rss: int
    zombies: tuple[int, ...]
    processes: int  # the manager and everything below it
    spares: int  # request children forked ahead, as `snapd status` counts them


@dataclass
class Report:
    requests: int
    burst: int
    concurrency: int
    window: int
    warmup: int
    outcomes: dict[str, int] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)
    notices: dict[str, int] = field(default_factory=dict)
    latency: list[dict[str, Any]] = field(default_factory=list)
    flat: dict[str, dict[str, Any]] = field(default_factory=dict)
    idle: list[Idle] = field(default_factory=list)
    zombies: dict[str, Any] = field(default_factory=dict)
    memory: list[dict[str, Any]] = field(default_factory=list)
    daemon_counts: dict[str, Any] = field(default_factory=dict)
    samples: list[Sample] = field(default_factory=list)


# -- the project and its daemon ---------------------------------------------------------------


def progress(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def generate_project(root: Path) -> None:
    for relative, text in PROJECT.items():
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text))


def summary(stdout: str) -> str:
    """pytest's final summary line without its duration."""
    lines = [line for line in stdout.splitlines() if line.strip()]
    return DURATION.sub("", lines[-1]).strip("= ") if lines else ""


def split_stderr(stderr: str) -> tuple[str, str | None]:
    """The run's own stderr, and what snapd itself said (lines starting ``snapd:``)."""
    ours = [line for line in stderr.splitlines() if line.startswith("snapd:")]
    rest = [line for line in stderr.splitlines() if not line.startswith("snapd:")]
    return "\n".join(rest), ("; ".join(ours) or None)


class Daemon:
    """A private daemon for ``root``: its own runtime dir, started and stopped by us."""

    def __init__(self, root: Path, bindir: Path) -> None:
        self.root = root
        self.snapd = str(bindir / "snapd")
        self.pytest = str(bindir / "pytest")
        self.runtime = tempfile.mkdtemp(prefix="soak", dir="/tmp")
        self.env = {k: v for k, v in os.environ.items() if k not in OUR_VARIABLES}
        self.env["SNAPD_RUNTIME_DIR"] = self.runtime
        self._manager: psutil.Process | None = None

    def command(
        self, *argv: str, timeout: float = RUN_TIMEOUT_SECONDS
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            argv,
            cwd=self.root,
            env=self.env,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    def start(self) -> None:
        result = self.command(self.snapd, "start", "--wait", timeout=START_TIMEOUT_SECONDS)
        if result.returncode != 0:
            raise SystemExit(f"snapd start failed:\n{result.stdout}{result.stderr}")
        self._manager = psutil.Process(int(self.status()["pid"]))

    @property
    def manager(self) -> psutil.Process:
        assert self._manager is not None, "the daemon is not started"
        return self._manager

    def status(self) -> dict[str, Any]:
        result = self.command(self.snapd, "status", "--json", timeout=60)
        data: dict[str, Any] = json.loads(result.stdout)
        return data

    def snapshot_pid(self, layer: str) -> int | None:
        data = self.status()
        for chain in data.get("chains", []):
            if chain["key"] != data.get("default_chain"):
                continue
            for snap in chain["snapshots"]:
                if snap["layer"] == layer and snap["state"] == "ready":
                    return int(snap["pid"])
        return None

    def tree(self) -> list[psutil.Process]:
        try:
            return [self.manager, *self.manager.children(recursive=True)]
        except psutil.Error:
            return []

    def stop(self) -> None:
        survivors = self.tree() if self._manager is not None else []
        try:
            self.command(self.snapd, "stop", timeout=60)
        except subprocess.TimeoutExpired:
            progress("snapd stop timed out")
        for process in survivors:
            try:
                if process.is_running():
                    process.kill()
            except psutil.Error:
                pass
        shutil.rmtree(self.runtime, ignore_errors=True)


# -- runs -------------------------------------------------------------------------------------


def expectation(daemon: Daemon, args: tuple[str, ...]) -> Case:
    cold = daemon.command(daemon.pytest, *args)
    stderr, _ = split_stderr(cold.stderr)
    return Case(args, cold.returncode, summary(cold.stdout), stderr)


def judge(case: Case, code: int, stdout: str, stderr: str) -> tuple[str | None, str | None]:
    """What is wrong with a run of ``case`` (None if nothing), and snapd's notice if any."""
    own_stderr, notice = split_stderr(stderr)
    if code != case.code:
        problem: str | None = f"exit code {code}, expected {case.code}"
    elif summary(stdout) != case.summary:
        problem = f"summary {summary(stdout)!r}, expected {case.summary!r}"
    elif own_stderr != case.stderr:
        problem = f"stderr {own_stderr[-300:]!r}, expected {case.stderr[-300:]!r}"
    else:
        problem = None
    if problem is not None:
        problem = f"{shlex.join(case.args)}: {problem}; stdout tail {stdout[-300:]!r}"
    return problem, notice


def run_once(daemon: Daemon, case: Case, phase: str, index: int) -> Outcome:
    start = time.perf_counter()
    try:
        done = daemon.command(daemon.snapd, "pytest", *case.args)
    except subprocess.TimeoutExpired:
        seconds = time.perf_counter() - start
        return Outcome(phase, index, seconds, f"no result in {RUN_TIMEOUT_SECONDS:g}s", None)
    seconds = time.perf_counter() - start
    problem, notice = judge(case, done.returncode, done.stdout, done.stderr)
    return Outcome(phase, index, seconds, problem, notice)


# -- sampling ---------------------------------------------------------------------------------


def zombies_below(manager: psutil.Process) -> tuple[list[psutil.Process], tuple[int, ...]]:
    """The manager's descendants, and the pids among them that are zombies."""
    try:
        below = manager.children(recursive=True)
    except psutil.Error:
        return [], ()
    zombies = []
    for process in below:
        try:
            if process.status() == psutil.STATUS_ZOMBIE:
                zombies.append(process.pid)
        except psutil.Error:
            pass
    return below, tuple(zombies)


class Sampler:
    """Samples the manager every ``interval`` seconds on a thread of its own."""

    def __init__(self, daemon: Daemon, interval: float, started: float) -> None:
        self.daemon = daemon
        self.interval = interval
        self.started = started
        self.samples: list[Sample] = []
        self.phase = "idle"
        self.done = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="sampler", daemon=True)

    def __enter__(self) -> Sampler:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(timeout=30)

    def sample(self) -> Sample | None:
        manager = self.daemon.manager
        try:
            with manager.oneshot():
                fds = manager.num_fds()
                threads = manager.num_threads()
                rss = manager.memory_info().rss
        except psutil.Error:
            return None
        below, zombies = zombies_below(manager)
        return Sample(
            round(time.monotonic() - self.started, 3),
            self.phase,
            self.done,
            fds,
            threads,
            rss,
            zombies,
            len(below) + 1,
        )

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            got = self.sample()
            if got is not None:
                self.samples.append(got)


def idle(daemon: Daemon, label: str, phase: str) -> Idle:
    """The manager's counts once ten readings 0.1 s apart agree (bounded)."""
    manager = daemon.manager
    readings: list[tuple[int, int]] = []
    deadline = time.monotonic() + SETTLE_TIMEOUT_SECONDS
    while time.monotonic() < deadline:
        readings.append((manager.num_fds(), manager.num_threads()))
        if len(readings) >= 10 and len(set(readings[-10:])) == 1:
            break
        time.sleep(0.1)  # a sampling period, not a synchronisation
    fds, threads = readings[-1]
    rss = manager.memory_info().rss
    below, zombies = zombies_below(manager)
    spares = sum(
        int(snap.get("spares") or 0)
        for chain in daemon.status().get("chains", [])
        for snap in chain["snapshots"]
    )
    return Idle(label, phase, fds, threads, rss, zombies, len(below) + 1, spares)


# -- analysis ---------------------------------------------------------------------------------


def percentile(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    rank = q / 100 * (len(ordered) - 1)
    low = int(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def latency_windows(outcomes: list[Outcome], window: int) -> list[dict[str, Any]]:
    """p50/p95 per window of ``window`` requests, in completion order, per phase."""
    rows = []
    for phase in dict.fromkeys(o.phase for o in outcomes):
        ours = [o for o in outcomes if o.phase == phase]
        for start in range(0, len(ours), window):
            chunk = ours[start : start + window]
            seconds = [o.seconds for o in chunk]
            rows.append(
                {
                    "phase": phase,
                    "requests": f"{start + 1}-{start + len(chunk)}",
                    "p50": percentile(seconds, 50),
                    "p95": percentile(seconds, 95),
                    "max": max(seconds),
                    "wrong": sum(o.problem is not None for o in chunk),
                }
            )
    return rows


METRICS: dict[str, Callable[[Sample | Idle], float]] = {
    "fds": lambda s: s.fds,
    "threads": lambda s: s.threads,
    "rss": lambda s: s.rss,
}


def flatness(
    samples: list[Sample], idles: list[Idle], window: int, warmup: int
) -> dict[str, dict[str, Any]]:
    """Per metric, whether it stayed flat within 5 %:

    - over the sequential requests: the manager at rest at the end of every window after the
      warm-up, against the first such reading;
    - after the burst: the manager at rest once it is over, against the last reading before.

    The samples taken while requests ran are reported too (per-window median and maximum),
    but not judged: one connection more or less in flight moves a small count by more than
    5 %.
    """
    windows: dict[int, list[Sample]] = {}
    for sample in samples:
        if sample.phase == "sequential" and sample.done >= warmup:
            windows.setdefault((sample.done - warmup) // window, []).append(sample)
    sequential = [i for i in idles if i.phase == "sequential"]
    after_burst = [i for i in idles if i.phase == "burst"]
    result = {}
    for name, value in METRICS.items():
        running = [
            {
                "median": statistics.median(value(s) for s in windows[k]),
                "max": max(value(s) for s in windows[k]),
            }
            for k in sorted(windows)
        ]
        at_rest = [value(i) for i in sequential]
        drift = max((v / at_rest[0] - 1 for v in at_rest), key=abs) if at_rest else 0.0
        burst_change = value(after_burst[-1]) / at_rest[-1] - 1 if at_rest and after_burst else None
        result[name] = {
            "at_rest": at_rest,
            "sequential_change": drift,
            "sequential_flat": abs(drift) <= FLAT_TOLERANCE,
            "after_burst": value(after_burst[-1]) if after_burst else None,
            "burst_change": burst_change,
            "burst_flat": burst_change is None or abs(burst_change) <= FLAT_TOLERANCE,
            "while_running": running,
        }
    return result


def zombie_report(samples: list[Sample], idles: list[Idle]) -> dict[str, Any]:
    """Zombies seen, and those that lasted: a pid still a zombie two seconds later."""
    first_seen: dict[int, float] = {}
    lasting: set[int] = set()
    for s in samples:
        for pid in s.zombies:
            first_seen.setdefault(pid, s.seconds)
            if s.seconds - first_seen[pid] >= 2.0:
                lasting.add(pid)
    at_rest = sorted({pid for i in idles for pid in i.zombies})
    return {
        "max_in_a_sample": max((len(s.zombies) for s in samples), default=0),
        "lasting": sorted(lasting),
        "at_rest": at_rest,
        "none": not lasting and not at_rest,
    }


# -- phases -----------------------------------------------------------------------------------


def sequential(
    daemon: Daemon,
    cases: list[Case],
    count: int,
    warmup: int,
    window: int,
    sampler: Sampler,
    report: Report,
    outcomes: list[Outcome],
) -> None:
    sampler.phase, sampler.done = "sequential", 0
    for index in range(count + 1):
        # At rest after the warm-up, at every window's end after it, and at the end.
        window_end = index > warmup and (index - warmup) % window == 0
        if index in (warmup, count) or window_end:
            sampler.phase = "pause"
            report.idle.append(idle(daemon, f"after {index} sequential requests", "sequential"))
            sampler.phase = "sequential"
        if index == count:
            break
        outcome = run_once(daemon, cases[index % len(cases)], "sequential", index)
        record(outcome, outcomes, report)
        sampler.done = index + 1
        if (index + 1) % window == 0 or index + 1 == count:
            show_window(outcomes, "sequential", window, sampler.samples)
    sampler.phase = "pause"


def burst(
    daemon: Daemon,
    cases: list[Case],
    count: int,
    concurrency: int,
    window: int,
    sampler: Sampler,
    report: Report,
    outcomes: list[Outcome],
) -> None:
    sampler.phase, sampler.done = "burst", 0
    lock = threading.Lock()

    def one(index: int) -> None:
        outcome = run_once(daemon, cases[index % len(cases)], "burst", index)
        with lock:
            record(outcome, outcomes, report)
            sampler.done += 1
            if sampler.done % window == 0 or sampler.done == count:
                show_window(outcomes, "burst", window, sampler.samples)

    with ThreadPoolExecutor(max_workers=concurrency) as pool:
        for future in [pool.submit(one, i) for i in range(count)]:
            future.result()
    sampler.phase = "pause"
    label = f"after a burst of {count} ({concurrency} at once)"
    report.idle.append(idle(daemon, label, "burst"))


def record(outcome: Outcome, outcomes: list[Outcome], report: Report) -> None:
    outcomes.append(outcome)
    key = "wrong" if outcome.problem else "right"
    report.outcomes[key] = report.outcomes.get(key, 0) + 1
    if outcome.problem and len(report.problems) < 50:
        report.problems.append(f"{outcome.phase} #{outcome.index}: {outcome.problem}")
        progress(f"WRONG {outcome.phase} #{outcome.index}: {outcome.problem}")
    if outcome.notice:
        report.notices[outcome.notice] = report.notices.get(outcome.notice, 0) + 1


def show_window(outcomes: list[Outcome], phase: str, window: int, samples: list[Sample]) -> None:
    ours = [o for o in outcomes if o.phase == phase]
    chunk = ours[(len(ours) - 1) // window * window :]  # the window now ending
    seconds = [o.seconds for o in chunk]
    last = samples[-1] if samples else None
    resources = (
        f"fds {last.fds} threads {last.threads} rss {last.rss / 2**20:.1f} MiB "
        f"zombies {len(last.zombies)} processes {last.processes}"
        if last
        else "no sample yet"
    )
    progress(
        f"{phase} {len(ours)}: p50 {percentile(seconds, 50):.3f}s "
        f"p95 {percentile(seconds, 95):.3f}s wrong {sum(o.problem is not None for o in ours)} "
        f"| {resources}"
    )


def request_children(session: psutil.Process) -> list[psutil.Process]:
    """The session snapshot's children that run a request: each has a session of its own
    (spares waiting for a request do not yet)."""
    found = []
    for child in session.children():
        try:
            if os.getsid(child.pid) == child.pid and child.status() != psutil.STATUS_ZOMBIE:
                found.append(child)
        except (OSError, psutil.Error):
            pass
    return found


def memory(daemon: Daemon, case: Case, runs: int, report: Report) -> None:
    """Sample each run's request child while it runs: its USS against the session's RSS."""
    for index in range(runs):
        session_pid = daemon.snapshot_pid("session")
        if session_pid is None:
            report.problems.append("memory: no session snapshot ready")
            return
        session = psutil.Process(session_pid)
        client = subprocess.Popen(
            [daemon.snapd, "pytest", *case.args],
            cwd=daemon.root,
            env=daemon.env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        uss = rss = pss = 0
        session_rss = session.memory_info().rss
        seen: psutil.Process | None = None
        deadline = time.monotonic() + RUN_TIMEOUT_SECONDS
        while client.poll() is None and time.monotonic() < deadline:
            children = request_children(session)
            if seen is None and children:
                seen = children[0]
            if seen is not None:
                try:
                    info = seen.memory_full_info()
                    uss, rss, pss = max(uss, info.uss), max(rss, info.rss), max(pss, info.pss)
                    session_rss = max(session_rss, session.memory_info().rss)
                except psutil.Error:
                    pass
            time.sleep(0.02)  # a sampling period: the child is measured while it runs
        try:
            stdout, stderr = client.communicate(timeout=RUN_TIMEOUT_SECONDS)
        except subprocess.TimeoutExpired:
            client.kill()
            stdout, stderr = client.communicate()
        problem, notice = judge(case, client.returncode, stdout, stderr)
        if problem or notice:
            report.problems.append(f"memory run {index}: {problem or notice}")
        row = {
            "run": index,
            "child_pid": seen.pid if seen else None,
            "child_uss": uss,
            "child_pss": pss,
            "child_rss": rss,
            "session_rss": session_rss,
            "uss_ratio": uss / session_rss if seen is not None and session_rss else None,
        }
        report.memory.append(row)
        ratio = row["uss_ratio"]
        progress(
            f"memory run {index}: child USS {uss / 2**20:.2f} MiB, session RSS "
            f"{session_rss / 2**20:.1f} MiB"
            + (f", {ratio:.1%}" if isinstance(ratio, float) else ", child not seen")
        )


# -- the report -------------------------------------------------------------------------------


def verdicts(report: Report) -> dict[str, bool]:
    ratios = [r["uss_ratio"] for r in report.memory if r["uss_ratio"] is not None]
    found = {
        "every run right": not report.outcomes.get("wrong") and not report.problems,
        **{
            f"{name} flat within 5% over the sequential requests": v["sequential_flat"]
            for name, v in report.flat.items()
        },
        **{
            f"{name} back within 5% after the burst": v["burst_flat"]
            for name, v in report.flat.items()
        },
        "no zombies": bool(report.zombies.get("none")),
    }
    if report.memory:
        found["child USS <= 15% of session RSS"] = bool(ratios) and max(ratios) <= USS_GOAL
    return found


def render(report: Report) -> str:
    lines = [
        f"soak: {report.requests} sequential + {report.burst} burst "
        f"({report.concurrency} in flight), windows of {report.window}, "
        f"warm-up {report.warmup}",
        f"runs: {report.outcomes.get('right', 0)} right, {report.outcomes.get('wrong', 0)} wrong",
    ]
    for notice, count in report.notices.items():
        lines.append(f"  snapd said ({count}x): {notice}")
    for problem in report.problems[:10]:
        lines.append(f"  problem: {problem}")
    lines.append("latency per window (seconds):")
    lines.append(f"  {'phase':<10} {'requests':>13} {'p50':>7} {'p95':>7} {'max':>7} wrong")
    for row in report.latency:
        lines.append(
            f"  {row['phase']:<10} {row['requests']:>13} {row['p50']:7.3f} {row['p95']:7.3f} "
            f"{row['max']:7.3f} {row['wrong']:5d}"
        )
    lines.append("manager at rest (no request in flight):")
    lines.append(
        f"  {'when':<44} {'fds':>4} {'threads':>7} {'rss MiB':>8} {'procs':>5} "
        f"{'spares':>6} zombies"
    )
    for i in report.idle:
        lines.append(
            f"  {i.label:<44} {i.fds:>4} {i.threads:>7} {i.rss / 2**20:>8.1f} "
            f"{i.processes:>5} {i.spares:>6} {len(i.zombies)}"
        )
    for name, data in report.flat.items():
        scale = 2**20 if name == "rss" else 1
        burst_change = data["burst_change"]
        after = f"{burst_change:+.1%}" if burst_change is not None else "-"
        running = data["while_running"]
        lines.append(
            f"  {name}: sequential drift {data['sequential_change']:+.1%} "
            f"({'flat' if data['sequential_flat'] else 'NOT flat'}), after the burst {after} "
            f"({'flat' if data['burst_flat'] else 'NOT flat'}); while running: median "
            f"{min((r['median'] for r in running), default=0) / scale:.1f}-"
            f"{max((r['median'] for r in running), default=0) / scale:.1f}, "
            f"max {max((r['max'] for r in running), default=0) / scale:.1f}"
        )
    z = report.zombies
    lines.append(
        f"zombies: at most {z.get('max_in_a_sample')} in a sample, lasting {z.get('lasting')}, "
        f"at rest {z.get('at_rest')}"
    )
    ratios = [r["uss_ratio"] for r in report.memory if r["uss_ratio"] is not None]
    if report.memory:
        for row in report.memory:
            lines.append(
                f"memory: child USS {row['child_uss'] / 2**20:.2f} MiB "
                f"(PSS {row['child_pss'] / 2**20:.2f}, RSS {row['child_rss'] / 2**20:.1f}) "
                f"vs session RSS {row['session_rss'] / 2**20:.1f} MiB"
                + (f" = {row['uss_ratio']:.1%}" if row["uss_ratio"] is not None else "")
            )
        if ratios:
            lines.append(f"memory: worst ratio {max(ratios):.1%} (goal <= {USS_GOAL:.0%})")
    counts = report.daemon_counts
    if counts:
        lines.append(f"daemon counts: {json.dumps(counts, sort_keys=True)}")
    for name, ok in verdicts(report).items():
        lines.append(f"{'PASS' if ok else 'FAIL'}  {name}")
    return "\n".join(lines)


# -- main -------------------------------------------------------------------------------------


@contextmanager
def project_dir(given: str | None) -> Iterator[Path]:
    if given:
        yield Path(given).resolve()
        return
    with tempfile.TemporaryDirectory(prefix="soak-project-") as tmp:
        root = Path(tmp) / "proj"
        generate_project(root)
        yield root


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--project", help="the project to soak (default: a generated one)")
    parser.add_argument(
        "--case",
        action="append",
        default=[],
        metavar="ARGS",
        help="pytest arguments of a request (shell-quoted; repeatable). "
        "Default: the generated project's cases, or the whole suite with -q",
    )
    parser.add_argument(
        "--memory-case",
        metavar="ARGS",
        help="a request that runs at least a few tenths of a second, to sample its child's "
        "memory (default: the generated project's 0.5 s test; none for --project)",
    )
    parser.add_argument("--requests", type=int, default=10_000, help="sequential requests")
    parser.add_argument("--burst", type=int, default=1_000, help="requests of the burst")
    parser.add_argument("--concurrency", type=int, default=32, help="in flight in the burst")
    parser.add_argument("--window", type=int, default=1_000, help="requests per window")
    parser.add_argument(
        "--warmup", type=int, help="requests before resources must stay flat (default: a window)"
    )
    parser.add_argument(
        "--memory-runs", type=int, default=5, help="runs of the memory case to sample"
    )
    parser.add_argument("--interval", type=float, default=0.5, help="seconds between samples")
    parser.add_argument(
        "--bindir",
        default=str(Path(sys.executable).parent),
        help="where the snapd and pytest commands are (default: this Python's)",
    )
    parser.add_argument("--json", help="write the full report (samples too) to this file")
    args = parser.parse_args(argv)
    if min(args.requests, args.burst, args.memory_runs) < 0 or args.concurrency < 1:
        parser.error("counts must not be negative, and --concurrency at least 1")
    if args.window < 1:
        parser.error("--window must be at least 1")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    warmup = args.warmup if args.warmup is not None else min(args.window, args.requests // 5)
    report = Report(args.requests, args.burst, args.concurrency, args.window, warmup)
    outcomes: list[Outcome] = []
    with project_dir(args.project) as root:
        if args.case:
            invocations = [tuple(shlex.split(c)) for c in args.case]
        elif args.project:
            invocations = [COMMON]
        else:
            invocations = list(GENERATED_CASES)
        memory_args: tuple[str, ...] | None = (
            tuple(shlex.split(args.memory_case))
            if args.memory_case
            else (None if args.project else GENERATED_MEMORY_CASE)
        )
        daemon = Daemon(root, Path(args.bindir))
        try:
            cases = [expectation(daemon, a) for a in invocations]
            for case in cases:
                progress(f"case {shlex.join(case.args)}: exit {case.code}, {case.summary!r}")
            memory_case = expectation(daemon, memory_args) if memory_args else None
            progress(f"starting the daemon (runtime dir {daemon.runtime})")
            daemon.start()
            started = time.monotonic()
            with Sampler(daemon, args.interval, started) as sampler:
                report.idle.append(idle(daemon, "started", "start"))
                sequential(
                    daemon, cases, args.requests, warmup, args.window, sampler, report, outcomes
                )
                burst(
                    daemon,
                    cases,
                    args.burst,
                    args.concurrency,
                    args.window,
                    sampler,
                    report,
                    outcomes,
                )
                if memory_case is not None:
                    memory(daemon, memory_case, args.memory_runs, report)
            report.samples = sampler.samples
            report.daemon_counts = dict(daemon.status().get("counts", {}))
        finally:
            daemon.stop()
    report.latency = latency_windows(outcomes, args.window)
    report.flat = flatness(report.samples, report.idle, args.window, warmup)
    report.zombies = zombie_report(report.samples, report.idle)
    print(render(report), flush=True)
    if args.json:
        data = asdict(report)
        data["verdicts"] = verdicts(report)
        Path(args.json).write_text(json.dumps(data, indent=1))
    found = verdicts(report)
    if not found["every run right"]:
        return 1
    return 0 if all(found.values()) else 2


if __name__ == "__main__":
    raise SystemExit(main())
