#!/usr/bin/env python3
"""Parity: does ``snapd pytest ARGS`` give what ``pytest ARGS`` gives, on a real project?

    python tools/parity.py PROJECT_DIR [--python PY] [--json OUT] -- PYTEST_ARGS...

For every test file of the project (as ``pytest --collect-only PYTEST_ARGS`` finds them) it runs
``pytest PYTEST_ARGS FILE`` and then ``snapd pytest PYTEST_ARGS FILE`` and compares the exit
codes, every test's outcome (from ``--junitxml``) and the summary line's counts. The daemon is
its own (a fresh ``SNAPD_RUNTIME_DIR`` under /tmp), built before the first comparison and
always stopped at the end. Then it times one test cold and warm (medians of alternating runs).

It prints a table per file and a summary, and exits 1 on any difference (2 on a usage error).
``pytest`` and ``snapd`` are those next to ``--python`` (default: this interpreter), so the
project's venv must have snapd installed. With pytest-randomly installed it adds
``-p no:randomly`` to both runs: a random order per run would differ cold or warm alike.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

# Variables a pytest run sets that the user's shell would not have.
_OURS = ("PYTEST_ADDOPTS", "PYTEST_CURRENT_TEST", "PYTEST_VERSION", "PYTEST_PLUGINS")
_COUNTS = re.compile(r"(\d+) (passed|failed|errors?|skipped|xfailed|xpassed|warnings?|deselected)")
_SETTLED = ("ready", "failed", "dead", "invalid")
RESTARTED = "snapd: snapd itself changed since the daemon started"
# Options whose next word is their value, even when it names a path.
_VALUE_OPTIONS = {
    "-c", "-p", "-o", "-k", "-m", "--config-file", "--rootdir", "--confcutdir", "--basetemp",
    "--ignore", "--ignore-glob", "--deselect", "--junitxml", "--junit-xml", "--cov",
    "--cov-config", "--ds", "--dc", "--import-mode", "--log-file", "--override-ini",
}  # fmt: skip


@dataclass
class Run:
    code: int
    seconds: float
    outcomes: dict[str, str]
    counts: dict[str, int]
    notices: list[str]
    tail: str

    def same_as(self, other: Run) -> bool:
        return (self.code, self.outcomes, self.counts) == (
            other.code,
            other.outcomes,
            other.counts,
        )


@dataclass
class FileResult:
    path: str
    tests: int
    cold: Run
    warm: Run
    identical: bool
    differences: list[str] = field(default_factory=list)


@dataclass
class Report:
    project: str
    args: list[str]
    files: list[FileResult]
    tests: int
    identical: bool
    one_test: str
    cold_seconds: float | None
    warm_seconds: float | None
    notices: list[str]

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


class Parity:
    def __init__(self, project: Path, python: str, args: list[str], timeout: float) -> None:
        self.project = project
        bin_dir = Path(python).parent
        self.pytest = str(bin_dir / "pytest")
        self.snapd = str(bin_dir / "snapd")
        self.python = python
        self.timeout = timeout
        self.runtime = tempfile.mkdtemp(prefix="sdp", dir="/tmp")
        os.chmod(self.runtime, 0o700)
        self.reports = Path(tempfile.mkdtemp(prefix="parity-reports-"))
        self.env = {k: v for k, v in os.environ.items() if k not in _OURS}
        self.env["SNAPD_RUNTIME_DIR"] = self.runtime
        # Paths among the arguments choose what to collect; each comparison names its file.
        targets = [_is_target(project, args, i) for i in range(len(args))]
        self.targets = [a for a, target in zip(args, targets, strict=True) if target]
        self.options = [a for a, target in zip(args, targets, strict=True) if not target]
        self.options += self._extra_args()
        self.args = [*self.options, *self.targets]
        self.count = 0

    def _extra_args(self) -> list[str]:
        probe = subprocess.run(
            [self.python, "-c", "import pytest_randomly"], capture_output=True, env=self.env
        )
        return ["-p", "no:randomly"] if probe.returncode == 0 else []

    # -- processes --------------------------------------------------------------------------

    def _run(self, argv: list[str]) -> tuple[subprocess.CompletedProcess[str], float]:
        started = time.monotonic()
        result = subprocess.run(
            argv,
            cwd=self.project,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=self.timeout,
            stdin=subprocess.DEVNULL,
        )
        return result, time.monotonic() - started

    def start(self) -> None:
        result, _ = self._run([self.snapd, "start", "--wait"])
        status, _ = self._run([self.snapd, "status"])
        if status.returncode != 0:
            raise SystemExit(f"parity: snapd start failed:\n{result.stdout}{result.stderr}")
        if result.returncode != 0:
            # A session snapshot that failed to build: runs come from the base, still exact.
            print(f"parity: {result.stdout.strip()}\n{status.stdout}", flush=True)
        # The options may key a chain of their own: build it now, so that runs are warm.
        self._run([self.snapd, "pytest", *self.options, "--collect-only", "-qq"])
        self.wait_settled()

    def wait_settled(self, timeout: float = 600) -> None:
        """Until no snapshot of any chain is building (only a poll can see that)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            result, _ = self._run([self.snapd, "status", "--json"])
            try:
                status = json.loads(result.stdout)
            except json.JSONDecodeError:
                return
            states = [s["state"] for c in status.get("chains", []) for s in c["snapshots"]]
            if states and all(state in _SETTLED for state in states):
                return
            time.sleep(0.1)

    def stop(self) -> None:
        try:
            self._run([self.snapd, "stop"])
        finally:
            shutil.rmtree(self.runtime, ignore_errors=True)
            shutil.rmtree(self.reports, ignore_errors=True)

    # -- comparisons ------------------------------------------------------------------------

    def files(self) -> dict[str, int]:
        """Test files and how many tests each holds, as pytest collects them."""
        result, _ = self._run([self.pytest, *self.args, "--collect-only", "-qq"])
        found: dict[str, int] = {}
        for line in result.stdout.splitlines():
            match = re.match(r"^(\S+\.py): (\d+)$", line)
            if match:
                found[match[1]] = int(match[2])
            match = re.match(r"^ERROR (\S+\.py)\b", line)
            if match:
                found.setdefault(match[1], 0)
        if not found:
            raise SystemExit(
                f"parity: pytest collected nothing:\n{result.stdout[-3000:]}{result.stderr[-3000:]}"
            )
        return found

    def one(self, command: list[str], target: list[str]) -> Run:
        self.count += 1
        report = self.reports / f"{self.count}.xml"
        for _ in range(3):
            result, seconds = self._run([*command, *self.options, *target, f"--junitxml={report}"])
            if not result.stderr.startswith(RESTARTED):
                break
            # snapd's sources changed under the daemon (someone is working on snapd): it
            # restarts, and this run was plain pytest. Wait for the new daemon, run again.
            self._run([self.snapd, "start", "--wait"])
            self.wait_settled()
        lines = result.stdout.strip().splitlines()
        summary = lines[-1] if lines else ""
        return Run(
            code=result.returncode,
            seconds=seconds,
            outcomes=junit_outcomes(report),
            counts={kind.rstrip("s"): int(n) for n, kind in _COUNTS.findall(summary)},
            notices=[line for line in result.stderr.splitlines() if line.startswith("snapd: ")],
            tail="\n".join(lines[-15:]) + ("\n" + result.stderr[-2000:] if result.stderr else ""),
        )

    def compare_file(self, path: str, tests: int) -> FileResult:
        cold = self.one([self.pytest], [path])
        warm = self.one([self.snapd, "pytest"], [path])
        differences = []
        if cold.code != warm.code:
            differences.append(f"exit code: cold {cold.code}, warm {warm.code}")
        for test in sorted(set(cold.outcomes) | set(warm.outcomes)):
            a, b = cold.outcomes.get(test, "absent"), warm.outcomes.get(test, "absent")
            if a != b:
                differences.append(f"{test}: cold {a}, warm {b}")
        if cold.counts != warm.counts:
            differences.append(f"summary: cold {cold.counts}, warm {warm.counts}")
        return FileResult(path, tests, cold, warm, not differences, differences)

    def time_one_test(self, files: list[FileResult], repeat: int) -> tuple[str, float, float]:
        """Median seconds of one passing test, cold and warm, in alternating runs."""
        test = ""
        for result in files:
            passed = [t for t, outcome in result.cold.outcomes.items() if outcome == "passed"]
            if passed:
                test = _node_id(result.path, passed[0])
                break
        if not test:
            return "", float("nan"), float("nan")
        cold, warm = [], []
        failed = False
        for _ in range(repeat):
            cold.append(self._run([self.pytest, *self.options, "-q", test])[1])
            run, seconds = self._run([self.snapd, "pytest", *self.options, "-q", test])
            warm.append(seconds)
            failed = failed or run.returncode != 0
        if failed:  # a time of a run that did not pass says nothing
            return f"{test} (did not pass warm)", statistics.median(cold), float("nan")
        return test, statistics.median(cold), statistics.median(warm)


def _is_target(project: Path, args: list[str], i: int) -> bool:
    """Whether ``args[i]`` names a path or node id to collect (not an option or its value)."""
    arg, previous = args[i], args[i - 1] if i else ""
    if arg.startswith("-") or previous in _VALUE_OPTIONS:
        return False
    return (project / arg.split("::")[0]).exists()


def junit_outcomes(path: Path) -> dict[str, str]:
    """``classname::name`` -> passed, failure, error or skipped, from a junitxml report."""
    if not path.exists():
        return {}
    found: dict[str, str] = {}
    for case in ET.parse(path).getroot().iter("testcase"):
        outcome = "passed"
        for child in case:
            if child.tag in ("failure", "error", "skipped"):
                # A test that failed and then errored at teardown has both: keep them all.
                outcome = child.tag if outcome == "passed" else f"{outcome}+{child.tag}"
        key = f"{case.get('classname')}::{case.get('name')}"
        while key in found:  # the same name twice (a test that errored at teardown)
            key += "'"
        found[key] = outcome
    return found


def _node_id(path: str, junit_name: str) -> str:
    """A node id for a junit ``classname::name`` of a test in ``path``."""
    classname, _, name = junit_name.partition("::")
    module = path[: -len(".py")].replace("/", ".")
    inner = classname[len(module) :].lstrip(".") if classname.startswith(module) else ""
    parts = [path, *([p for p in inner.split(".") if p] if inner else []), name.rstrip("'")]
    return "::".join(parts)


def print_report(report: Report, out: Any = sys.stdout) -> None:
    width = max([len(f.path) for f in report.files] + [4])
    header = f"{'file':<{width}}  {'tests':>5}  {'cold s':>7}  {'warm s':>7}  identical"
    print(f"\n== {report.project}  (pytest {' '.join(report.args)})", file=out)
    print(header, file=out)
    print("-" * len(header), file=out)
    for f in report.files:
        print(
            f"{f.path:<{width}}  {f.tests:>5}  {f.cold.seconds:>7.2f}  {f.warm.seconds:>7.2f}  "
            f"{'yes' if f.identical else 'NO'}",
            file=out,
        )
        for difference in f.differences:
            print(f"    {difference}", file=out)
        if not f.identical:
            print(f"    cold output ends:\n{_indent(f.cold.tail)}", file=out)
            print(f"    warm output ends:\n{_indent(f.warm.tail)}", file=out)
    same = sum(f.identical for f in report.files)
    print("-" * len(header), file=out)
    print(
        f"summary: {report.tests} tests in {len(report.files)} files; "
        f"{same}/{len(report.files)} files identical; identical: "
        f"{'yes' if report.identical else 'NO'}",
        file=out,
    )
    if report.one_test and report.cold_seconds and not report.warm_seconds:
        print(f"one test ({report.one_test}): cold {report.cold_seconds:.2f}s", file=out)
    if report.one_test and report.cold_seconds and report.warm_seconds:
        print(
            f"one test ({report.one_test}): cold {report.cold_seconds:.2f}s, "
            f"warm {report.warm_seconds:.2f}s "
            f"({report.cold_seconds / report.warm_seconds:.1f}x)",
            file=out,
        )
    for notice in report.notices:
        print(f"notice: {notice}", file=out)


def _indent(text: str) -> str:
    return "\n".join(f"      {line}" for line in text.splitlines())


def parity(
    project: Path, args: list[str], python: str, timeout: float = 900, repeat: int = 3
) -> Report:
    runner = Parity(project, python, args, timeout)
    try:
        runner.start()
        files = [runner.compare_file(path, n) for path, n in runner.files().items()]
        test, cold, warm = runner.time_one_test(files, repeat)
    finally:
        runner.stop()
    notices = sorted({n for f in files for n in f.warm.notices})
    return Report(
        project=str(project),
        args=runner.args,
        files=files,
        tests=sum(f.tests for f in files),
        identical=all(f.identical for f in files),
        one_test=test,
        cold_seconds=cold if cold == cold else None,
        warm_seconds=warm if warm == warm else None,
        notices=notices,
    )


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    own, pytest_args = (
        (argv[: argv.index("--")], argv[argv.index("--") + 1 :]) if ("--" in argv) else (argv, [])
    )
    parser = argparse.ArgumentParser(
        prog="parity.py", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("project", type=Path, help="the project's directory (run from there)")
    parser.add_argument("--python", default=sys.executable, help="the project venv's python")
    parser.add_argument("--json", type=Path, help="also write the report as JSON here")
    parser.add_argument("--repeat", type=int, default=3, help="timed runs of one test, each way")
    parser.add_argument("--timeout", type=float, default=900, help="seconds for one pytest run")
    options = parser.parse_args(own)
    if not options.project.is_dir():
        parser.error(f"{options.project} is not a directory")
    report = parity(
        options.project.resolve(), pytest_args, options.python, options.timeout, options.repeat
    )
    print_report(report)
    if options.json:
        options.json.write_text(json.dumps(report.to_json(), indent=2))
    return 0 if report.identical else 1


if __name__ == "__main__":
    sys.exit(main())
