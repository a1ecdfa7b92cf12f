#!/usr/bin/env python3
"""Parity on real projects: fetch sdists that ship their tests, and run tools/parity.py on each.

    python tools/fetch_projects.py CACHE_DIR [--only NAME ...] [--python python3]

For each project below it downloads the sdist (``pip download --no-deps --no-binary :all:``),
unpacks it, makes a venv of its own with snapd (this checkout, editable), the project and its
test requirements, and runs ``tools/parity.py`` there: every test file through plain pytest and
through snapd. The tests of these projects run offline. CACHE_DIR keeps sdists, sources, venvs
and the JSON reports, so a second run downloads and installs nothing.

It prints each project's table, then one line per project: tests, identical or not, and the
cold and warm time of one test. Exits 1 when any project is not identical.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tarfile
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
PARITY = REPO / "tools" / "parity.py"
PYTEST = "pytest==9.2.0"
DJANGO = ("Django==5.2.19", "pytest-django==4.14.0")


@dataclass(frozen=True)
class Project:
    name: str
    version: str
    requirements: tuple[str, ...] = ()
    args: tuple[str, ...] = ()
    # Extra environment; "{src}" stands for the unpacked sdist's folder.
    env: tuple[tuple[str, str], ...] = ()

    @property
    def key(self) -> str:
        return f"{self.name}-{self.version}"


PROJECTS = (
    Project("attrs", "26.1.0", ("hypothesis==6.170.15", "pympler==1.1", "cloudpickle==3.1.2"),
            ("tests",)),
    Project("more-itertools", "11.2.1", (), ("tests",)),
    Project("pluggy", "1.7.0", (), ("testing",)),
    Project("toolz", "1.2.0"),
    # Django apps whose tests use pytest-django: tree models on an SQLite test database, and
    # form rendering through templates. Their CI puts the sdist's root on the path.
    Project("django-treebeard", "7.0.3", DJANGO,
            ("--ds=tests.settings", "-o", "django_find_project=false", "tests"),
            (("PYTHONPATH", "{src}"),)),
    Project("django-crispy-forms", "2.7",
            (*DJANGO, "crispy-bootstrap3==2024.1", "crispy-bootstrap4==2026.2"), ("tests",),
            (("PYTHONPATH", "{src}"),)),
)  # fmt: skip


def run(argv: list[str], **kwargs: Any) -> None:
    print("$", " ".join(argv), flush=True)
    subprocess.run(argv, check=True, **kwargs)


def fetch(project: Project, cache: Path, python: str) -> Path:
    """The unpacked sdist's folder."""
    sdists = cache / "sdists"
    sdists.mkdir(parents=True, exist_ok=True)
    found = _sdist(sdists, project)
    if found is None:
        spec = f"{project.name}=={project.version}"
        base = [python, "-m", "pip", "download", "-q", "--no-deps", "-d", str(sdists)]
        try:
            run([*base, "--no-binary", ":all:", spec])
        except subprocess.CalledProcessError:
            # Some build backends do not build from source themselves: only the project's
            # own sdist is what matters here.
            run([*base, "--no-binary", project.name, spec])
        found = _sdist(sdists, project)
        if found is None:
            raise SystemExit(f"fetch_projects: no sdist of {spec} in {sdists}")
    sources = cache / "src"
    sources.mkdir(exist_ok=True)
    target = sources / project.key
    if not target.exists():
        unpacked = _unpack(found, sources)
        unpacked.rename(target)
    return target


def _sdist(folder: Path, project: Project) -> Path | None:
    names = {project.name.lower().replace("-", "_"), project.name.lower()}
    for path in sorted(folder.iterdir()):
        stem = path.name.lower()
        for name in names:
            if stem.startswith(f"{name}-{project.version}.") and stem.endswith((".tar.gz", ".zip")):
                return path
    return None


def _unpack(archive: Path, into: Path) -> Path:
    if archive.name.endswith(".zip"):
        with zipfile.ZipFile(archive) as z:
            top = z.namelist()[0].split("/")[0]
            z.extractall(into)
    else:
        with tarfile.open(archive) as t:
            top = t.getnames()[0].split("/")[0]
            if hasattr(tarfile, "data_filter"):
                t.extractall(into, filter="data")
            else:  # pragma: no cover (Python < 3.11.4)
                t.extractall(into)
    return into / top


def install(project: Project, source: Path, cache: Path, python: str) -> Path:
    """The project's venv, with snapd, pytest, the project and its test requirements."""
    venv = cache / "venvs" / project.key
    done = venv / ".installed"
    if done.exists():
        return venv / "bin" / "python"
    run([python, "-m", "venv", "--clear", str(venv)])
    pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "-q"]
    run([*pip, "--upgrade", "pip"])
    run([*pip, "-e", str(REPO), PYTEST, str(source), *project.requirements])
    done.write_text("ok\n")
    return venv / "bin" / "python"


def parity(project: Project, source: Path, venv_python: Path, cache: Path) -> dict[str, Any]:
    reports = cache / "reports"
    reports.mkdir(exist_ok=True)
    report = reports / f"{project.key}.json"
    report.unlink(missing_ok=True)
    argv = [sys.executable, str(PARITY), str(source), "--python", str(venv_python)]
    env = {**os.environ, **{k: v.format(src=source) for k, v in project.env}}
    shown = " ".join(f"{k}={v.format(src=source)}" for k, v in project.env)
    print("$", shown, " ".join([*argv, "--json", str(report), "--", *project.args]), flush=True)
    subprocess.run([*argv, "--json", str(report), "--", *project.args], env=env)
    if not report.exists():
        return {"project": str(source), "tests": 0, "identical": False, "files": [],
                "one_test": "", "cold_seconds": None, "warm_seconds": None,
                "notices": ["parity.py did not finish"]}  # fmt: skip
    loaded: dict[str, Any] = json.loads(report.read_text())
    return loaded


def summary(results: list[tuple[Project, dict[str, Any]]]) -> str:
    rows = [("project", "tests", "files", "identical", "one test cold", "warm", "speed-up")]
    for project, report in results:
        files = report["files"]
        same = sum(1 for f in files if f["identical"])
        cold, warm = report.get("cold_seconds"), report.get("warm_seconds")
        rows.append((
            project.key,
            str(report["tests"]),
            f"{same}/{len(files)}",
            "yes" if report["identical"] else "NO",
            f"{cold:.2f}s" if cold else "-",
            f"{warm:.2f}s" if warm else "-",
            f"{cold / warm:.1f}x" if cold and warm else "-",
        ))  # fmt: skip
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = [
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True))
        for row in rows
    ]
    lines.insert(1, "-" * len(lines[0]))
    for project, report in results:
        for notice in report.get("notices", []):
            lines.append(f"{project.key}: {notice}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="fetch_projects.py",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("cache", type=Path, help="where sdists, sources, venvs and reports go")
    parser.add_argument("--only", nargs="*", default=[], help="project names to run")
    parser.add_argument("--python", default="python3", help="the interpreter of the venvs")
    options = parser.parse_args(argv)
    cache: Path = options.cache.resolve()
    cache.mkdir(parents=True, exist_ok=True)
    chosen = [p for p in PROJECTS if not options.only or p.name in options.only]
    if not chosen:
        parser.error(f"no such project; known: {', '.join(p.name for p in PROJECTS)}")
    results = []
    for project in chosen:
        print(f"\n#### {project.key}", flush=True)
        source = fetch(project, cache, options.python)
        venv_python = install(project, source, cache, options.python)
        results.append((project, parity(project, source, venv_python, cache)))
    print("\n#### parity of snapd pytest with pytest\n" + summary(results), flush=True)
    (cache / "summary.txt").write_text(summary(results) + "\n")
    return 0 if all(report["identical"] for _, report in results) else 1


if __name__ == "__main__":
    sys.exit(main())
