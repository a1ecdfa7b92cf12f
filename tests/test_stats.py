"""``snapd stats``: where a generated project's start-up goes, cold and from a running daemon.

The project comes from ``tools/make_project.py`` with one module made deliberately slow and a
session fixture of known length, so the profile has known answers.
"""

from __future__ import annotations

import importlib.util
import json
import os
import sys
import threading
import types
from pathlib import Path
from typing import Any

import psutil
import pytest
from conftest import SNAPD, Project
from ptyrun import PtyProcess

from snapd import profile, report
from snapd.commands import cli

# One xdist worker runs the whole module (tools/test.sh uses --dist loadgroup), so its
# module-scoped fixtures are built once, not once per worker.
pytestmark = [pytest.mark.timeout(300), pytest.mark.xdist_group("stats")]

REPO = Path(__file__).resolve().parent.parent
# The module the import breakdown must name first: slow enough that no other one, however
# descheduled on a loaded machine, takes as long.
SLOW = ("mod_007", 1500.0)
FIXTURE_SECONDS = 1.0  # slow_resource sleeps this long
PHASES = ["interpreter", "plugins", "conftest", "configure", "collection", "fixtures"]


def _generator() -> types.ModuleType:
    spec = importlib.util.spec_from_file_location("make_project", REPO / "tools/make_project.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def generate(proj: Project, modules: int = 30, fixture_seconds: float = FIXTURE_SECONDS) -> None:
    """Write the synthetic project into ``proj`` (its own pyproject.toml replaces the fixture's)."""
    files = _generator().project_files(modules, 10.0, fixture_seconds, SLOW)
    for relative, text in files.items():
        proj.write(relative, text)


def validate(value: Any, schema: dict[str, Any], root: dict[str, Any], at: str = "$") -> None:
    """Check ``value`` against the JSON Schema subset report.SCHEMA uses (raises ValueError).

    By hand, so the test needs no jsonschema; test_validator_rejects_bad_documents keeps it
    honest, and test_schema_uses_only_checked_keywords keeps it complete.
    """
    if "$ref" in schema:
        schema = root["$defs"][schema["$ref"].rsplit("/", 1)[1]]
    if "oneOf" in schema:
        errors = []
        for option in schema["oneOf"]:
            try:
                validate(value, option, root, at)
            except ValueError as error:
                errors.append(str(error))
        if len(errors) != len(schema["oneOf"]) - 1:
            raise ValueError(f"{at}: must match exactly one of oneOf: {'; '.join(errors)}")
        return
    if "const" in schema and value != schema["const"]:
        raise ValueError(f"{at}: {value!r} is not {schema['const']!r}")
    if "enum" in schema and value not in schema["enum"]:
        raise ValueError(f"{at}: {value!r} not in {schema['enum']}")
    if "type" in schema:
        _check_type(value, schema["type"], at)
    number = isinstance(value, (int, float)) and not isinstance(value, bool)
    if number and "minimum" in schema and value < schema["minimum"]:
        raise ValueError(f"{at}: {value} < {schema['minimum']}")
    if isinstance(value, dict):
        _check_object(value, schema, root, at)
    if isinstance(value, list) and "items" in schema:
        for i, item in enumerate(value):
            validate(item, schema["items"], root, f"{at}[{i}]")


_TYPES: dict[str, Any] = {
    "object": dict, "array": list, "string": str, "boolean": bool, "null": type(None),
    "integer": int, "number": (int, float),
}  # fmt: skip
_KEYWORDS = {"$schema", "title", "description", "$defs", "$ref", "oneOf", "const", "enum"}
_KEYWORDS |= {"type", "minimum", "properties", "required", "additionalProperties", "items"}


def _check_type(value: Any, types_: str | list[str], at: str) -> None:
    names = [types_] if isinstance(types_, str) else types_
    ok = any(
        isinstance(value, _TYPES[n]) and not (isinstance(value, bool) and n != "boolean")
        for n in names
    )
    if not ok:
        raise ValueError(f"{at}: {value!r} is not of type {names}")


def _check_object(
    value: dict[str, Any], schema: dict[str, Any], root: dict[str, Any], at: str
) -> None:
    for key in schema.get("required", []):
        if key not in value:
            raise ValueError(f"{at}: missing {key!r}")
    properties = schema.get("properties", {})
    for key, item in value.items():
        if key in properties:
            validate(item, properties[key], root, f"{at}.{key}")
        elif schema.get("additionalProperties") is False:
            raise ValueError(f"{at}: unexpected {key!r}")


@pytest.fixture(scope="module")
def generated(tmp_path_factory: pytest.TempPathFactory) -> Project:
    """One generated project for the cold profiles (no daemon is started in it)."""
    root = tmp_path_factory.mktemp("stats")
    proj = Project(root / "proj", str(root / "runtime"))
    generate(proj)
    return proj


@pytest.fixture(scope="module")
def cold(generated: Project) -> dict[str, Any]:
    """``snapd stats --cold --json`` of the fixture test: one profile that several tests read."""
    result = generated.snapd("stats", "--cold", "--json", "--", "tests/test_fixture.py")
    assert result.returncode == 0, result.stdout + result.stderr
    doc: dict[str, Any] = json.loads(result.stdout)
    return doc


def test_cold_import_breakdown_names_the_slowest_module(cold: dict[str, Any]) -> None:
    imports = cold["profile"]["imports"]
    slowest = imports["slowest"][0]
    assert slowest["name"] == "heavy." + SLOW[0]
    assert slowest["self_seconds"] >= SLOW[1] / 1000  # it burns CPU until that much has passed
    assert slowest["kind"] == "project"
    assert slowest["importer"] == "conftest"  # tests/conftest.py imports every heavy module
    assert imports["packages"][0]["name"] == "heavy"
    assert imports["packages"][0]["modules"] == 31  # the package and its 30 modules
    pytest_event = next(e for e in imports["events"] if e["name"] == "pytest")
    assert pytest_event["kind"] == "third_party"
    assert pytest_event["seconds"] >= pytest_event["self_seconds"]
    assert imports["seconds"]["project"] >= SLOW[1] / 1000


def test_cold_session_fixture_time_is_within_20_percent_of_its_sleep(
    cold: dict[str, Any],
) -> None:
    (fixture,) = [f for f in cold["profile"]["fixtures"] if f["name"] == "slow_resource"]
    assert fixture["scope"] == "session"
    assert fixture["location"].startswith("tests/conftest.py:")
    assert FIXTURE_SECONDS * 0.8 <= fixture["seconds"] <= FIXTURE_SECONDS * 1.2
    phase = {p["name"]: p for p in cold["profile"]["phases"]}["fixtures"]
    assert FIXTURE_SECONDS * 0.8 <= phase["seconds"] <= FIXTURE_SECONDS * 1.2


def test_cold_phases_partition_the_start_up(cold: dict[str, Any]) -> None:
    prof = cold["profile"]
    phases = prof["phases"]
    assert [p["name"] for p in phases] == PHASES
    assert sum(p["seconds"] for p in phases) == pytest.approx(prof["total_seconds"], abs=1e-4)
    assert cold["startup_seconds"] == prof["total_seconds"]
    by_name = {p["name"]: p for p in phases}
    assert 0 < by_name["interpreter"]["seconds"] < 2
    # The conftest imports the heavy package: its time is project imports, inside the phase.
    assert by_name["conftest"]["imports"]["project"] >= SLOW[1] / 1000
    assert by_name["plugins"]["imports"]["third_party"] > 0  # pytest itself
    assert prof["tests_collected"] == 1
    assert prof["failed_fixtures"] == []
    assert cold["exit_code"] == 0
    memory = prof["memory"]
    assert memory["rss"] >= memory["pss"] >= memory["uss"] > 0


def test_cold_json_validates_against_the_schema(cold: dict[str, Any], generated: Project) -> None:
    validate(cold, report.SCHEMA, report.SCHEMA)
    printed = generated.snapd("stats", "--schema")
    assert printed.returncode == 0
    assert json.loads(printed.stdout) == report.SCHEMA


def test_validator_rejects_bad_documents(cold: dict[str, Any]) -> None:
    broken = json.loads(json.dumps(cold))
    broken["profile"]["imports"]["slowest"][0]["kind"] = "vendored"
    with pytest.raises(ValueError, match="vendored"):
        validate(broken, report.SCHEMA, report.SCHEMA)
    extra = {**cold, "surprise": 1}
    with pytest.raises(ValueError, match="unexpected 'surprise'"):
        validate(extra, report.SCHEMA, report.SCHEMA)


def test_schema_uses_only_checked_keywords() -> None:
    def keywords(schema: Any) -> set[str]:
        if not isinstance(schema, dict):
            return set()
        found = set(schema) - {"properties", "$defs"} | ({"properties"} & set(schema))
        children = [*schema.get("properties", {}).values(), *schema.get("$defs", {}).values()]
        children += [schema[k] for k in ("items",) if k in schema]
        children += schema.get("oneOf", [])
        return found.union(*(keywords(c) for c in children))

    assert keywords(report.SCHEMA) <= _KEYWORDS


def test_cold_human_report(generated: Project) -> None:
    result = generated.snapd("stats", "--cold", "--top", "5", "--", "tests/test_fixture.py")
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "\x1b[" not in out  # not a terminal: no colours
    assert "heavy.mod_007" in out
    assert "slow_resource" in out
    for label in ("interpreter start", "pytest and plugins", "conftest", "collection"):
        assert label in out
    # Aligned: in the slowest-imports table each row's "self s" ends where its header does.
    lines = out.splitlines()
    head = next(i for i, line in enumerate(lines) if line.lstrip().startswith("module"))
    end = lines[head].index("self s") + len("self s")
    assert all(lines[i][end - 1] != " " and lines[i][end] == " " for i in range(head + 1, head + 6))


def test_budget_exit_codes_and_colours_on_a_tty(generated: Project) -> None:
    over = generated.snapd("stats", "--cold", "--budget", "0.001", "--", "tests/test_trivial.py")
    assert over.returncode == 1
    assert "over the budget of 0.00 s" in over.stderr
    argv = [SNAPD, "stats", "--cold", "--budget", "600", "--", "tests/test_trivial.py"]
    term = PtyProcess(argv, str(generated.root), generated.env, cols=140)
    assert term.wait(timeout=120) == 0
    assert "within the budget of 600.00 s" in term.text
    assert "\x1b[" in term.text  # coloured on a terminal


def test_cold_exits_2_when_pytest_cannot_start(project: Project) -> None:
    project.write("tests/conftest.py", "raise RuntimeError('broken conftest')\n")
    project.write("tests/test_a.py", "def test_a():\n    pass\n")
    result = project.snapd("stats", "--cold", "--json")
    assert result.returncode == 2
    assert "broken conftest" in result.stderr
    doc = json.loads(result.stdout)
    validate(doc, report.SCHEMA, report.SCHEMA)
    assert doc["exit_code"] == 4  # pytest's usage error: the conftest failed to import
    assert doc["profile"]["phases"][-1]["name"] == "error"


def test_cold_exits_2_when_a_session_fixture_fails(project: Project) -> None:
    project.write(
        "tests/test_a.py",
        "import pytest\n\n@pytest.fixture(scope='session')\ndef db():\n"
        "    raise OSError('no database')\n\ndef test_a(db):\n    pass\n",
    )
    result = project.snapd("stats", "--cold")
    assert result.returncode == 2
    assert "failed: db: OSError: no database" in result.stdout


def test_pytest_args_need_cold(project: Project) -> None:
    result = project.snapd("stats", "tests/")
    assert result.returncode == 2
    assert "need --cold" in result.stderr


def test_stats_without_a_daemon_exits_3(project: Project) -> None:
    result = project.snapd("stats")
    assert result.returncode == 3
    assert "not running" in result.stderr


def test_stats_from_the_daemon(project: Project, tmp_path: Path) -> None:
    generate(project, modules=10, fixture_seconds=0.2)
    project.start()
    for _ in range(2):
        ran = project.run("tests/test_trivial.py", "-q")
        assert ran.returncode == 0, ran.stdout + ran.stderr
    result = project.snapd("stats", "--json")
    assert result.returncode == 0, result.stderr
    doc = json.loads(result.stdout)
    validate(doc, report.SCHEMA, report.SCHEMA)
    assert doc["requests"]["total"] == 2
    assert doc["requests"]["session"] + doc["requests"]["base"] == 2
    (chain,) = doc["chains"]
    layers = {s["layer"]: s for s in chain["snapshots"]}
    assert set(layers) == {"base", "session"}
    ours = {p.pid for p in project.processes()}
    for snap in layers.values():
        assert snap["state"] == "ready"
        assert snap["pid"] in ours
        assert snap["memory"]["rss"] >= snap["memory"]["pss"] >= snap["memory"]["uss"] > 0
    assert chain["startup_seconds"] == pytest.approx(
        layers["base"]["build_seconds"] + layers["session"]["build_seconds"]
    )
    assert doc["memory"]["processes"] >= 3  # the manager and two snapshots, at least
    assert doc["memory"]["pss"] >= layers["session"]["memory"]["pss"]

    page = tmp_path / "daemon.html"
    text = project.snapd("stats", "--budget", "0.001", "--html", str(page))
    assert text.returncode == 1  # no chain builds in a millisecond
    assert "session" in text.stdout and "PSS MiB" in text.stdout
    assert "over the budget" in text.stdout
    assert f"daemon pid {doc['pid']}" in text.stdout
    assert psutil.Process(doc["pid"]).is_running()
    assert "Chain" in page.read_text()


def test_daemon_report_shows_a_snapshot_profile(cold: dict[str, Any]) -> None:
    """When the daemon reports a snapshot's build ``profile``, it is rendered like a cold one."""
    snapshot = {
        "layer": "session", "pid": os.getpid(), "state": "ready", "reason": "", "modules": 9,
        "files": 9, "build_seconds": 2.5, "age_seconds": 1.0, "running": 0, "spares": 1,
        "profile": cold["profile"],
    }  # fmt: skip
    status = {
        "pid": os.getpid(), "rootdir": "/src/app", "uptime_seconds": 3.0,
        "counts": {"requests": 4, "session": 3, "base": 0, "fallback": 1, "errors": 0},
        "chains": [{"key": "k", "args": [], "invalidations": [], "snapshots": [snapshot]}],
    }  # fmt: skip
    doc = report.daemon_document(status, budget=60.0)
    validate(doc, report.SCHEMA, report.SCHEMA)
    assert doc["over_budget"] is False
    assert doc["chains"][0]["snapshots"][0]["memory"]["pss"] > 0  # measured: this process
    text = "\n".join(report.text_lines(doc))
    assert "session snapshot build:" in text and "heavy.mod_007" in text
    assert "does not report" not in text
    assert "<svg" in report.html_page(doc)


def test_every_verb_has_help_with_an_example(project: Project) -> None:
    verbs = [name for name in cli.commands if name != "pytest"]  # its --help is pytest's
    assert "stats" in verbs
    for verb in ["", *verbs]:
        result = project.snapd(*([verb] if verb else []), "--help")
        assert result.returncode == 0, verb
        assert "Example" in result.stdout, verb


def test_import_recorder_times_and_attributes_loads(tmp_path: Path) -> None:
    package = tmp_path / "statspkg"
    package.mkdir()
    (package / "__init__.py").write_text("from statspkg import outer\n")
    (package / "outer.py").write_text(
        "import time\ntime.sleep(0.05)\nfrom statspkg import inner\n"
        "try:\n    import statspkg_missing\nexcept ImportError:\n    pass\n"
    )
    (package / "inner.py").write_text("import time\ntime.sleep(0.1)\n")
    bootstrap = sys.modules["_frozen_importlib"]
    original = bootstrap._find_and_load
    recorder = profile.ImportRecorder()
    assert "colorsys" not in sys.modules  # what the other thread imports must be a real load
    sys.path.insert(0, str(tmp_path))
    try:
        recorder.start()
        assert bootstrap._find_and_load is not original
        import statspkg  # noqa: F401

        other = threading.Thread(target=importlib.import_module, args=("colorsys",))
        other.start()
        other.join()
        recorder.stop()
    finally:
        sys.path.remove(str(tmp_path))
        for name in [n for n in sys.modules if n.startswith("statspkg")]:
            del sys.modules[name]
    assert bootstrap._find_and_load is original
    events = {e.name: e for e in recorder.events}
    assert "colorsys" not in events  # another thread's import is not ours to time
    outer, inner = events["statspkg.outer"], events["statspkg.inner"]
    assert inner.importer == "statspkg.outer"
    assert recorder.events[inner.parent] is outer
    assert events["statspkg_missing"].failed
    assert outer.end - outer.start >= 0.15
    summary = {s.event.name: s for s in profile._summarise(recorder.events, str(tmp_path))}
    assert 0.05 <= summary["statspkg.outer"].self_time < 0.1
    assert summary["statspkg.inner"].kind == "project"


def test_classify() -> None:
    assert profile.classify("/src/app/.venv/lib/python3.11/site-packages/x.py", "/src/app") == (
        "third_party"
    )
    assert profile.classify("/src/app/app/models.py", "/src/app") == "project"
    assert profile.classify("/src/application/x.py", "/src/app") == "third_party"
    assert profile.classify(json.__file__, "/src/app") == "stdlib"
    assert profile.classify(None, "/src/app") == "stdlib"
