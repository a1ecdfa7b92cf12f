"""pytest-randomly: the order and the random state of a run come from its seed, which it prints;
the same ``--randomly-seed`` gives what plain pytest gives."""

from __future__ import annotations

import re

import pytest

pytest.importorskip("pytest_randomly")

from conftest import Project, canonical, module_project, outcomes, pyproject, same, warm_of

pytestmark = pytest.mark.timeout(300)
project = module_project()

TESTS = """\
import random

import pytest


@pytest.mark.parametrize("n", range(6))
def test_draw(n):
    with open("draws.log", "a") as log:
        log.write(f"{{__name__}} {{n}} {{random.random()!r}}\\n")
    assert n != {fails}
"""

SEED = re.compile(r"Using --randomly-seed=(\d+)")


def write(project: Project) -> None:
    project.write("pyproject.toml", pyproject(randomly=True))
    project.write("tests/test_one.py", TESTS.format(fails=3))
    project.write("tests/test_two.py", TESTS.format(fails=-1))


def draws(project: Project, run: object, *args: str) -> tuple[list[str], str]:
    log = project.root / "draws.log"
    log.unlink(missing_ok=True)
    result = run("-v", *args)  # type: ignore[operator]
    assert result.returncode == 1, result.stdout + result.stderr
    return log.read_text().splitlines(), result.stdout


def test_a_seed_gives_the_same_order_draws_and_output_as_pytest(project: Project) -> None:
    write(project)
    project.start()
    for seed in ("1", "31337"):
        cold_draws, cold = draws(project, project.cold, f"--randomly-seed={seed}")
        warm_draws, warm = draws(project, warm_of(project), f"--randomly-seed={seed}")
        assert f"Using --randomly-seed={seed}" in warm
        assert list(outcomes(warm)) == list(outcomes(cold))  # the order too
        assert canonical(warm) == canonical(cold)
        assert warm_draws == cold_draws


def test_the_printed_seed_is_honoured(project: Project) -> None:
    write(project)
    project.start()
    seen = []
    for _ in range(2):
        warm_draws, output = draws(project, warm_of(project))
        found = SEED.search(output)
        assert found, output
        seen.append(found[1])
        cold_draws, cold_output = draws(project, project.cold, f"--randomly-seed={found[1]}")
        assert warm_draws == cold_draws
        assert list(outcomes(output)) == list(outcomes(cold_output))
    # A seed of its own for every run, as cold runs get.
    assert len(set(seen)) == 2


def test_turned_off(project: Project) -> None:
    write(project)
    project.start()
    pair = same(project, "-v", "-p", "no:randomly")
    assert "Using --randomly-seed" not in pair.warm.stdout
