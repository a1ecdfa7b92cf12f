"""``snapd stats`` documents and how they are shown: aligned tables, JSON, a self-contained page.

A document is a plain dict following :data:`SCHEMA` (version ``snapd-stats/1``, described in
``docs/stats.md``). ``mode`` says which kind:

- ``cold``: one instrumented cold start (``snapd stats --cold``), with its ``profile``
  (``snapd.profile.Profiler.result``): phases, imports, fixtures, memory.
- ``daemon``: the running daemon's requests by layer, its chains and snapshots, with build
  times and each snapshot's memory (RSS, USS, PSS) measured here with psutil.

Example:
    >>> doc = cold_document(run_cold(["tests/"]), ["tests/"], budget=10.0)  # doctest: +SKIP
    >>> print("\\n".join(text_lines(doc)))  # doctest: +SKIP
    >>> open("stats.html", "w").write(html_page(doc))  # doctest: +SKIP
"""

from __future__ import annotations

import datetime
import html
import json
import math
import os
from collections.abc import Callable, Iterable
from typing import Any

import click

from snapd import __version__
from snapd.profile import ColdRun, memory_of

SCHEMA_VERSION = "snapd-stats/1"

# --- the schema -------------------------------------------------------------------------------

_NUM = {"type": "number", "minimum": 0}
_NUM_OR_NULL = {"type": ["number", "null"], "minimum": 0}
_INT = {"type": "integer", "minimum": 0}
_INT_OR_NULL = {"type": ["integer", "null"], "minimum": 0}
_STR = {"type": "string"}
_STR_OR_NULL = {"type": ["string", "null"]}
_KIND = {"enum": ["project", "third_party", "stdlib"]}


def _obj(properties: dict[str, Any], optional: Iterable[str] = ()) -> dict[str, Any]:
    """An object schema whose properties are all required except ``optional``."""
    return {
        "type": "object",
        "properties": properties,
        "required": [k for k in properties if k not in set(optional)],
        "additionalProperties": False,
    }


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/$defs/{name}"}


def _array(item: dict[str, Any]) -> dict[str, Any]:
    return {"type": "array", "items": item}


_DEFS: dict[str, Any] = {
    "kind_seconds": _obj({"project": _NUM, "third_party": _NUM, "stdlib": _NUM}),
    "memory": _obj({"rss": _INT_OR_NULL, "uss": _INT_OR_NULL, "pss": _INT_OR_NULL}),
    "phase": _obj({"name": _STR, "start": _NUM, "seconds": _NUM, "imports": _ref("kind_seconds")}),
    "slow_import": _obj(
        {
            "name": _STR,
            "self_seconds": _NUM,
            "cumulative_seconds": _NUM,
            "kind": _KIND,
            "importer": _STR,
        }
    ),
    "package": _obj({"name": _STR, "modules": _INT, "seconds": _NUM, "kind": _KIND}),
    "import_event": _obj(
        {
            "name": _STR,
            "parent": {"type": "integer", "minimum": -1},
            "depth": _INT,
            "start": _NUM,
            "seconds": _NUM,
            "self_seconds": _NUM,
            "kind": _KIND,
            "importer": _STR,
            "failed": {"type": "boolean"},
        }
    ),
    "fixture": _obj(
        {
            "name": _STR,
            "scope": _STR,
            "location": _STR,
            "start": _NUM,
            "seconds": _NUM,
            "error": _STR_OR_NULL,
        }
    ),
    "profile": _obj(
        {
            "python": _STR,
            "pytest": _STR_OR_NULL,
            "rootdir": _STR_OR_NULL,
            "total_seconds": _NUM,
            "phases": _array(_ref("phase")),
            "imports": _obj(
                {
                    "count": _INT,
                    "failed": _INT,
                    "seconds": _ref("kind_seconds"),
                    "slowest": _array(_ref("slow_import")),
                    "packages": _array(_ref("package")),
                    "events": _array(_ref("import_event")),
                }
            ),
            "fixtures": _array(_ref("fixture")),
            "tests_collected": _INT_OR_NULL,
            "failed_fixtures": _array(_obj({"name": _STR, "error": _STR})),
            "memory": {"oneOf": [_ref("memory"), {"type": "null"}]},
            "teardown_seconds": _NUM_OR_NULL,
        }
    ),
    "snapshot": _obj(
        {
            "layer": _STR,
            "pid": _INT_OR_NULL,
            "state": _STR,
            "reason": _STR_OR_NULL,
            "modules": _INT_OR_NULL,
            "files": _INT_OR_NULL,
            "build_seconds": _NUM_OR_NULL,
            "age_seconds": _NUM_OR_NULL,
            "running": _INT_OR_NULL,
            "spares": _INT_OR_NULL,
            "memory": {"oneOf": [_ref("memory"), {"type": "null"}]},
            "profile": {"oneOf": [_ref("profile"), {"type": "null"}]},
        }
    ),
    "chain": _obj(
        {
            "key": _STR,
            "args": _array(_STR),
            "startup_seconds": _NUM_OR_NULL,
            "snapshots": _array(_ref("snapshot")),
            "invalidations": _array(_STR),
        }
    ),
}

_COMMON = {
    "schema": {"const": SCHEMA_VERSION},
    "snapd_version": _STR,
    "generated_at": _STR,
    "budget_seconds": _NUM_OR_NULL,
    "over_budget": {"type": ["boolean", "null"]},
}

_DEFS["cold"] = _obj(
    {
        **_COMMON,
        "mode": {"const": "cold"},
        "cwd": _STR,
        "args": _array(_STR),
        "exit_code": {"type": "integer"},
        "startup_seconds": _NUM,
        "profile": _ref("profile"),
    }
)
_DEFS["daemon"] = _obj(
    {
        **_COMMON,
        "mode": {"const": "daemon"},
        "rootdir": _STR,
        "pid": _INT,
        "uptime_seconds": _NUM,
        "requests": _obj(
            {"total": _INT, "session": _INT, "base": _INT, "fallback": _INT, "errors": _INT}
        ),
        "latency": {"type": ["object", "null"]},
        "memory": _obj({"processes": _INT, "rss": _INT, "uss": _INT, "pss": _INT}),
        "chains": _array(_ref("chain")),
    }
)

#: The JSON Schema (draft 2020-12) of every document ``snapd stats --json`` prints.
SCHEMA: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "title": f"snapd stats, {SCHEMA_VERSION}",
    "description": "Output of `snapd stats --json`; see docs/stats.md.",
    "oneOf": [_ref("cold"), _ref("daemon")],
    "$defs": _DEFS,
}

# --- documents ----------------------------------------------------------------------------------


def _now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


def _verdict(seconds: float | None, budget: float | None) -> bool | None:
    if budget is None or seconds is None:
        return None
    return seconds > budget


def cold_document(run: ColdRun, args: list[str], budget: float | None = None) -> dict[str, Any]:
    """The document of one profiled cold start (``snapd stats --cold ARGS``)."""
    total = float(run.profile["total_seconds"])
    return {
        "schema": SCHEMA_VERSION,
        "mode": "cold",
        "snapd_version": __version__,
        "generated_at": _now(),
        "cwd": os.getcwd(),
        "args": list(args),
        "exit_code": run.exit_code,
        "startup_seconds": total,
        "budget_seconds": budget,
        "over_budget": _verdict(total, budget),
        "profile": run.profile,
    }


_SNAPSHOT_FIELDS = (
    *("layer", "pid", "state", "reason", "modules", "files"),
    *("build_seconds", "age_seconds", "running", "spares"),
)


def daemon_document(status: dict[str, Any], budget: float | None = None) -> dict[str, Any]:
    """The document of a running daemon, from its ``status`` reply plus memory measured here.

    A snapshot's ``profile`` (its build breakdown) and the reply's ``latency`` are passed on
    when the daemon reports them, ``null`` otherwise.
    """
    counts = status.get("counts", {})
    chains = [_chain(c) for c in status.get("chains", [])]
    slowest = max((c["startup_seconds"] or 0.0 for c in chains), default=None)
    return {
        "schema": SCHEMA_VERSION,
        "mode": "daemon",
        "snapd_version": __version__,
        "generated_at": _now(),
        "rootdir": str(status.get("rootdir", "")),
        "pid": int(status.get("pid", 0)),
        "uptime_seconds": float(status.get("uptime_seconds", 0.0)),
        "requests": {
            "total": int(counts.get("requests", 0)),
            **{k: int(counts.get(k, 0)) for k in ("session", "base", "fallback", "errors")},
        },
        "latency": status.get("latency"),
        "memory": _tree_memory(int(status.get("pid", 0))),
        "chains": chains,
        "budget_seconds": budget,
        "over_budget": _verdict(slowest, budget),
    }


def _chain(chain: dict[str, Any]) -> dict[str, Any]:
    snapshots = []
    for snap in chain.get("snapshots", []):
        entry = {k: snap.get(k) for k in _SNAPSHOT_FIELDS}
        alive = entry["pid"] and entry["state"] != "dead"
        entry["memory"] = memory_of(int(entry["pid"])) if alive else None
        entry["profile"] = snap.get("profile")
        snapshots.append(entry)
    builds = [s["build_seconds"] for s in snapshots]
    # A cold `pytest` does what the whole chain did: the base's imports, then the session.
    startup = sum(builds) if builds and all(b is not None for b in builds) else None
    return {
        "key": str(chain.get("key", "")),
        "args": [str(a) for a in chain.get("args", [])],
        "startup_seconds": startup,
        "snapshots": snapshots,
        "invalidations": [str(r) for r in chain.get("invalidations", [])],
    }


def _tree_memory(pid: int) -> dict[str, int]:
    """Memory of the manager and every process below it (snapshots, spares, children)."""
    import psutil

    totals = {"processes": 0, "rss": 0, "uss": 0, "pss": 0}
    try:
        manager = psutil.Process(pid)
        processes = [manager, *manager.children(recursive=True)]
    except psutil.Error:
        return totals
    for process in processes:
        memory = memory_of(process.pid)
        if memory is None:
            continue
        totals["processes"] += 1
        for key in ("rss", "uss", "pss"):
            totals[key] += memory[key] or 0
    return totals


# --- text -------------------------------------------------------------------------------------

_PHASE_LABELS = {
    "interpreter": "interpreter start",
    "plugins": "pytest and plugins",
    "conftest": "conftest",
    "configure": "configure",
    "collection": "collection",
    "fixtures": "session fixtures",
    "error": "(pytest stopped)",
}
_KIND_LABELS = {"project": "project", "third_party": "third-party", "stdlib": "stdlib"}
_KIND_COLOURS = {"project": "yellow", "third_party": "cyan", "stdlib": None}


def _s(seconds: float | None, digits: int = 3) -> str:
    return "-" if seconds is None else f"{seconds:.{digits}f}"


def _plural(count: int, noun: str) -> str:
    return f"{count} {noun}{'' if count == 1 else 's'}"


def _mib(size: int | None) -> str:
    return "-" if not size else f"{size / 2**20:.1f}"


def _table(
    headers: list[str],
    rows: list[list[str]],
    right: Iterable[int] = (),
    colour: Callable[[int, str], str | None] | None = None,
) -> list[str]:
    """Aligned columns; ``colour(column, cell)`` names a colour for a cell, applied after
    padding so the ANSI codes do not skew the widths (click strips them off a non-tty)."""
    right = set(right)
    widths = [max([len(h), *(len(r[i]) for r in rows)]) for i, h in enumerate(headers)]

    def line(cells: list[str], head: bool) -> str:
        out = []
        for i, (cell, width) in enumerate(zip(cells, widths, strict=True)):
            last = i == len(cells) - 1
            padded = cell.rjust(width) if i in right else cell if last else cell.ljust(width)
            fg = colour(i, cell) if colour and not head else None
            out.append(click.style(padded, bold=head, fg=fg) if head or fg else padded)
        return "  ".join(out).rstrip()

    return ["  " + line(headers, True), *("  " + line(r, False) for r in rows)]


def _kind_colour(column: int) -> Callable[[int, str], str | None]:
    def pick(i: int, cell: str) -> str | None:
        if i != column:
            return None
        kind = {v: k for k, v in _KIND_LABELS.items()}.get(cell, "")
        return _KIND_COLOURS.get(kind)

    return pick


def text_lines(doc: dict[str, Any], top: int = 10) -> list[str]:
    """The human report, as lines (ANSI colours included; ``click.echo`` drops them off a tty).

    Example:
        >>> for line in text_lines(doc): click.echo(line)  # doctest: +SKIP
    """
    if doc["mode"] == "cold":
        return _cold_lines(doc, top)
    return _daemon_lines(doc, top)


def _budget_note(seconds: float | None, doc: dict[str, Any]) -> str:
    budget = doc.get("budget_seconds")
    over = _verdict(seconds, budget)
    if budget is None or over is None:
        return ""
    if over:
        return "  " + click.style(f"over the budget of {budget:.2f} s", fg="red", bold=True)
    return "  " + click.style(f"within the budget of {budget:.2f} s", fg="green")


def _cold_lines(doc: dict[str, Any], top: int) -> list[str]:
    profile = doc["profile"]
    command = " ".join(["pytest", *doc["args"]])
    head = click.style(f"start-up {doc['startup_seconds']:.2f} s", bold=True)
    lines = [
        f"snapd stats --cold: `{command}` in {profile.get('rootdir') or doc['cwd']}",
        f"{head}{_budget_note(doc['startup_seconds'], doc)}  "
        f"(pytest {profile.get('pytest') or '?'}, Python {profile['python']}, "
        f"{_plural(profile.get('tests_collected') or 0, 'test')} collected)",
    ]
    if doc["exit_code"] not in (0, 5):
        lines.append(click.style(f"pytest exited with code {doc['exit_code']}", fg="red"))
    return lines + profile_lines(profile, top)


def profile_lines(profile: dict[str, Any], top: int = 10) -> list[str]:
    """Phases, slowest imports and packages, fixtures and memory of one ``profile``."""
    lines = ["", *_phase_table(profile)]
    imports = profile["imports"]
    split = ", ".join(f"{_KIND_LABELS[k]} {imports['seconds'][k]:.2f} s" for k in _KIND_LABELS)
    lines += ["", f"imports: {imports['count']} modules; self time {split}"]
    lines += ["slowest imports (by self time; cumulative includes what they imported)"]
    lines += _table(
        ["module", "self s", "cumulative s", "kind", "imported by"],
        [
            [
                i["name"],
                _s(i["self_seconds"]),
                _s(i["cumulative_seconds"]),
                _KIND_LABELS[i["kind"]],
                i["importer"] or "-",
            ]
            for i in imports["slowest"][:top]
        ],
        right=(1, 2),
        colour=_kind_colour(3),
    )
    lines += ["", "slowest packages (self time of all their modules)"]
    lines += _table(
        ["package", "modules", "self s", "kind"],
        [
            [p["name"], str(p["modules"]), _s(p["seconds"]), _KIND_LABELS[p["kind"]]]
            for p in imports["packages"][:top]
        ],
        right=(1, 2),
        colour=_kind_colour(3),
    )
    lines += ["", *_fixture_table(profile, top), *_memory_line(profile.get("memory"))]
    return lines


def _phase_table(profile: dict[str, Any]) -> list[str]:
    total = profile["total_seconds"] or 1e-9
    rows = []
    for phase in profile["phases"]:
        kinds = phase["imports"]
        rows.append(
            [
                _PHASE_LABELS.get(phase["name"], phase["name"]),
                _s(phase["seconds"]),
                f"{100 * phase['seconds'] / total:.1f}%",
                *(_s(kinds[k]) if kinds[k] >= 0.0005 else "" for k in _KIND_LABELS),
            ]
        )
    rows.append(["total", _s(profile["total_seconds"]), "100.0%", "", "", ""])
    return _table(
        ["phase", "seconds", "share", "imports: project", "third-party", "stdlib"],
        rows,
        right=(1, 2, 3, 4, 5),
    )


def _fixture_table(profile: dict[str, Any], top: int) -> list[str]:
    fixtures = sorted(
        (f for f in profile["fixtures"] if f["scope"] == "session"),
        key=lambda f: f["seconds"],
        reverse=True,
    )
    lines = ["slowest session fixtures"]
    if not fixtures:
        return [*lines, "  (none set up)"]
    errors = any(f["error"] for f in fixtures[:top])
    lines += _table(
        ["fixture", "seconds", "defined at", *(["error"] if errors else [])],
        [
            [f["name"], _s(f["seconds"]), f["location"], *([f["error"] or ""] if errors else [])]
            for f in fixtures[:top]
        ],
        right=(1,),
        colour=lambda i, cell: "red" if i == 3 and cell else None,
    )
    for failed in profile.get("failed_fixtures", []):
        lines.append(click.style(f"  failed: {failed['name']}: {failed['error']}", fg="red"))
    return lines


def _memory_line(memory: dict[str, int | None] | None) -> list[str]:
    if not memory:
        return []
    return [
        "",
        f"memory at the end of start-up: RSS {_mib(memory['rss'])} MiB, "
        f"USS {_mib(memory['uss'])} MiB, PSS {_mib(memory['pss'])} MiB",
    ]


def _daemon_lines(doc: dict[str, Any], top: int) -> list[str]:
    req, mem = doc["requests"], doc["memory"]
    lines = [
        f"snapd stats: daemon pid {doc['pid']}, up {doc['uptime_seconds']:.0f} s, {doc['rootdir']}",
        f"requests {req['total']}: session {req['session']}, base {req['base']}, "
        f"cold fallback {req['fallback']}, errors {req['errors']}",
        f"memory of {mem['processes']} processes: USS {_mib(mem['uss'])} MiB, "
        f"PSS {_mib(mem['pss'])} MiB (RSS summed {_mib(mem['rss'])} MiB counts shared pages "
        "once per process)",
    ]
    for layer, latency in (doc.get("latency") or {}).items():
        if latency.get("count"):
            lines.append(
                f"latency from the {layer}: p50 {latency['p50']:.3f} s, p95 "
                f"{latency['p95']:.3f} s over the last {latency['count']} runs"
            )
    for chain in doc["chains"]:
        lines += ["", *_chain_lines(chain, doc, top)]
    if not any(s["profile"] for c in doc["chains"] for s in c["snapshots"]):
        lines += [
            "",
            "imports and fixtures: this daemon does not report its build breakdown; "
            "`snapd stats --cold` profiles a cold start",
        ]
    return lines


def _chain_lines(chain: dict[str, Any], doc: dict[str, Any], top: int) -> list[str]:
    startup = chain["startup_seconds"]
    built = f"built in {startup:.2f} s" if startup is not None else "not built"
    lines = [
        click.style(f"chain {chain['key']}", bold=True)
        + f"  args {' '.join(chain['args']) or '(none)'}  {built}{_budget_note(startup, doc)}"
    ]
    rows = []
    for s in chain["snapshots"]:
        memory = s["memory"] or {"rss": None, "uss": None, "pss": None}
        rows.append(
            [
                s["layer"], s["state"], str(s["pid"]), _s(s["build_seconds"], 2),
                _s(s["age_seconds"], 0), str(s["modules"] or "-"), str(s["files"] or "-"),
                str(s["running"] or 0), str(s["spares"] or 0),
                _mib(memory["rss"]), _mib(memory["uss"]), _mib(memory["pss"]),
            ]
        )  # fmt: skip
    lines += _table(
        ["layer", "state", "pid", "built s", "age s", "modules", "files", "running", "spares",
         "RSS MiB", "USS MiB", "PSS MiB"],
        rows,
        right=range(2, 12),
        colour=lambda i, cell: ("green" if cell == "ready" else "yellow") if i == 1 else None,
    )  # fmt: skip
    for s in chain["snapshots"]:
        if s["reason"]:
            lines.append(f"  {s['layer']}: {s['reason'].strip().splitlines()[-1]}")
    lines += [f"  invalidated: {reason}" for reason in chain["invalidations"][-3:]]
    for s in chain["snapshots"]:
        if s["profile"]:
            lines += ["", f"{s['layer']} snapshot build:", *profile_lines(s["profile"], top)]
    return lines


def json_text(doc: dict[str, Any]) -> str:
    """The document as JSON (what ``--json`` prints)."""
    return json.dumps(doc, indent=1)


# --- html ---------------------------------------------------------------------------------------

# Fill colours: the screenshot test looks for the kind and fixture colours by value.
KIND_FILLS = {"project": "#e8590c", "third_party": "#1c7ed6", "stdlib": "#adb5bd"}
FIXTURE_FILL = "#2b8a3e"
_PHASE_FILLS = {
    "interpreter": "#e9ecef",
    "plugins": "#d0ebff",
    "conftest": "#ffe8cc",
    "configure": "#f3f0ff",
    "collection": "#d3f9d8",
    "fixtures": "#fff3bf",
    "error": "#ffe3e3",
}
_WIDTH, _GUTTER, _ROW, _MAX_DEPTH = 1160, 84, 16, 30
_CSS = """
body { font: 13px/1.4 system-ui, sans-serif; margin: 16px 20px; color: #212529; }
h1 { font-size: 18px; margin: 0 0 4px; } h2 { font-size: 15px; margin: 18px 0 6px; }
code { font: 12px ui-monospace, monospace; }
.summary { margin: 0 0 10px; } .bad { color: #c92a2a; font-weight: bold; }
.ok { color: #2b8a3e; }
table { border-collapse: collapse; margin: 4px 0; }
th, td { padding: 2px 10px 2px 0; text-align: left; white-space: nowrap; }
th { border-bottom: 1px solid #ced4da; } td.n, th.n { text-align: right; }
svg text { font: 11px ui-monospace, monospace; fill: #212529; }
svg .axis { fill: #868e96; } .legend span { display: inline-block; margin-right: 14px; }
.legend i { display: inline-block; width: 11px; height: 11px; margin-right: 4px; }
"""


def html_page(doc: dict[str, Any], top: int = 15) -> str:
    """A page with no external resource: inline CSS and SVG, and the document as JSON.

    Its chart is a flame chart on one time axis: phases, then session fixtures, then every
    module load nested under the load that triggered it, coloured by kind.
    """
    if doc["mode"] == "cold":
        title = f"snapd stats: start-up of pytest {' '.join(doc['args'])}"
        body = [_cold_summary(doc), *_profile_html(doc["profile"], top)]
    else:
        title = f"snapd stats: daemon for {doc['rootdir']}"
        body = _daemon_html(doc, top)
    data = json.dumps(doc).replace("<", "\\u003c")  # no "</script>" inside the block
    return (
        '<!doctype html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>{_e(title)}</title><style>{_CSS}</style></head><body>\n"
        f"<h1>{_e(title)}</h1>\n" + "\n".join(body) + "\n"
        f'<script type="application/json" id="snapd-stats">{data}</script>\n'
        "</body></html>\n"
    )


def _e(text: object) -> str:
    return html.escape(str(text))


def _cold_summary(doc: dict[str, Any]) -> str:
    profile = doc["profile"]
    parts = [f"<b>start-up {doc['startup_seconds']:.2f} s</b>"]
    if doc["budget_seconds"] is not None:
        cls, word = ("bad", "over") if doc["over_budget"] else ("ok", "within")
        budget = f"{word} the budget of {doc['budget_seconds']:.2f} s"
        parts.append(f'<span class="{cls}">{budget}</span>')
    parts.append(
        f"pytest {_e(profile.get('pytest'))}, Python {_e(profile['python'])}, "
        f"{_plural(profile.get('tests_collected') or 0, 'test')} collected, "
        f"{profile['imports']['count']} modules imported, "
        f"in <code>{_e(profile.get('rootdir'))}</code>"
    )
    if doc["exit_code"] not in (0, 5):
        parts.append(f'<span class="bad">pytest exited with code {doc["exit_code"]}</span>')
    return f'<p class="summary">{" · ".join(parts)}</p>'


def _profile_html(profile: dict[str, Any], top: int) -> list[str]:
    imports = profile["imports"]
    phase_rows = [
        [_PHASE_LABELS.get(p["name"], p["name"]), _s(p["seconds"]),
         *(_s(p["imports"][k]) for k in _KIND_LABELS)]
        for p in profile["phases"]
    ]  # fmt: skip
    fixtures = sorted(profile["fixtures"], key=lambda f: f["seconds"], reverse=True)
    memory = profile.get("memory") or {}
    return [
        _timeline_svg(profile),
        _legend(),
        "<h2>Phases</h2>",
        _html_table(
            ["phase", "seconds", "imports: project", "third-party", "stdlib"],
            phase_rows,
            numeric=(1, 2, 3, 4),
        ),
        "<h2>Slowest imports (self time)</h2>",
        _html_table(
            ["module", "self s", "cumulative s", "kind", "imported by"],
            [
                [
                    i["name"],
                    _s(i["self_seconds"]),
                    _s(i["cumulative_seconds"]),
                    _KIND_LABELS[i["kind"]],
                    i["importer"],
                ]
                for i in imports["slowest"][:top]
            ],
            numeric=(1, 2),
        ),
        "<h2>Slowest packages</h2>",
        _html_table(
            ["package", "modules", "self s", "kind"],
            [
                [p["name"], str(p["modules"]), _s(p["seconds"]), _KIND_LABELS[p["kind"]]]
                for p in imports["packages"][:top]
            ],
            numeric=(1, 2),
        ),
        "<h2>Fixtures</h2>",
        _html_table(
            ["fixture", "scope", "seconds", "defined at", "error"],
            [
                [f["name"], f["scope"], _s(f["seconds"]), f["location"], f["error"] or ""]
                for f in fixtures[:top]
            ],
            numeric=(2,),
        ),
        f"<p>Memory at the end of start-up: RSS {_mib(memory.get('rss'))} MiB, "
        f"USS {_mib(memory.get('uss'))} MiB, PSS {_mib(memory.get('pss'))} MiB</p>",
    ]


def _html_table(headers: list[str], rows: list[list[str]], numeric: Iterable[int] = ()) -> str:
    numeric = set(numeric)

    def cells(tag: str, values: list[str]) -> str:
        return "".join(
            f"<{tag}{' class=n' if i in numeric else ''}>{_e(v)}</{tag}>"
            for i, v in enumerate(values)
        )

    body = "".join(f"<tr>{cells('td', r)}</tr>" for r in rows)
    return f"<table><tr>{cells('th', headers)}</tr>{body}</table>"


def _legend() -> str:
    items = [(KIND_FILLS[k], f"{_KIND_LABELS[k]} import") for k in _KIND_LABELS]
    items.append((FIXTURE_FILL, "session fixture setup"))
    spans = "".join(f'<span><i style="background:{c}"></i>{_e(t)}</span>' for c, t in items)
    return f'<div class="legend">{spans}</div>'


def _tick_step(total: float) -> float:
    """A round step giving about 8 ticks over ``total`` seconds."""
    raw = max(total, 1e-3) / 8
    magnitude = 10 ** math.floor(math.log10(raw))
    return float(next(m * magnitude for m in (1, 2, 5, 10) if m * magnitude >= raw))


def _timeline_svg(profile: dict[str, Any]) -> str:
    """Phases, fixtures and imports on one time axis. Rectangles narrower than a fifth of a
    pixel are left out: invisible anyway, and a big project has thousands of them."""
    total = max(float(profile["total_seconds"]), 1e-6)
    scale = (_WIDTH - _GUTTER) / total
    events = profile["imports"]["events"]
    depth = min(max((e["depth"] for e in events), default=0) + 1, _MAX_DEPTH)
    imports_top = 86
    height = imports_top + depth * _ROW + 4
    parts = [f'<svg width="{_WIDTH}" height="{height}" viewBox="0 0 {_WIDTH} {height}">']
    parts += _axis(total, scale, height)
    parts += [_lane_label("phases", 30), _lane_label("fixtures", 58), _lane_label("imports", 80)]
    for p in profile["phases"]:
        fill = _PHASE_FILLS.get(p["name"], "#f1f3f5")
        label = _PHASE_LABELS.get(p["name"], p["name"])
        tip = f"{label}: {p['seconds']:.3f} s"
        parts.append(_rect(p["start"], p["seconds"], 18, 20, fill, tip, label, scale))
    for f in profile["fixtures"]:
        tip = f"fixture {f['name']} ({f['scope']}): {f['seconds']:.3f} s, {f['location']}"
        parts.append(_rect(f["start"], f["seconds"], 46, 20, FIXTURE_FILL, tip, f["name"], scale))
    for e in events:
        if e["depth"] >= _MAX_DEPTH or e["seconds"] * scale < 0.2:
            continue
        tip = (
            f"{e['name']}: self {e['self_seconds']:.3f} s, cumulative {e['seconds']:.3f} s, "
            f"{_KIND_LABELS[e['kind']]}, imported by {e['importer'] or '?'}"
            + (" (failed)" if e["failed"] else "")
        )
        y = imports_top + e["depth"] * _ROW
        fill = KIND_FILLS[e["kind"]]
        parts.append(_rect(e["start"], e["seconds"], y, _ROW - 1, fill, tip, e["name"], scale))
    parts.append("</svg>")
    return "\n".join(p for p in parts if p)


def _axis(total: float, scale: float, height: int) -> list[str]:
    step = _tick_step(total)
    out = []
    for i in range(int(total / step) + 1):
        x = _GUTTER + i * step * scale
        out.append(
            f'<line x1="{x:.1f}" y1="14" x2="{x:.1f}" y2="{height}" stroke="#f1f3f5"/>'
            f'<text class="axis" x="{x + 2:.1f}" y="11">{i * step:g} s</text>'
        )
    return out


def _lane_label(text: str, y: int) -> str:
    return f'<text class="axis" x="0" y="{y}">{text}</text>'


def _rect(
    start: float, seconds: float, y: float, h: float, fill: str, tip: str, label: str, scale: float
) -> str:
    width = seconds * scale
    if width < 0.2:
        return ""
    x = _GUTTER + start * scale
    text = ""
    fits = int((width - 4) / 6.7)  # characters of the 11px monospace font that fit
    if fits >= 3:
        shown = label if len(label) <= fits else label[: fits - 1] + "…"
        colour = "#fff" if fill in (*KIND_FILLS.values(), FIXTURE_FILL) else "#212529"
        text = f'<text x="{x + 2:.1f}" y="{y + h - 4:.1f}" style="fill:{colour}">{_e(shown)}</text>'
    # A hairline gap between neighbours, so a run of small modules reads as many.
    drawn = width - 0.5 if width > 2 else width
    return (
        f'<g><title>{_e(tip)}</title><rect x="{x:.2f}" y="{y}" width="{drawn:.2f}" '
        f'height="{h}" fill="{fill}"/>{text}</g>'
    )


def _daemon_html(doc: dict[str, Any], top: int) -> list[str]:
    req, mem = doc["requests"], doc["memory"]
    out = [
        f'<p class="summary">daemon pid {doc["pid"]}, up {doc["uptime_seconds"]:.0f} s · '
        f"requests {req['total']}: session {req['session']}, base {req['base']}, "
        f"cold fallback {req['fallback']}, errors {req['errors']} · "
        f"{mem['processes']} processes, USS {_mib(mem['uss'])} MiB, PSS {_mib(mem['pss'])} MiB</p>"
    ]
    for chain in doc["chains"]:
        out.append(f"<h2>Chain {_e(chain['key'])} <code>{_e(' '.join(chain['args']))}</code></h2>")
        rows = []
        for s in chain["snapshots"]:
            m = s["memory"] or {}
            rows.append(
                [s["layer"], s["state"], str(s["pid"]), _s(s["build_seconds"], 2),
                 str(s["modules"]), str(s["files"]), _mib(m.get("rss")), _mib(m.get("uss")),
                 _mib(m.get("pss"))]
            )  # fmt: skip
        out.append(
            _html_table(
                [
                    "layer",
                    "state",
                    "pid",
                    "built s",
                    "modules",
                    "files",
                    "RSS MiB",
                    "USS MiB",
                    "PSS MiB",
                ],
                rows,
                numeric=range(2, 9),
            )
        )
        out += [f"<p>invalidated: {_e(r)}</p>" for r in chain["invalidations"][-3:]]
        for s in chain["snapshots"]:
            if s["profile"]:
                out += [f"<h2>{_e(s['layer'])} snapshot build</h2>"]
                out += _profile_html(s["profile"], top)
    if not any(s["profile"] for c in doc["chains"] for s in c["snapshots"]):
        out.append(
            "<p>This daemon does not report its snapshots' build breakdown: "
            "<code>snapd stats --cold --html FILE</code> charts the imports and fixtures of "
            "a cold start.</p>"
        )
    return out
