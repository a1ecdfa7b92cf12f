"""What a cold run would have loaded: Hypothesis, which draws partly from the literals of the
local modules loaded, draws with ``--hypothesis-seed`` exactly the examples a cold run draws,
though the snapshot holds the whole suite's modules and snapd's own."""

from __future__ import annotations

import pytest
from conftest import Project

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
