"""Benchmark what an edit costs a warm snapd.

Usage: python tools/bench_edits.py [--project DIR] [--runs 7] [--stat-files 5000]

- A leaf test module edited before each run: its next warm run against a warm run with no
  edit (the goal is at most 2x). The session snapshot must survive these edits.
- A deep project module (imported by conftest.py) edited: the first run's latency (served from
  the base while the session rebuilds), and the time until the session is warm again. The base
  snapshot must survive: a rebuild re-imports project modules only.
- The per-request freshness check: ``fileset.changed`` over N files, none changed.

Every timed process runs with PYTHONDONTWRITEBYTECODE unset, as on users' machines.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from make_project import make_project

from snapd import fileset

BIN = Path(sys.executable).parent
LEAF = "tests/test_mod_005.py"
DEEP = "heavy/mod_003.py"


def env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}


def snapd(project: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(BIN / "snapd"), *args], cwd=project, env=env(), capture_output=True, text=True,
        timeout=900, check=False,
    )  # fmt: skip


def timed_run(project: Path, *args: str) -> float:
    start = time.perf_counter()
    result = snapd(project, "pytest", "-q", *args)
    elapsed = time.perf_counter() - start
    if result.returncode != 0:
        raise SystemExit(f"run failed ({result.returncode}):\n{result.stdout}{result.stderr}")
    return elapsed


def snapshots(project: Path) -> dict[str, dict[str, Any]]:
    status = json.loads(snapd(project, "status", "--json").stdout)
    chain = next(c for c in status["chains"] if c["key"] == status["default_chain"])
    return {s["layer"]: s for s in chain["snapshots"]}


def touch_test(path: Path, n: int) -> None:
    """An edit that keeps the test passing: a comment that changes every time."""
    text = path.read_text().split("\n# edit ")[0]
    path.write_text(f"{text}\n# edit {n}\n")


def leaf_edits(project: Path, runs: int) -> dict[str, float]:
    leaf = project / LEAF
    timed_run(project, LEAF)  # warm-up
    plain, edited = [], []
    for n in range(runs):
        plain.append(timed_run(project, LEAF))
        touch_test(leaf, n)
        edited.append(timed_run(project, LEAF))
    return {"no_edit_median": statistics.median(plain), "edit_median": statistics.median(edited)}


def deep_edit(project: Path) -> dict[str, Any]:
    before = snapshots(project)
    deep = project / DEEP
    deep.write_text(deep.read_text() + "\n# edited\n")
    edited_at = time.perf_counter()
    first_run = timed_run(project, LEAF)
    wait_until(lambda: _session_ready(project, before["session"]["pid"]), timeout=600)
    warm_again = time.perf_counter() - edited_at
    after = snapshots(project)
    return {
        "first_run": first_run,
        "warm_again": warm_again,
        "session_rebuild": after["session"]["build_seconds"],
        "next_run": timed_run(project, LEAF),
        "base_survived": after["base"]["pid"] == before["base"]["pid"],
    }


def _session_ready(project: Path, old_pid: int) -> bool:
    session = snapshots(project).get("session", {})
    return session.get("state") == "ready" and session.get("pid") != old_pid


def wait_until(condition: Callable[[], bool], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise SystemExit("timed out waiting for the session to rebuild")
        time.sleep(0.05)  # polling the daemon's status: there is nothing to wait on


def stat_check(count: int, rounds: int = 20) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as folder:
        paths = []
        for i in range(count):
            path = os.path.join(folder, f"mod_{i:05d}.py")
            with open(path, "w") as f:
                f.write(f"VALUE = {i}\n" * 20)
            paths.append(path)
        entries = fileset.stamps(paths)
        times = []
        for _ in range(rounds):
            start = time.perf_counter()
            assert fileset.changed(entries) == []
            times.append(time.perf_counter() - start)
    return {"files": count, "median_ms": statistics.median(times) * 1000}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--project", type=Path)
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--stat-files", type=int, default=5000)
    options = parser.parse_args()
    project = options.project or make_project(Path(tempfile.mkdtemp(prefix="snapd-edits-")) / "p")
    print(f"project: {project}")
    print(f"stat check: {json.dumps(stat_check(options.stat_files))}")
    started = snapd(project, "start", "--wait")
    if started.returncode != 0:
        raise SystemExit(started.stdout + started.stderr)
    try:
        session_before = snapshots(project)["session"]["pid"]
        leaf = leaf_edits(project, options.runs)
        ratio = leaf["edit_median"] / leaf["no_edit_median"]
        kept = snapshots(project)["session"]["pid"] == session_before
        print(
            f"leaf test module: warm {leaf['no_edit_median']:.3f} s, after an edit "
            f"{leaf['edit_median']:.3f} s ({ratio:.2f}x; goal <= 2x); session kept: {kept}"
        )
        deep = deep_edit(project)
        print(
            f"deep module edit: first run {deep['first_run']:.2f} s (from the base), warm again "
            f"after {deep['warm_again']:.2f} s (session rebuild {deep['session_rebuild']:.2f} s), "
            f"next run {deep['next_run']:.3f} s; base survived: {deep['base_survived']}"
        )
        return 0 if ratio <= 2 and kept and deep["base_survived"] else 1
    finally:
        snapd(project, "stop")


if __name__ == "__main__":
    raise SystemExit(main())
