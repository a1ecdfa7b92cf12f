"""What a cold run would have loaded: Hypothesis, which draws partly from the literals of the
local modules loaded, draws with ``--hypothesis-seed`` exactly the examples a cold run draws,
though the snapshot holds the whole suite's modules and snapd's own."""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

import pytest
from conftest import Project, normalise

from snapd.snapshot import imports

pytestmark = pytest.mark.timeout(180)

TESTS = """\
from hypothesis import given, settings, strategies as st


@settings(database=None, max_examples=40)
@given(st.integers(), st.text())
def test_examples(n, s):
    with open("examples.log", "a") as log:
        log.write(f"{n!r} {s!r}\\n")
"""


def write(project: Project) -> None:
    project.write(
        "pyproject.toml", '[tool.pytest.ini_options]\ntestpaths = ["tests"]\npythonpath = ["."]\n'
    )
    project.write("tests/test_props.py", TESTS)
    # Project code that only another test module imports: a cold run of test_props never
    # loads it, and its literals are the kind Hypothesis likes to draw.
    project.write("app/__init__.py", "")
    project.write("app/words.py", 'WORDS = ["zebra", "quokka", "-p", "--", 4242, -77]\n')
    project.write(
        "tests/test_words.py",
        "from app.words import WORDS\n\ndef test_words():\n    assert WORDS\n",
    )


def examples(project: Project, run: object, *args: str) -> list[str]:
    log = project.root / "examples.log"
    log.unlink(missing_ok=True)
    result = run(*args, "-q", "-p", "no:cacheprovider", "tests/test_props.py")  # type: ignore[operator]
    assert result.returncode == 0, result.stdout + result.stderr
    return log.read_text().splitlines()


def test_a_seed_draws_what_a_cold_run_draws(project: Project) -> None:
    write(project)
    project.start()
    for seed in ("1", "12345"):
        cold = examples(project, project.cold, f"--hypothesis-seed={seed}")
        assert examples(project, project.run, f"--hypothesis-seed={seed}") == cold
    # The module only the other test file imports is drawn from when that file runs too.
    both = ("--hypothesis-seed=12345", "tests/test_words.py")
    assert examples(project, project.run, *both) == examples(project, project.cold, *both)


def test_reachable_follows_module_level_imports_and_parents() -> None:
    saved = dict(imports.graph)
    imports.graph.clear()
    try:
        imports.graph.update({"a.b": {"c", "d.e"}, "c": {"f"}, "g": {"h"}})
        assert imports.reachable(["a.b"]) == {"a", "a.b", "c", "d", "d.e", "f"}
        assert imports.reachable([]) == set()
    finally:
        imports.graph.clear()
        imports.graph.update(saved)


def test_source_imports_are_the_module_level_ones(tmp_path: Path) -> None:
    """A module a run imported itself: its imports are read from its source, those of its
    functions left out (they run later, if at all), relative ones resolved."""
    package = tmp_path / "pkg_for_source_imports"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "sibling.py").write_text("name = 1\n")
    module = package / "mod.py"
    module.write_text(
        "import os, json\nfrom . import sibling\nfrom .sibling import name\n"
        "try:\n    import tomllib\nexcept ImportError:\n    tomllib = None\n\n"
        "class Thing:\n    import textwrap\n\n"
        "def later():\n    import csv\n"
    )
    sys.path.insert(0, str(tmp_path))
    try:
        loaded = importlib.import_module("pkg_for_source_imports.mod")
        assert imports.source_imports(loaded) == {
            "os", "json", "pkg_for_source_imports", "pkg_for_source_imports.sibling",
            "tomllib", "textwrap",
        }  # fmt: skip
    finally:
        sys.path.remove(str(tmp_path))
        for name in [n for n in sys.modules if n.startswith("pkg_for_source_imports")]:
            del sys.modules[name]


def test_a_failing_import_shows_no_frame_of_snapd(project: Project) -> None:
    """Runs import through Python's own machinery: a test module that fails to import shows
    the traceback a cold run shows."""
    write(project)
    project.write("tests/test_broken.py", "import app.missing\n")
    project.start()
    cold = project.cold("-p", "no:cacheprovider", "tests/test_broken.py")
    warm = project.run("-p", "no:cacheprovider", "tests/test_broken.py")
    assert warm.returncode == cold.returncode == 2
    assert "snapd/snapshot" not in warm.stdout
    assert normalise(warm.stdout) == normalise(cold.stdout)
