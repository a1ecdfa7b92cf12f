"""Randomised edit/run check: after every edit, ``snapd pytest`` must give what pytest gives.

It generates a small project (a package with a deep, a mid and a leaf module and one that reads
a data file at import time; a conftest with a session fixture and a report header; test modules
that import the package, use the fixture, xfail, skip), starts a daemon on it, then applies
seeded random edits in bursts of one to four. Each edit is followed at once (no sleeps) by
``snapd pytest -v -p no:randomly ARGS``, so many edits of one file land within the same second
and keep its size: the case where Python would load stale bytecode.

Each of those runs is then compared with plain ``pytest`` with the same arguments on the same
tree: exit codes, per-test outcomes (the ``-v`` lines and the short summary), the final line's
counts, the whole normalised stdout, and stderr. Normalising blanks durations and object
addresses (``<function f at 0x7f...>`` in assertion messages): those differ between any two
processes.

The oracle runs in a byte-identical copy of the project (same path length, its path renamed
in its output), brought to each run's tree just before it runs: a cold run takes about a
second, and running it in snapd's folder between two edits would space them out past the
one-second resolution stale bytecode hides in. The oracle must not be fooled by stale
bytecode itself: each cold run gets its own ``PYTHONPYCACHEPREFIX``, holding the interpreter's
bytecode but none of the project's, so it compiles every project file from what is on disk.

Usage: python tools/edit_fuzz.py --steps 1000 --seed N [--workdir DIR] [--bytecode/--no-bytecode]
       [--restart-stalled/--no-restart-stalled] [--verbose]

Importable: ``run_fuzz(steps, seed)`` returns a ``Report``. Exits 1 on any mismatch.
"""

from __future__ import annotations

import argparse
import contextlib
import difflib
import json
import os
import random
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# No stubs in the dev dependencies; where types-psutil is installed the ignore is unused.
import psutil  # type: ignore[import-untyped, unused-ignore]

BIN = Path(sys.executable).parent
SNAPD = str(BIN / "snapd")
PYTEST = str(BIN / "pytest")
# Every run gets these first: -v for the per-test lines we parse; no pytest-randomly, whose
# reordering would make two runs differ legitimately if it were installed.
BASE_ARGS = ("-v", "-p", "no:randomly")
# Variables a surrounding pytest run sets, which a user's shell would not have; and the two
# bytecode switches, which this tool sets itself.
_DROPPED_ENV = (
    "PYTEST_ADDOPTS", "PYTEST_CURRENT_TEST", "PYTEST_VERSION", "PYTEST_PLUGINS",
    "PYTHONPYCACHEPREFIX", "PYTHONDONTWRITEBYTECODE",
)  # fmt: skip
RUN_TIMEOUT = 300.0
# A session snapshot neither ready nor building after this many bursts on a tree with no
# syntax error will not be rebuilt: a stall, reported (and, by default, worked around).
STALL_BURSTS = 3
OUTCOMES = ("PASSED", "FAILED", "ERROR", "SKIPPED", "XFAIL", "XPASS")
# "tests/test_a.py::test_b[1] PASSED (reason)   [ 50%]": a -v line of one test.
_VERBOSE_LINE = re.compile(rf"^(\S+) ({'|'.join(OUTCOMES)})\b.*\[\s*\d+%\]$")
# "FAILED tests/test_a.py::test_b - assert 1 == 2", "ERROR tests/test_c.py": the short summary,
# the only place a collection error of a whole module shows up.
_SUMMARY_LINE = re.compile(rf"^({'|'.join(OUTCOMES)}) (\S+)")
_FINAL_LINE = re.compile(r"^=+ (.*) in [\d.]+s(?: \([0-9:]+\))? =+$")
_SYNTAX_ERROR = "\n\ndef broken(:\n    pass\n"


def normalise(output: str) -> str:
    """Output with what legitimately differs between two runs (durations) blanked out.

    The same rules as ``tests/conftest.py``'s ``normalise``, copied so this tool stands alone.
    """
    output = re.sub(r" in \d+\.\d+s( \([0-9:]+\))?", " in Xs", output)
    return re.sub(r"=+ (.* in Xs) =+", r"== \1 ==", output)


def normalise_whole(output: str) -> str:
    """``normalise``, and object addresses blanked too, for comparing whole outputs.

    pytest's assertion rewriting shows reprs such as ``<function doubled at 0x7f0b8d255da0>``:
    addresses differ between any two processes, so between snapd's child and plain pytest.
    """
    return re.sub(r" at 0x[0-9a-f]+>", " at 0x?>", normalise(output))


# -- the project ----------------------------------------------------------------------------

# Each template is filled from the project's digit-valued parameters, so every value edit is a
# single-digit change: same size, same second, the stale-bytecode trap.
TEMPLATES: dict[str, str] = {
    "pkg/__init__.py": "",
    "pkg/deep.py": '"""The bottom of the import graph."""\n\nVALUE = {deep}\n',
    "pkg/mid.py": (
        '"""Imports the deep module and computes from it at import time."""\n\n'
        "from pkg import deep\n\n"
        "FACTOR = {factor}\n"
        "DOUBLED = deep.VALUE * FACTOR\n\n\n"
        "def doubled() -> int:\n"
        "    return deep.VALUE * FACTOR\n"
    ),
    "pkg/leaf.py": (
        '"""Imported by one test module only."""\n\n\ndef leaf() -> int:\n    return {leaf}\n'
    ),
    "pkg/config.py": (
        '"""Reads a data file at import time: a dependency that is not a module."""\n\n'
        "import os\n\n"
        "with open(os.path.join(os.path.dirname(__file__), 'data.txt')) as f:\n"
        "    LIMIT = int(f.read())\n"
    ),
    "pkg/data.txt": "{data}\n",
    "tests/conftest.py": (
        "import pytest\n\n"
        "from pkg import mid\n\n"
        "SETTING = {setting}\n\n\n"
        "def pytest_report_header(config):\n"
        '    return f"fuzz setting: {{SETTING}}, doubled: {{mid.DOUBLED}}"\n\n\n'
        "@pytest.fixture(scope='session')\n"
        "def setting():\n"
        "    return SETTING\n"
    ),
    "tests/test_mid.py": (
        "from pkg import mid\n\n"
        "EXPECT = {mid_expect}\n\n\n"
        "def test_doubled():\n"
        "    assert mid.DOUBLED == EXPECT\n\n\n"
        "def test_call():\n"
        "    assert mid.doubled() < 10\n"
    ),
    "tests/test_leaf.py": (
        "import pytest\n\n"
        "from pkg.leaf import leaf\n\n"
        "EXPECT = {leaf_expect}\n\n\n"
        "def test_leaf():\n"
        "    assert leaf() == EXPECT\n\n\n"
        '@pytest.mark.parametrize("n", [1, 2, 3])\n'
        "def test_param(n):\n"
        "    assert leaf() + n > 4\n"
    ),
    "tests/test_conf.py": (
        "import pytest\n\n\n"
        "def test_setting(setting):\n"
        "    assert setting < 5\n\n\n"
        "def test_skipped():\n"
        '    pytest.skip("fuzz skip")\n'
    ),
    "tests/test_data.py": (
        "from pkg import config\n\n\ndef test_limit():\n    assert config.LIMIT < 7\n"
    ),
    "tests/test_plain.py": (
        '"""Imports nothing from the project: its edits are re-imported by the child alone."""\n\n'
        "VALUE = {plain}\n\n\n"
        "def test_plain():\n"
        "    assert VALUE % 2 == 0\n\n\n"
        "def test_plain_small():\n"
        "    assert VALUE < 8\n"
    ),
    "tests/test_xfail.py": (
        "import pytest\n\n"
        "from pkg import deep\n\n"
        "VALUE = {xfail}\n\n\n"
        '@pytest.mark.xfail(reason="fuzz")\n'
        "def test_maybe():\n"
        "    assert VALUE == 1\n\n\n"
        '@pytest.mark.xfail(reason="fuzz")\n'
        "def test_deep():\n"
        "    assert deep.VALUE > 4\n"
    ),
}
# Test functions of each fixed test module, for choosing node ids.
TEST_IDS: dict[str, tuple[str, ...]] = {
    "tests/test_mid.py": ("test_doubled", "test_call"),
    "tests/test_leaf.py": ("test_leaf", "test_param[1]", "test_param[2]", "test_param[3]"),
    "tests/test_conf.py": ("test_setting", "test_skipped"),
    "tests/test_data.py": ("test_limit",),
    "tests/test_plain.py": ("test_plain", "test_plain_small"),
    "tests/test_xfail.py": ("test_maybe", "test_deep"),
}
# Each digit parameter and the file it lives in.
PARAMS: dict[str, str] = {
    "deep": "pkg/deep.py",
    "factor": "pkg/mid.py",
    "leaf": "pkg/leaf.py",
    "data": "pkg/data.txt",
    "setting": "tests/conftest.py",
    "mid_expect": "tests/test_mid.py",
    "leaf_expect": "tests/test_leaf.py",
    "plain": "tests/test_plain.py",
    "xfail": "tests/test_xfail.py",
}
INITIAL: dict[str, int] = {
    "deep": 1, "factor": 2, "leaf": 3, "data": 5, "setting": 1,
    "mid_expect": 2, "leaf_expect": 3, "plain": 4, "xfail": 1,
}  # fmt: skip
NEW_TEST = "{imports}VALUE = {value}\n\n\ndef test_new():\n    assert VALUE + {deep_ref} < 10\n"
BREAKABLE = (
    "pkg/deep.py", "pkg/mid.py", "pkg/leaf.py", "pkg/config.py", "tests/conftest.py",
    "tests/test_mid.py", "tests/test_leaf.py", "tests/test_conf.py", "tests/test_data.py",
    "tests/test_plain.py", "tests/test_xfail.py",
)  # fmt: skip


@dataclass
class NewTest:
    """A test file the fuzzer added: its digit, and whether it imports the deep module."""

    value: int
    imports_deep: bool


@dataclass
class Model:
    """What the project's files should hold now; ``render`` turns it into file contents."""

    values: dict[str, int] = field(default_factory=lambda: dict(INITIAL))
    strict: bool = False
    added: dict[str, NewTest] = field(default_factory=dict)
    broken: dict[str, int] = field(default_factory=dict)  # path -> steps left until the fix
    undo: list[tuple[str, int]] = field(default_factory=list)  # (param, previous value)
    next_new: int = 1

    def render(self, path: str) -> str:
        if path == "pyproject.toml":
            text = (
                "[tool.pytest.ini_options]\n"
                'testpaths = ["tests"]\n'
                'pythonpath = ["."]\n'
                f"xfail_strict = {'true' if self.strict else 'false'}\n"
            )
        elif path in self.added:
            new = self.added[path]
            text = NEW_TEST.format(
                imports="from pkg import deep\n\n" if new.imports_deep else "",
                value=new.value,
                deep_ref="deep.VALUE" if new.imports_deep else "0",
            )
        else:
            text = TEMPLATES[path].format(**self.values)
        return text + _SYNTAX_ERROR if path in self.broken else text

    def files(self) -> list[str]:
        return ["pyproject.toml", *TEMPLATES, *self.added]

    def test_modules(self) -> list[str]:
        return [*TEST_IDS, *self.added]

    def node_ids(self) -> list[str]:
        ids = [f"{module}::{name}" for module, names in TEST_IDS.items() for name in names]
        return ids + [f"{module}::test_new" for module in self.added]


@dataclass
class Edit:
    """One edit: what it did (for the report), the files to write and the files to delete."""

    description: str
    write: list[str]
    delete: list[str] = field(default_factory=list)


class EditGenerator:
    """Seeded random edits to a ``Model``; the caller writes the files each edit names."""

    def __init__(self, rng: random.Random, model: Model) -> None:
        self.rng = rng
        self.model = model
        # (weight, edit): the kinds the acceptance asks for, value edits the most common.
        self.kinds: list[tuple[int, Callable[[], Edit | None]]] = [
            (4, lambda: self._set_param("deep")),
            (2, lambda: self._set_param("factor")),
            (3, lambda: self._set_param("leaf")),
            (2, lambda: self._set_param("data")),
            (3, lambda: self._set_param("setting")),
            (2, lambda: self._set_param("mid_expect")),
            (2, lambda: self._set_param("leaf_expect")),
            (4, lambda: self._set_param("plain")),
            (2, lambda: self._set_param("xfail")),
            (3, self._undo),
            (4, self._again),
            (2, self._toggle_strict),
            (2, self._add_test),
            (3, self._edit_added),
            (1, self._delete_added),
            (2, self._break),
            (2, self._resave),
        ]

    def next(self) -> Edit:
        """The next edit: a due syntax-error fix first, else a random kind that applies."""
        for path in list(self.model.broken):
            self.model.broken[path] -= 1
        due = [p for p, left in self.model.broken.items() if left <= 0]
        if due:
            path = due[0]
            del self.model.broken[path]
            return Edit(f"fix the syntax error in {path}", [path])
        weights = [w for w, _ in self.kinds]
        while True:
            (_, make), *_ = self.rng.choices(self.kinds, weights)
            edit = make()
            if edit is not None:
                return edit

    def _digit(self, old: int) -> int:
        return self.rng.choice([d for d in range(10) if d != old])

    def _set_param(self, name: str) -> Edit:
        old = self.model.values[name]
        new = self._digit(old)
        self.model.values[name] = new
        self.model.undo.append((name, old))
        return Edit(f"{name}: {old} -> {new} in {PARAMS[name]}", [PARAMS[name]])

    def _undo(self) -> Edit | None:
        """Put back the value before the last value edit: an editor's undo, same size."""
        if not self.model.undo:
            return None
        name, previous = self.model.undo.pop()
        old = self.model.values[name]
        if old == previous:
            return None
        self.model.values[name] = previous
        return Edit(f"undo {name}: {old} -> {previous} in {PARAMS[name]}", [PARAMS[name]])

    def _again(self) -> Edit | None:
        """Change the value the last value edit changed once more: within a burst, two
        same-size saves of one file within the same second, a run between them."""
        if not self.model.undo:
            return None
        return self._set_param(self.model.undo[-1][0])

    def _toggle_strict(self) -> Edit:
        self.model.strict = not self.model.strict
        return Edit(f"pyproject.toml: xfail_strict = {self.model.strict}", ["pyproject.toml"])

    def _add_test(self) -> Edit | None:
        if len(self.model.added) >= 3:
            return None
        path = f"tests/test_new{self.model.next_new}.py"
        self.model.next_new += 1
        new = NewTest(self.rng.randrange(10), self.rng.random() < 0.5)
        self.model.added[path] = new
        deep = ", importing pkg.deep" if new.imports_deep else ""
        return Edit(f"add {path} (VALUE = {new.value}{deep})", [path])

    def _edit_added(self) -> Edit | None:
        if not self.model.added:
            return None
        path = self.rng.choice(sorted(self.model.added))
        new = self.model.added[path]
        old, new.value = new.value, self._digit(new.value)
        return Edit(f"{path}: VALUE {old} -> {new.value}", [path])

    def _delete_added(self) -> Edit | None:
        if not self.model.added:
            return None
        path = self.rng.choice(sorted(self.model.added))
        del self.model.added[path]
        self.model.broken.pop(path, None)
        return Edit(f"delete {path}", [], [path])

    def _break(self) -> Edit | None:
        candidates = [p for p in (*BREAKABLE, *self.model.added) if p not in self.model.broken]
        if not candidates or len(self.model.broken) >= 2:
            return None
        path = self.rng.choice(sorted(candidates))
        # Fixed 2 to 5 steps later: the runs until then see the error, edits elsewhere go on.
        self.model.broken[path] = self.rng.randint(2, 5)
        return Edit(f"syntax error in {path}", [path])

    def _resave(self) -> Edit:
        """Save a file unchanged: a new mtime, the same content (must keep snapshots warm)."""
        path = self.rng.choice(sorted(self.model.files()))
        return Edit(f"resave {path} unchanged", [path])


# The test modules whose outcome or output each file's content shows in (besides the header,
# which every run prints: it shows the conftest's SETTING and mid.DOUBLED).
DEPENDENTS: dict[str, tuple[str, ...]] = {
    "pyproject.toml": ("tests/test_xfail.py",),
    "pkg/deep.py": ("tests/test_mid.py", "tests/test_xfail.py"),
    "pkg/mid.py": ("tests/test_mid.py",),
    "pkg/leaf.py": ("tests/test_leaf.py",),
    "pkg/config.py": ("tests/test_data.py",),
    "pkg/data.txt": ("tests/test_data.py",),
    "tests/conftest.py": ("tests/test_conf.py",),
}


def dependents(edit: Edit, model: Model) -> list[str]:
    """The test modules that show what ``edit`` changed."""
    found: list[str] = []
    for path in edit.write:
        if path in model.test_modules():
            found.append(path)
        found += DEPENDENTS.get(path, ())
        if path == "pkg/deep.py":
            found += [p for p, new in model.added.items() if new.imports_deep]
    return sorted(set(found))


def choose_args(rng: random.Random, model: Model, edit: Edit | None = None) -> list[str]:
    """The test modules the edit shows in; or nothing, the tests folder, some test files,
    or some node ids (test modules with a syntax error included)."""
    related = dependents(edit, model) if edit is not None else []
    pick = rng.random()
    if related and pick < 0.3:
        return related
    if pick < 0.45:
        return []
    if pick < 0.55:
        return ["tests"]
    if pick < 0.75:
        return rng.sample(model.test_modules(), rng.randint(1, 2))
    return rng.sample(model.node_ids(), rng.randint(1, 3))


# -- runs and their comparison ----------------------------------------------------------------


@dataclass
class Run:
    """One pytest run's result."""

    code: int
    stdout: str
    stderr: str
    seconds: float

    def outcomes(self) -> list[str]:
        """Per-test outcome lines (``nodeid OUTCOME``) and short-summary lines, sorted."""
        found = []
        for line in self.stdout.splitlines():
            verbose = _VERBOSE_LINE.match(line)
            summary = _SUMMARY_LINE.match(line)
            if verbose:
                found.append(f"{verbose.group(1)} {verbose.group(2)}")
            elif summary:
                found.append(f"summary: {summary.group(1)} {summary.group(2)}")
        return sorted(found)

    def counts(self) -> dict[str, int]:
        """The final line's counts: ``{"passed": 3, "failed": 1}``; ``{}`` if none."""
        for line in reversed(self.stdout.splitlines()):
            final = _FINAL_LINE.match(line)
            if final:
                return {word: int(n) for n, word in re.findall(r"(\d+) (\w+)", final.group(1))}
        return {}

    def snapd_lines(self) -> list[str]:
        """What the snapd client said on stderr (a fallback to plain pytest, say)."""
        return [line for line in self.stderr.splitlines() if line.startswith("snapd:")]

    def own_stderr(self) -> str:
        """stderr without snapd's own lines: what pytest itself wrote there."""
        return "".join(
            line for line in self.stderr.splitlines(keepends=True) if not line.startswith("snapd:")
        )


@dataclass
class Mismatch:
    """A run where snapd and pytest disagreed, with what is needed to reproduce it."""

    seed: int
    step: int
    edit: str
    args: list[str]
    warm: Run
    cold: Run
    differences: list[str]
    recent: list[str]
    status: str
    log_tail: str

    def __str__(self) -> str:
        warm_out = normalise_whole(self.warm.stdout)
        cold_out = normalise_whole(self.cold.stdout)
        diff = "".join(
            difflib.unified_diff(
                cold_out.splitlines(keepends=True),
                warm_out.splitlines(keepends=True),
                "pytest (cold)",
                "snapd pytest (warm)",
            )
        )
        return "\n".join(
            [
                f"=== MISMATCH seed {self.seed} step {self.step}: {', '.join(self.differences)}",
                f"edit: {self.edit}",
                f"args: {' '.join([*BASE_ARGS, *self.args])}",
                "recent steps (oldest first):",
                *(f"  {line}" for line in self.recent),
                f"exit codes: snapd {self.warm.code}, pytest {self.cold.code}",
                "--- stdout diff (normalised):",
                diff.rstrip() or "(none)",
                "--- snapd stdout:",
                self.warm.stdout.rstrip(),
                "--- snapd stderr:",
                self.warm.stderr.rstrip(),
                "--- pytest stdout:",
                self.cold.stdout.rstrip(),
                "--- pytest stderr:",
                self.cold.stderr.rstrip(),
                "--- snapd status:",
                self.status.rstrip(),
                "--- daemon log (tail):",
                self.log_tail.rstrip(),
                "=== end of mismatch",
            ]
        )


def differences(warm: Run, cold: Run) -> list[str]:
    """What differs between snapd's run and pytest's, by check; empty when they agree."""
    found = []
    if warm.code != cold.code:
        found.append(f"exit code {warm.code} != {cold.code}")
    if warm.outcomes() != cold.outcomes():
        found.append("per-test outcomes")
    if warm.counts() != cold.counts():
        found.append(f"summary counts {warm.counts()} != {cold.counts()}")
    if normalise_whole(warm.stdout) != normalise_whole(cold.stdout):
        found.append("normalised stdout")
    if normalise_whole(warm.own_stderr()) != normalise_whole(cold.own_stderr()):
        found.append("stderr")
    return found


@dataclass
class Report:
    """The result of one fuzz run."""

    steps: int
    seed: int
    bytecode: bool
    mismatches: list[Mismatch] = field(default_factory=list)
    warm_seconds: list[float] = field(default_factory=list)
    cold_seconds: list[float] = field(default_factory=list)
    fallbacks: Counter[str] = field(default_factory=Counter)
    served: Counter[str] = field(default_factory=Counter)
    stalls: list[str] = field(default_factory=list)

    def summary(self) -> str:
        warm = statistics.median(self.warm_seconds) if self.warm_seconds else 0.0
        cold = statistics.median(self.cold_seconds) if self.cold_seconds else 0.0
        return (
            f"edit_fuzz: {self.steps} steps, seed {self.seed}, {len(self.mismatches)} mismatches,"
            f" warm median {warm:.2f}s, cold median {cold:.2f}s"
        )

    def details(self) -> str:
        """How the runs were served, and any fallbacks to plain pytest."""
        served = ", ".join(f"{k} {v}" for k, v in self.served.items()) or "unknown"
        lines = [f"edit_fuzz: bytecode {'on' if self.bytecode else 'off'}; daemon counts: {served}"]
        lines += [f"edit_fuzz: {n} x {reason}" for reason, n in self.fallbacks.most_common()]
        lines += [f"edit_fuzz: stall: {stall}" for stall in self.stalls]
        return "\n".join(lines)


# A file operation: write this content, or delete the file (None).
Op = tuple[str, "str | None"]


@dataclass
class Pending:
    """A warm run whose oracle run is still to come, with the edit that preceded it."""

    step: int
    edit: str
    ops: list[Op]
    args: list[str]
    warm: Run


class Fuzz:
    """A generated project, its daemon, its oracle's copy, and the edit/run/compare loop.

    snapd's project lives in ``WORKDIR/proj``. The oracle runs in ``WORKDIR/orcl``, a copy kept
    byte-identical by applying the same edits to it, just before each oracle run: so snapd's
    runs can follow each other (edit, run, edit, run) within one second, while a cold run
    takes about a second by itself. Run in the same folder, the oracle would space every
    edit out past the one-second resolution that stale bytecode hides in. Both folder names
    have the same length; the oracle's output gets its folder renamed to snapd's.
    """

    def __init__(self, workdir: Path, seed: int, bytecode: bool, verbose: bool = False) -> None:
        self.workdir = workdir
        self.root = workdir / "proj"
        self.oracle_root = workdir / "orcl"
        self.template = workdir / "pyc-template"
        self.seed = seed
        self.verbose = verbose
        self.rng = random.Random(seed)
        self.model = Model()
        self.generator = EditGenerator(self.rng, self.model)
        # Short and under /tmp: the socket path inside must stay below 108 bytes.
        self.runtime = tempfile.mkdtemp(prefix="sdf", dir="/tmp")
        self.env = {k: v for k, v in os.environ.items() if k not in _DROPPED_ENV}
        self.env["SNAPD_RUNTIME_DIR"] = self.runtime
        # A daemon that died must show up as a fallback line, not as a silent restart.
        self.env["SNAPD_AUTOSTART"] = "0"
        if not bytecode:
            self.env["PYTHONDONTWRITEBYTECODE"] = "1"
        self.history: list[str] = []

    # -- the project and the daemon --------------------------------------------------------

    def create(self) -> None:
        """Write the generated project twice: snapd's and the oracle's."""
        for root in (self.root, self.oracle_root):
            if root.exists():
                shutil.rmtree(root)
            _apply(
                root, [(relative, self.model.render(relative)) for relative in self.model.files()]
            )

    def apply(self, edit: Edit) -> list[Op]:
        """Apply ``edit`` to snapd's project; the operations, for the oracle's copy later."""
        ops: list[Op] = [(relative, self.model.render(relative)) for relative in edit.write]
        ops += [(relative, None) for relative in edit.delete]
        _apply(self.root, ops)
        return ops

    def snapd(self, *args: str, timeout: float = RUN_TIMEOUT) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [SNAPD, *args],
            cwd=self.root,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )

    def start(self) -> None:
        result = self.snapd("start", "--wait")
        if result.returncode != 0:
            raise RuntimeError(f"snapd start failed: {result.stdout}{result.stderr}")

    def manager_pid(self) -> int | None:
        for pidfile in Path(self.runtime).glob("*/pid"):
            with contextlib.suppress(OSError, ValueError):
                return int(pidfile.read_text())
        return None

    def processes(self) -> list[psutil.Process]:
        """The manager and every process below it."""
        pid = self.manager_pid()
        if pid is None:
            return []
        try:
            manager = psutil.Process(pid)
            return [manager, *manager.children(recursive=True)]
        except psutil.NoSuchProcess:
            return []

    def restart(self) -> dict[str, int]:
        """Stop the daemon and start a fresh one (same runtime dir: the log goes on); the
        stopped daemon's request counts."""
        counts = self.status_json().get("counts", {})
        survivors = self.processes()
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.snapd("stop", timeout=60)
        for process in survivors:
            with contextlib.suppress(psutil.NoSuchProcess):
                process.send_signal(signal.SIGKILL)
        self.start()
        return {k: int(v) for k, v in counts.items()}

    def session_state(self, status: dict[str, Any]) -> tuple[str, str] | None:
        """(state, reason) of the session snapshot of our runs' chain, if it has one."""
        for chain in status.get("chains", []):
            if "no:randomly" not in chain.get("args", []):
                continue
            for snapshot in chain.get("snapshots", []):
                if snapshot.get("layer") == "session":
                    return str(snapshot.get("state")), str(snapshot.get("reason", ""))
        return None

    def stop(self, keep_log: bool) -> None:
        """Stop the daemon, kill whatever it left behind, remove the runtime dir (keeping
        the daemon's log in the workdir if asked)."""
        survivors = self.processes()
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.snapd("stop", timeout=60)
        for process in survivors:
            with contextlib.suppress(psutil.NoSuchProcess):
                process.send_signal(signal.SIGKILL)
        if keep_log:
            (self.workdir / "daemon.log").write_text(self.log_tail(lines=None))
        shutil.rmtree(self.runtime, ignore_errors=True)

    def status(self) -> str:
        try:
            return self.snapd("status", timeout=30).stdout
        except subprocess.TimeoutExpired:
            return "(snapd status timed out)"

    def status_json(self) -> dict[str, Any]:
        try:
            got = json.loads(self.snapd("status", "--json", timeout=30).stdout)
        except (subprocess.TimeoutExpired, ValueError):
            return {}
        return got if isinstance(got, dict) else {}

    def log_tail(self, lines: int | None = 60) -> str:
        text = "".join(p.read_text(errors="replace") for p in Path(self.runtime).glob("*/log"))
        return "\n".join(text.splitlines()[-lines:] if lines else text.splitlines())

    # -- runs --------------------------------------------------------------------------------

    def warm(self, args: list[str]) -> Run:
        began = time.perf_counter()
        result = subprocess.run(
            [SNAPD, "pytest", *BASE_ARGS, *args],
            cwd=self.root,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=RUN_TIMEOUT,
            check=False,
        )
        seconds = time.perf_counter() - began
        return Run(result.returncode, result.stdout, result.stderr, seconds)

    def seed_bytecode(self) -> None:
        """Compile the interpreter's side once, into a cache the oracle's runs start from.

        A fresh, empty cache per oracle run would also compile the standard library and
        pytest every time (4 s a run here, against 1 s). Those never change during a fuzz
        run, so each oracle run starts from a hard-linked copy of this template, which holds
        no bytecode of the project: every project file is still compiled from what is on
        disk. (Python replaces a .pyc by renaming a new file over it, never in place, so
        the template's files are never written through a link.)
        """
        env = {**self.env, "PYTHONPYCACHEPREFIX": str(self.template)}
        env.pop("PYTHONDONTWRITEBYTECODE", None)  # this run exists to write the bytecode
        subprocess.run(
            [PYTEST, *BASE_ARGS], cwd=self.oracle_root, env=env, capture_output=True, check=False
        )
        for root in (self.root, self.oracle_root):
            for path in {root, root.resolve()}:
                shutil.rmtree(self.template / path.relative_to("/"), ignore_errors=True)

    def cold(self, args: list[str]) -> Run:
        # A bytecode cache of its own per run, with nothing of the project in it: the oracle
        # compiles the project's files from what is on disk now, whatever their .pyc says.
        prefix = Path(tempfile.mkdtemp(prefix="pyc", dir=self.workdir)) / "cache"
        shutil.copytree(self.template, prefix, copy_function=os.link)
        try:
            began = time.perf_counter()
            result = subprocess.run(
                [PYTEST, *BASE_ARGS, *args],
                cwd=self.oracle_root,
                env={**self.env, "PYTHONPYCACHEPREFIX": str(prefix)},
                capture_output=True,
                text=True,
                timeout=RUN_TIMEOUT,
                check=False,
            )
            seconds = time.perf_counter() - began
        finally:
            shutil.rmtree(prefix.parent, ignore_errors=True)
        # The same length, so renaming keeps every column where it was.
        ours, theirs = str(self.oracle_root), str(self.root)
        return Run(
            result.returncode,
            result.stdout.replace(ours, theirs),
            result.stderr.replace(ours, theirs),
            seconds,
        )

    def compare(self, report: Report, pending: Pending) -> None:
        """Bring the oracle's copy to the tree ``pending.warm`` ran on, run pytest there,
        and record any difference."""
        _apply(self.oracle_root, pending.ops)
        cold = self.cold(pending.args)
        warm = pending.warm
        report.warm_seconds.append(warm.seconds)
        report.cold_seconds.append(cold.seconds)
        for line in warm.snapd_lines():
            report.fallbacks[line] += 1
        run = " ".join(pending.args) or "(no args)"
        self.history.append(f"step {pending.step}: {pending.edit}; run {run}")
        found = differences(warm, cold)
        if self.verbose:
            print(
                f"step {pending.step}: {pending.edit}; run {run}: snapd {warm.code} in"
                f" {warm.seconds:.2f}s, pytest {cold.code} in {cold.seconds:.2f}s"
                + "".join(f"; {d}" for d in found)
                + "".join(f" [{line}]" for line in warm.snapd_lines()),
                flush=True,
            )
        if found:
            report.mismatches.append(
                Mismatch(
                    self.seed,
                    pending.step,
                    pending.edit,
                    pending.args,
                    warm,
                    cold,
                    found,
                    self.history[-10:],
                    self.status(),
                    self.log_tail(),
                )
            )


def _apply(root: Path, ops: list[Op]) -> None:
    for relative, content in ops:
        path = root / relative
        if content is None:
            path.unlink()
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(content)


def _chains(status: dict[str, Any]) -> str:
    """Each chain's snapshot states, for progress lines: a session stuck failed shows here."""
    chains = status.get("chains", [])
    return "; ".join(
        " ".join(f"{s['layer']} {s['state']}" for s in chain.get("snapshots", []))
        for chain in chains
    )


def run_fuzz(
    steps: int,
    seed: int,
    workdir: Path | None = None,
    bytecode: bool = True,
    progress: Callable[[str], None] | None = None,
    max_mismatches: int = 20,
    verbose: bool = False,
    restart_stalled: bool = True,
) -> Report:
    """Generate the project, start its daemon, run ``steps`` edits; always stop the daemon.

    Edits come in bursts of one to four, each followed at once by a ``snapd pytest`` run;
    then each of those runs is compared with the oracle's run on the same tree.

    After each burst it asks the daemon for our chain's session snapshot: one that stays
    neither ready nor building while the tree has no syntax error is a stall (snapd serves
    every later run from the base, never rebuilding it). Stalls are reported; with
    ``restart_stalled`` the daemon is then restarted, so that the session's own paths
    (re-imported test modules, reused conftests and fixtures) keep being tested.

    The project is kept when ``workdir`` is given or a mismatch was found (to investigate),
    and removed otherwise. Stops early after ``max_mismatches``: by then one stale snapshot
    is likely repeating itself.
    """
    own_workdir = workdir is None
    work = Path(tempfile.mkdtemp(prefix="edit_fuzz")) if workdir is None else workdir
    work.mkdir(parents=True, exist_ok=True)
    fuzz = Fuzz(work, seed, bytecode, verbose)
    report = Report(steps, seed, bytecode)
    say = progress or (lambda _: None)
    try:
        fuzz.create()
        fuzz.seed_bytecode()
        fuzz.start()
        # Step 0, before any edit: its `-p no:randomly` makes a chain of its own (it is not
        # an argument known to be per-request), built here rather than in step 1's timing.
        fuzz.compare(report, Pending(0, "(none: the generated project)", [], [], fuzz.warm([])))
        step = 0
        stalled = 0  # bursts in a row with our session neither ready nor building
        while step < steps and len(report.mismatches) < max_mismatches:
            burst: list[Pending] = []
            for _ in range(min(fuzz.rng.choice((1, 2, 2, 3, 4)), steps - step)):
                step += 1
                edit = fuzz.generator.next()
                ops = fuzz.apply(edit)
                args = choose_args(fuzz.rng, fuzz.model, edit)
                burst.append(Pending(step, edit.description, ops, args, fuzz.warm(args)))
            for pending in burst:
                fuzz.compare(report, pending)
                if pending.step % 50 == 0:
                    status = fuzz.status_json()
                    say(
                        f"edit_fuzz: step {pending.step}/{steps},"
                        f" {len(report.mismatches)} mismatches; counts {status.get('counts')};"
                        f" {_chains(status)}"
                    )
            if fuzz.model.broken:
                stalled = 0  # a session cannot be built now: not a stall
                continue
            status = fuzz.status_json()
            session = fuzz.session_state(status)
            stalled = 0 if session is None or session[0] in ("ready", "building") else stalled + 1
            if stalled == STALL_BURSTS and session is not None:
                stall = f"after step {step}: session {session[0]} ({session[1] or 'no reason'})"
                report.stalls.append(stall)
                say(f"edit_fuzz: stall {stall}")
                if restart_stalled:
                    report.served.update(fuzz.restart())
                    say(f"edit_fuzz: restarted the daemon after step {step}")
                    stalled = 0
        if len(report.mismatches) >= max_mismatches:
            say(f"edit_fuzz: stopped at step {step}: {max_mismatches} mismatches")
            report.steps = step
        counts = fuzz.status_json().get("counts", {})
        report.served.update({k: int(v) for k, v in counts.items()})
    finally:
        keep = not own_workdir or bool(report.mismatches)
        fuzz.stop(keep_log=keep)
        if keep:
            say(f"edit_fuzz: project and daemon.log kept in {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--workdir", type=Path, help="where to generate the project (kept)")
    parser.add_argument(
        "--bytecode",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="let the runs write bytecode, as on users' machines (default); "
        "--no-bytecode sets PYTHONDONTWRITEBYTECODE",
    )
    parser.add_argument("--max-mismatches", type=int, default=20)
    parser.add_argument("-v", "--verbose", action="store_true", help="print every step")
    parser.add_argument(
        "--restart-stalled",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="restart the daemon when its session snapshot is never rebuilt (reported either way)",
    )
    options = parser.parse_args(argv)
    report = run_fuzz(
        options.steps,
        options.seed,
        options.workdir,
        options.bytecode,
        progress=lambda line: print(line, flush=True),
        max_mismatches=options.max_mismatches,
        verbose=options.verbose,
        restart_stalled=options.restart_stalled,
    )
    for mismatch in report.mismatches:
        print(mismatch, flush=True)
    print(report.details())
    print(report.summary(), flush=True)
    return 1 if report.mismatches else 0


if __name__ == "__main__":
    raise SystemExit(main())
