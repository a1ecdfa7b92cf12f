"""Benchmark cold `pytest ARGS` against `snapd pytest ARGS` on a heavy project.

Usage: python tools/bench.py [--project DIR] [--runs 5] [--json FILE] [--snapd PATH]

Without --project, a project is generated into a temporary directory with make_project's
defaults. The daemon is started with `snapd start --wait` and always stopped at the end.
Each case gets one untimed warm-up of both sides, then alternating timed runs. Every run
must exit 0 and both sides must report the same pytest summary; the exit status is 1 if any
run failed.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from time import perf_counter

from make_project import make_project

# Keeps runs independent: no cache file written by one run is read by the next.
COMMON_ARGS = ("-q", "-p", "no:cacheprovider")
RUN_TIMEOUT_SECONDS = 600.0
START_TIMEOUT_SECONDS = 600.0
STOP_TIMEOUT_SECONDS = 60.0
# "3 passed, 1 warning in 0.12s" -> "3 passed, 1 warning": the durations always differ.
DURATION = re.compile(r" in [0-9.]+s( \([0-9:]+\))?")


@dataclass(frozen=True)
class Case:
    """One benchmarked pytest invocation."""

    name: str
    args: tuple[str, ...]


CASES = (
    Case("trivial", ("tests/test_trivial.py::test_trivial",)),
    Case("fixture", ("tests/test_fixture.py::test_uses_fixture",)),
    Case("suite", ()),
)


@dataclass(frozen=True)
class Run:
    """The outcome of one timed subprocess."""

    command: tuple[str, ...]
    seconds: float
    returncode: int
    stdout: str
    stderr: str


@dataclass
class CaseResult:
    """Timings of one case; `error` says why it stopped early."""

    case: Case
    cold: list[float] = field(default_factory=list)
    warm: list[float] = field(default_factory=list)
    error: str | None = None


class BenchError(Exception):
    """A run failed or the two sides disagreed."""


@dataclass(frozen=True)
class Bench:
    """Where and how to run the commands."""

    project: Path
    pytest: Path
    snapd: Path
    env: dict[str, str]

    def run(self, *command: str | Path, timeout: float = RUN_TIMEOUT_SECONDS) -> Run:
        """Run `command` in the project, capturing output, and time it by the wall clock."""
        argv = tuple(str(part) for part in command)
        start = perf_counter()
        try:
            done = subprocess.run(
                argv,
                cwd=self.project,
                env=self.env,
                stdin=subprocess.DEVNULL,
                capture_output=True,
                text=True,
                timeout=timeout,
            )
        except subprocess.TimeoutExpired as expired:
            raise BenchError(f"{' '.join(argv)} timed out after {timeout:g} s") from expired
        seconds = perf_counter() - start
        return Run(argv, seconds, done.returncode, done.stdout, done.stderr)

    def cold(self, case: Case) -> Run:
        """Plain pytest, as the user would run it without snapd."""
        return self.run(self.pytest, *case.args, *COMMON_ARGS)

    def warm(self, case: Case) -> Run:
        """The same invocation served by the daemon."""
        return self.run(self.snapd, "pytest", *case.args, *COMMON_ARGS)


def timed_env() -> dict[str, str]:
    """The environment of the timed processes.

    The machine sets PYTHONDONTWRITEBYTECODE, but users' machines write bytecode: without it
    every cold run would compile the whole project again and flatter snapd.
    """
    env = dict(os.environ)
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    return env


def summary(run: Run) -> str:
    """pytest's final summary line without its duration."""
    lines = [line for line in run.stdout.splitlines() if line.strip()]
    return DURATION.sub("", lines[-1]).strip("= ") if lines else ""


def describe(run: Run) -> str:
    """A failed run's command, code and output tails, for the error message."""
    return (
        f"$ {' '.join(run.command)}\nexit code {run.returncode} after {run.seconds:.2f} s\n"
        f"--- stdout (tail) ---\n{run.stdout[-3000:]}\n--- stderr (tail) ---\n{run.stderr[-3000:]}"
    )


def check_pair(cold: Run, warm: Run) -> None:
    """Fail unless both sides exited 0 with the same summary."""
    for run in (cold, warm):
        if run.returncode != 0:
            raise BenchError(f"run failed\n{describe(run)}")
    if summary(cold) != summary(warm):
        raise BenchError(
            f"summaries differ: cold {summary(cold)!r}, snapd {summary(warm)!r}\n"
            f"{describe(cold)}\n{describe(warm)}"
        )


def run_pair(bench: Bench, case: Case, warm_first: bool) -> tuple[Run, Run]:
    """One cold and one warm run of `case`, in the order asked, checked against each other."""
    if warm_first:
        warm = bench.warm(case)
        cold = bench.cold(case)
    else:
        cold = bench.cold(case)
        warm = bench.warm(case)
    check_pair(cold, warm)
    note_stderr(warm)
    return cold, warm


def note_stderr(warm: Run) -> None:
    """Echo what snapd wrote to stderr: that is where it says it fell back to plain pytest."""
    if warm.stderr.strip():
        progress(f"  snapd stderr: {warm.stderr.strip().splitlines()[0]}")


def bench_case(bench: Bench, case: Case, runs: int) -> CaseResult:
    """Warm up, then time `runs` alternating pairs; a failure ends the case, not the bench."""
    result = CaseResult(case)
    try:
        run_pair(bench, case, warm_first=False)
        for index in range(runs):
            # Alternating which side goes first spreads any drift of the machine over both.
            cold, warm = run_pair(bench, case, warm_first=index % 2 == 1)
            result.cold.append(cold.seconds)
            result.warm.append(warm.seconds)
            progress(
                f"{case.name} #{index + 1}: cold {cold.seconds:.3f} s, warm {warm.seconds:.3f} s"
            )
    except BenchError as error:
        result.error = str(error)
        progress(f"{case.name} FAILED: {error}")
    return result


def progress(message: str) -> None:
    """Report progress on stderr, keeping stdout for the table."""
    print(message, file=sys.stderr, flush=True)


def span(values: list[float]) -> str:
    """min-max of timings."""
    return f"{min(values):.3f}-{max(values):.3f}"


def table(results: list[CaseResult]) -> str:
    """The results as a fixed-width text table."""
    header = f"{'case':<8} {'cold med s':>10} {'warm med s':>10} {'ratio':>8}"
    header += f"  {'cold min-max s':<15} {'warm min-max s':<15}"
    lines = [header]
    for result in results:
        if result.error is not None:
            lines.append(f"{result.case.name:<8} FAILED after {len(result.cold)} timed runs")
            continue
        cold, warm = statistics.median(result.cold), statistics.median(result.warm)
        lines.append(
            f"{result.case.name:<8} {cold:>10.3f} {warm:>10.3f} {cold / warm:>7.1f}x"
            f"  {span(result.cold):<15} {span(result.warm):<15}"
        )
    return "\n".join(line.rstrip() for line in lines)


def as_json(result: CaseResult) -> dict[str, object]:
    """One case's result for the JSON report."""
    data: dict[str, object] = {
        "case": result.case.name,
        "args": [*result.case.args, *COMMON_ARGS],
        "cold": result.cold,
        "warm": result.warm,
        "error": result.error,
    }
    if result.error is None:
        cold, warm = statistics.median(result.cold), statistics.median(result.warm)
        data.update(cold_median=cold, warm_median=warm, ratio=cold / warm)
    return data


def start_daemon(bench: Bench) -> float:
    """`snapd start --wait`; returns how long the snapshots took to be ready."""
    run = bench.run(bench.snapd, "start", "--wait", timeout=START_TIMEOUT_SECONDS)
    if run.returncode != 0:
        raise BenchError(f"snapd start failed\n{describe(run)}")
    progress(f"snapd start --wait: {run.seconds:.2f} s")
    return run.seconds


def stop_daemon(bench: Bench) -> bool:
    """`snapd stop`, reporting rather than raising so it never hides the original error."""
    try:
        run = bench.run(bench.snapd, "stop", timeout=STOP_TIMEOUT_SECONDS)
    except BenchError as error:
        progress(f"snapd stop: {error}")
        return False
    if run.returncode != 0:
        progress(f"snapd stop failed\n{describe(run)}")
    return run.returncode == 0


def daemon_status(bench: Bench) -> str:
    """`snapd status` output, kept in the report to help explain odd timings."""
    run = bench.run(bench.snapd, "status", timeout=STOP_TIMEOUT_SECONDS)
    return (run.stdout + run.stderr).strip()


def benchmark(bench: Bench, runs: int) -> dict[str, object]:
    """Start the daemon, time every case, and always stop the daemon."""
    report: dict[str, object] = {"project": str(bench.project), "runs": runs}
    try:
        report["snapd_start_seconds"] = start_daemon(bench)
        results = [bench_case(bench, case, runs) for case in CASES]
        report["snapd_status"] = daemon_status(bench)
        progress(f"snapd status:\n{report['snapd_status']}")
    finally:
        stopped = stop_daemon(bench)
    print(table(results))
    report["cases"] = [as_json(result) for result in results]
    report["ok"] = stopped and all(result.error is None for result in results)
    return report


def parse_args(argv: list[str]) -> argparse.Namespace:
    """Command-line options."""
    bin_dir = Path(sys.executable).parent
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--project", type=Path, help="project to run in (default: generate one)")
    parser.add_argument("--runs", type=int, default=5, help="timed runs of each side per case")
    parser.add_argument("--json", type=Path, help="also write the results as JSON here")
    parser.add_argument(
        "--snapd", type=Path, default=bin_dir / "snapd", help="snapd command (default: %(default)s)"
    )
    args = parser.parse_args(argv)
    args.pytest = bin_dir / "pytest"
    if args.runs < 1:
        parser.error("--runs must be at least 1")
    for command in (args.snapd, args.pytest):
        if not os.access(command, os.X_OK):
            parser.error(f"{command} is not an executable; is the package installed?")
    return args


def run_bench(args: argparse.Namespace, project: Path) -> int:
    """Benchmark `project`, print the table, write the JSON; returns the exit status."""
    bench = Bench(project.resolve(), args.pytest, args.snapd, timed_env())
    try:
        report = benchmark(bench, args.runs)
    except BenchError as error:
        progress(f"bench: {error}")
        return 1
    report["python"] = sys.version
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    return 0 if report["ok"] else 1


def main(argv: list[str] | None = None) -> int:
    """Entry point of the command line."""
    args = parse_args(sys.argv[1:] if argv is None else argv)
    if args.project is not None:
        return run_bench(args, args.project)
    with tempfile.TemporaryDirectory(prefix="snapd-bench-") as temp:
        project = make_project(Path(temp) / "project")
        progress(f"generated {project}")
        return run_bench(args, project)


if __name__ == "__main__":
    sys.exit(main())
