"""hypothesis: property tests, their falsifying examples, and ``--hypothesis-seed``."""

from __future__ import annotations

from pathlib import Path

import pytest

pytest.importorskip("hypothesis")

from conftest import Project, module_project, outcomes, pyproject, same, warm_of

pytestmark = pytest.mark.timeout(300)
project = module_project()

TESTS = """\
from hypothesis import given, settings, strategies as st


@given(st.lists(st.integers()))
def test_sorting_is_idempotent(xs):
    assert sorted(sorted(xs)) == sorted(xs)


@settings(database=None)
@given(st.integers())
def test_finds_a_counterexample(x):
    assert x < 1000


# derandomize=False: where a CI variable is set (CI, GITHUB_ACTIONS, …) Hypothesis loads its
# "ci" profile, whose derandomize=True draws from the test's own digest and ignores
# --hypothesis-seed: every run, cold or warm, seeded or not, would draw the same examples.
@settings(database=None, max_examples=30, derandomize=False)
@given(st.integers(), st.text())
def test_examples(n, s):
    with open("examples.log", "a") as log:
        log.write(f"{n!r} {s!r}\\n")


@settings(database=None, max_examples=30, derandomize=True)
@given(st.integers(), st.text())
def test_derandomized(n, s):
    with open("examples.log", "a") as log:
        log.write(f"{n!r} {s!r}\\n")
"""

FILE = "tests/test_props.py"
EXAMPLES = f"{FILE}::test_examples"
DERANDOMIZED = f"{FILE}::test_derandomized"


def write(project: Project) -> None:
    project.write("pyproject.toml", pyproject())
    project.write(FILE, TESTS)
    # Project code that only another test module imports. Hypothesis draws text and numbers
    # partly from the literals of the project's modules loaded at the time (not test files).
    project.write("app/__init__.py", "")
    project.write("app/words.py", 'WORDS = ["zebra", "quokka", "-p", "--", "0xdeadbeef"]\n')
    project.write(
        "tests/test_words.py",
        "from app.words import WORDS\n\ndef test_words():\n    assert WORDS\n",
    )


def examples(project: Project, run: object, *args: str, test: str = EXAMPLES) -> list[str]:
    """The examples one run of ``test`` (``test_examples`` unless told) drew."""
    log = project.root / "examples.log"
    log.unlink(missing_ok=True)
    result = run(*args, "-q", test)  # type: ignore[operator]
    assert result.returncode == 0, result.stdout + result.stderr
    return log.read_text().splitlines()


def test_same_outcomes_and_output_as_pytest(project: Project) -> None:
    write(project)
    project.start()
    pair = same(project, "-v", "--hypothesis-seed=7", f"{FILE}::test_sorting_is_idempotent",
                f"{FILE}::test_finds_a_counterexample")  # fmt: skip
    assert outcomes(pair.cold.stdout) == {
        f"{FILE}::test_sorting_is_idempotent": "PASSED",
        f"{FILE}::test_finds_a_counterexample": "FAILED",
    }
    assert "x=1000," in pair.warm.stdout  # the shrunk counterexample


def test_the_seed_is_honoured(project: Project) -> None:
    """The same ``--hypothesis-seed`` draws the same examples as plain pytest.

    Hypothesis mixes into its draws the literals of the *local* modules in ``sys.modules``
    (``hypothesis.internal.conjecture.providers._get_local_constants``: not site-packages,
    not test files). A request child holds modules a cold run of the same test does not:
    the project modules other test files import (all collected in the session snapshot),
    and snapd's own modules when snapd is not installed in site-packages (an editable
    install, as in this repository's CI).
    """
    write(project)
    project.start()
    cold = examples(project, project.cold, "--hypothesis-seed=12345")
    assert len(cold) >= 10
    for _ in range(2):
        assert examples(project, warm_of(project), "--hypothesis-seed=12345") == cold
    assert examples(project, warm_of(project), "--hypothesis-seed=54321") != cold


def test_unseeded_runs_draw_afresh(project: Project, tmp_path: Path) -> None:
    """Without a seed every run draws new examples, as cold runs do: the snapshot must not
    hand every child the same random state."""
    write(project)
    project.start()
    runs = [examples(project, warm_of(project)) for _ in range(3)]
    assert runs[0] != runs[1] != runs[2] != runs[0]


def test_derandomized_runs_draw_what_pytest_draws(project: Project) -> None:
    """With ``derandomize=True`` (Hypothesis's "ci" profile, loaded where a CI variable is
    set) a run draws from the test's digest and the local constants, whatever the seed: the
    same examples as plain pytest, run after run."""
    write(project)
    project.start()
    cold = examples(project, project.cold, test=DERANDOMIZED)
    assert len(cold) >= 10
    assert examples(project, project.cold, "--hypothesis-seed=54321", test=DERANDOMIZED) == cold
    for args in ((), ("--hypothesis-seed=54321",)):
        assert examples(project, warm_of(project), *args, test=DERANDOMIZED) == cold
