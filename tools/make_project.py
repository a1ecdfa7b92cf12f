"""Generate a synthetic "big monolith" pytest project whose cold start is slow.

The project has a package ``heavy`` of N modules that each burn CPU at import time, a
``tests/conftest.py`` that imports all of them and offers a slow session-scoped fixture,
and N + 2 passing tests. It runs with plain ``pytest`` from its root, with no install.

Usage: python tools/make_project.py DEST [--modules N] [--import-ms MS]
                                        [--fixture-seconds S] [--slow-module NAME:MS]

Stdlib only, so it runs under any interpreter that will run the project.
"""

from __future__ import annotations

import argparse
import sys
import textwrap
from pathlib import Path

# 250 modules of 20 ms keep a cold trivial run at or above 5 s on the reference 2-core machine,
# which the benchmark's acceptance needs (200 modules gave less than that there).
DEFAULT_MODULES = 250
DEFAULT_IMPORT_MS = 20.0
DEFAULT_FIXTURE_SECONDS = 2.0

PYPROJECT = """\
[tool.pytest.ini_options]
testpaths = ["tests"]
# Makes the `heavy` package importable from the project root without installing it.
pythonpath = ["."]
"""

MODULE = '''\
"""Synthetic heavy module {index}: burns about {ms:g} ms of CPU when first imported."""

from __future__ import annotations

import hashlib
import time
{imports}
IMPORT_WORK_SECONDS = {seconds!r}


def _burn(seconds: float) -> bytes:
    """Hash in a loop until `seconds` have passed: real CPU work, not a sleep."""
    digest = b"{name}"
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        for _ in range(64):
            digest = hashlib.sha256(digest).digest()
    return digest


FINGERPRINT = _burn(IMPORT_WORK_SECONDS)


class Record{index}:
    """A small value object, so the module looks like code."""

    def __init__(self, key: str, amount: int) -> None:
        self.key = key
        self.amount = amount

    def scaled(self, factor: int) -> int:
        return self.amount * factor


class Registry{index}:
    """Keeps records by key."""

    def __init__(self) -> None:
        self._records: dict[str, Record{index}] = {{}}

    def add(self, record: Record{index}) -> None:
        self._records[record.key] = record

    def total(self) -> int:
        return sum(record.amount for record in self._records.values())


def value() -> int:
    """The constant the module's test checks."""
    return {constant}


def combined() -> int:
    """Mixes in the modules this one depends on, so the import graph is used."""
    return value() + {dep_values}
'''

CONFTEST = '''\
"""Imports all of `heavy`, as a monolith's conftest does, and builds a slow resource."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator

import pytest

{imports}

FIXTURE_SECONDS = {fixture_seconds!r}
HEAVY_MODULES = (
{names}
)


@pytest.fixture(scope="session")
def slow_resource() -> Iterator[dict[str, object]]:
    """A session resource that takes FIXTURE_SECONDS to build.

    When SNAPD_DEMO_COUNTER names a file, each setup appends a line to it, so a test can
    count how many times the fixture really ran.
    """
    counter = os.environ.get("SNAPD_DEMO_COUNTER")
    if counter:
        with open(counter, "a", encoding="utf-8") as file:
            file.write(f"setup pid={{os.getpid()}}\\n")
    time.sleep(FIXTURE_SECONDS)
    yield {{"ready": True, "modules": len(HEAVY_MODULES)}}
'''

TEST_TRIVIAL = '''\
"""A test that needs nothing: its run time is pure startup cost."""


def test_trivial() -> None:
    assert 1 + 1 == 2
'''

TEST_FIXTURE = '''\
"""A test that needs the slow session resource."""


def test_uses_fixture(slow_resource: dict[str, object]) -> None:
    assert slow_resource["ready"] is True
'''

TEST_MODULE = '''\
"""Checks that heavy.{name} imports and answers its constant."""

from heavy import {name}


def test_{name}_value() -> None:
    assert {name}.value() == {constant}
'''


def module_name(index: int) -> str:
    """The name of heavy module number `index`."""
    return f"mod_{index:03d}"


def constant_of(index: int) -> int:
    """A distinct, deterministic constant per module, so tests can't pass by accident."""
    return (index * 7919 + 104729) % 1_000_003


def dependencies_of(index: int) -> list[int]:
    """Earlier modules that module `index` imports: its predecessor and its "parent" in a heap."""
    return sorted({index - 1, index // 2} - {index}) if index else []


def render_module(index: int, import_ms: float) -> str:
    """Source of heavy module `index`, burning `import_ms` at import."""
    deps = [module_name(dep) for dep in dependencies_of(index)]
    imports = f"\nfrom heavy import {', '.join(deps)}\n" if deps else ""
    dep_values = " + ".join(f"{dep}.value()" for dep in deps) or "0"
    return MODULE.format(
        index=index,
        name=module_name(index),
        ms=import_ms,
        seconds=import_ms / 1000.0,
        imports=imports,
        constant=constant_of(index),
        dep_values=dep_values,
    )


def render_conftest(modules: int, fixture_seconds: float) -> str:
    """Source of tests/conftest.py importing every heavy module explicitly."""
    names = [module_name(index) for index in range(modules)]
    imports = "from heavy import (\n" + "".join(f"    {name},\n" for name in names) + ")"
    listed = textwrap.fill(
        ", ".join(names) + ",", width=88, initial_indent="    ", subsequent_indent="    "
    )
    return CONFTEST.format(imports=imports, names=listed, fixture_seconds=fixture_seconds)


def render_test_module(index: int) -> str:
    """Source of the test file that checks heavy module `index`."""
    return TEST_MODULE.format(name=module_name(index), constant=constant_of(index))


def project_files(
    modules: int, import_ms: float, fixture_seconds: float, slow_module: tuple[str, float] | None
) -> dict[str, str]:
    """Every file of the project, as relative path -> text."""
    slow_ms = dict([slow_module]) if slow_module else {}
    files = {
        "pyproject.toml": PYPROJECT,
        "heavy/__init__.py": f'"""A synthetic package of {modules} slow-to-import modules."""\n',
        "tests/conftest.py": render_conftest(modules, fixture_seconds),
        "tests/test_trivial.py": TEST_TRIVIAL,
        "tests/test_fixture.py": TEST_FIXTURE,
    }
    for index in range(modules):
        name = module_name(index)
        files[f"heavy/{name}.py"] = render_module(index, slow_ms.get(name, import_ms))
        files[f"tests/test_{name}.py"] = render_test_module(index)
    return files


def make_project(
    dest: Path,
    modules: int = DEFAULT_MODULES,
    import_ms: float = DEFAULT_IMPORT_MS,
    fixture_seconds: float = DEFAULT_FIXTURE_SECONDS,
    slow_module: tuple[str, float] | None = None,
) -> Path:
    """Write the synthetic project into `dest` (absent or empty) and return its path.

    `slow_module` = ("mod_007", 300.0) makes that one module burn 300 ms instead of
    `import_ms`, so a profiler has something to find.
    """
    if modules < 1:
        raise ValueError("modules must be at least 1")
    if slow_module and slow_module[0] not in {module_name(i) for i in range(modules)}:
        raise ValueError(f"slow module {slow_module[0]!r} is not one of the {modules} modules")
    # Refuse to mix with an earlier generation: leftover modules or tests would skew counts.
    if dest.exists() and any(dest.iterdir()):
        raise FileExistsError(f"{dest} is not empty")
    for relative, text in project_files(modules, import_ms, fixture_seconds, slow_module).items():
        path = dest / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    return dest


def parse_slow_module(text: str) -> tuple[str, float]:
    """Parse NAME:MS as given to --slow-module."""
    name, _, ms = text.partition(":")
    try:
        milliseconds = float(ms)
    except ValueError:
        milliseconds = -1.0
    if not name or milliseconds < 0:
        raise argparse.ArgumentTypeError(f"expected NAME:MS, e.g. mod_007:300, not {text!r}")
    return name, milliseconds


def parse_args(argv: list[str]) -> argparse.Namespace:
    """Command-line options."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("dest", type=Path, help="directory to create (absent or empty)")
    parser.add_argument("--modules", type=int, default=DEFAULT_MODULES)
    parser.add_argument("--import-ms", type=float, default=DEFAULT_IMPORT_MS)
    parser.add_argument("--fixture-seconds", type=float, default=DEFAULT_FIXTURE_SECONDS)
    parser.add_argument("--slow-module", type=parse_slow_module, metavar="NAME:MS")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Entry point of the command line."""
    args = parse_args(sys.argv[1:] if argv is None else argv)
    try:
        dest = make_project(
            args.dest, args.modules, args.import_ms, args.fixture_seconds, args.slow_module
        )
    except (ValueError, FileExistsError) as error:
        print(f"make_project: {error}", file=sys.stderr)
        return 2
    print(dest)
    return 0


if __name__ == "__main__":
    sys.exit(main())
