"""The daemon verbs: ``snapd start``, ``stop``, ``status`` (``snapd pytest`` is ``client``)."""

from __future__ import annotations

import collections
import json
import os
import signal
import sys
import time
from contextlib import closing
from typing import Any

import click
import psutil

from snapd import client, profile, protocol
from snapd.manager import main as manager_main
from snapd.paths import ProjectPaths, find_rootdir

# The manager waits up to 30 s for snapshots to tear down; past this, snapd stop kills.
STOP_TIMEOUT = 45.0


def _paths() -> ProjectPaths:
    paths = ProjectPaths.for_rootdir(find_rootdir(os.getcwd()))
    paths.create()
    return paths


def _ask(paths: ProjectPaths, message: protocol.Message) -> protocol.Message | None:
    sock = client.connect(paths, autostart=False)
    if sock is None:
        return None
    with closing(sock):
        protocol.send(sock, message)
        got = protocol.recv(sock)
    return got[0] if got else None


def _running_pid(paths: ProjectPaths) -> int | None:
    """The manager's pid when one holds the project's lock."""
    lock = manager_main.take_lock(paths)
    if lock is not None:
        lock.close()
        return None
    try:
        with open(paths.pidfile) as f:
            return int(f.read())
    except (OSError, ValueError):
        return 0


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="snapd")
def cli() -> None:
    """pytest that starts instantly: `snapd pytest ARGS` is `pytest ARGS` from warm snapshots.

    \b
    Example:
      snapd start          # in a devcontainer's postStartCommand
      snapd pytest tests/test_api.py -x
      snapd status
    """


@cli.command()
@click.option("--foreground", is_flag=True, help="Run the manager in this terminal.")
@click.option("--wait", is_flag=True, help="Return once the snapshots are built.")
@click.option("--poll", is_flag=True, help="Poll for file changes instead of using inotify.")
def start(foreground: bool, wait: bool, poll: bool) -> None:
    """Start the daemon for the project around the current directory.

    Returns at once; the snapshots build in the background.

    \b
    Example:
      snapd start --wait && snapd pytest tests/
    """
    paths = _paths()
    pid = _running_pid(paths)
    if poll:
        os.environ["SNAPD_POLL"] = "1"  # the manager inherits it
    if pid is not None:
        click.echo(f"snapd: already running for {paths.rootdir} (pid {pid})")
    elif foreground:
        raise SystemExit(manager_main.run(paths.rootdir, foreground=True))
    else:
        client.spawn_manager(paths.rootdir)
        click.echo(f"snapd: starting for {paths.rootdir} (log: {paths.log})")
    if wait:
        sock = client.connect(paths, autostart=False)
        deadline = time.monotonic() + client.START_TIMEOUT
        while sock is None and time.monotonic() < deadline:
            time.sleep(0.02)  # the socket appears once the manager has bound it
            sock = client.connect(paths, autostart=False)
        if sock is None:
            raise click.ClickException(f"the daemon did not start; see {paths.log}")
        with closing(sock):
            protocol.send(sock, {"op": "wait"})
            got = client.receive_past_progress(sock)
        state = got[0].get("state") if got else "gone"
        click.echo(f"snapd: session snapshot {state}")
        if state != "ready":
            raise SystemExit(1)


@cli.command()
def stop() -> None:
    """Stop the daemon and every process it started.

    \b
    Example:
      snapd stop
    """
    _stop(_paths())


def _stop(paths: ProjectPaths) -> None:
    pid = _running_pid(paths)
    if pid is None:
        click.echo("snapd: not running")
        return
    tree = _process_tree(pid)
    reply = _ask(paths, {"op": "stop"})
    if reply is None and pid:
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + STOP_TIMEOUT
    while _running_pid(paths) is not None and time.monotonic() < deadline:
        time.sleep(0.02)  # the lock is released only when the manager has exited
    while not all(_ended(p) for p in tree) and time.monotonic() < deadline:
        time.sleep(0.02)  # not our children: their end cannot be waited on, only seen
    survivors = [p for p in tree if not _ended(p)]
    for process in survivors:  # a teardown that hung: nothing of snapd's may stay behind
        process.kill()
    left = f"; killed {len(survivors)} that did not stop" if survivors else ""
    click.echo(f"snapd: stopped (pid {pid}){left}")


def _ended(process: psutil.Process) -> bool:
    """Gone, or a zombie. The manager is nobody's child once started, so it is reaped by init,
    which may take its time (over a second in some containers) or, as PID 1 of a container run
    without an init, never: a zombie has ended all the same."""
    try:
        return not process.is_running() or process.status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def _process_tree(pid: int) -> list[psutil.Process]:
    try:
        manager = psutil.Process(pid)
        return [manager, *manager.children(recursive=True)]
    except psutil.Error:
        return []


@cli.command()
@click.option("--wait", is_flag=True, help="Return once the snapshots are built.")
@click.pass_context
def restart(ctx: click.Context, wait: bool) -> None:
    """Stop the daemon and start it again (after a change to its settings, say).

    \b
    Example:
      snapd restart --wait
    """
    _stop(_paths())
    ctx.invoke(start, wait=wait)


@cli.command()
@click.option("-n", "--lines", default=40, show_default=True, help="How many lines to show.")
@click.option("-f", "--follow", is_flag=True, help="Keep printing lines as they come.")
def logs(lines: int, follow: bool) -> None:
    """Show the daemon's log: builds, invalidations and why, fallbacks, errors.

    \b
    Example:
      snapd logs -n 100
      snapd logs --follow
    """
    paths = _paths()
    try:
        log = open(paths.log, errors="replace")  # noqa: SIM115 (followed until Ctrl-C)
    except FileNotFoundError:
        raise click.ClickException(f"no log yet at {paths.log}") from None
    with log:
        for line in collections.deque(log, maxlen=lines):
            click.echo(line, nl=False)
        while follow:
            line = log.readline()
            if line:
                click.echo(line, nl=False)
            else:
                time.sleep(0.2)  # following a file: there is nothing to wait on


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="Print machine-readable JSON.")
def status(as_json: bool) -> None:
    """Show the daemon, its chains of snapshots and their state.

    \b
    Example:
      snapd status --json | jq '.chains[].snapshots[].state'
    """
    paths = _paths()
    reply = _ask(paths, {"op": "status"})
    if reply is None:
        if as_json:
            click.echo(json.dumps({"running": False, "rootdir": paths.rootdir}))
        else:
            click.echo(f"snapd: not running for {paths.rootdir}")
        sys.exit(3)
    reply.pop("op")
    if as_json:
        click.echo(json.dumps({"running": True, **reply}, indent=2))
        return
    _print_status(reply)


def _print_status(status: dict[str, Any]) -> None:
    """A tree: the daemon, its chains, their snapshots."""
    counts = status["counts"]
    click.echo(f"snapd: running, pid {status['pid']}, up {_age(status['uptime_seconds'])}")
    click.echo(f"  rootdir {status['rootdir']}")
    click.echo(f"  socket  {status['socket']}")
    click.echo(f"  log     {status['log']}")
    click.echo(
        f"  requests {counts['requests']}: {counts['session']} from session, "
        f"{counts['base']} from base, {counts['fallback']} cold"
    )
    for chain in status["chains"]:
        default = " (default)" if chain["key"] == status.get("default_chain") else ""
        click.echo(f"  chain {chain['key']}{default}: args {' '.join(chain['args']) or '(none)'}")
        if chain.get("differs"):
            click.echo(f"  │ split from the default by: {', '.join(chain['differs'])}")
        for snap in chain["snapshots"]:
            built = f"{snap['build_seconds']:.2f}s" if snap["build_seconds"] is not None else "-"
            memory = profile.memory_of(snap["pid"]) if snap["pid"] else None
            pss = f"{memory['pss'] / 2**20:.0f} MiB" if memory and memory["pss"] else "-"
            click.echo(
                f"  ├─ {snap['layer']:<8} {snap['state']:<9} pid {snap['pid']}  "
                f"age {_age(snap['age_seconds'])}  built in {built}  PSS {pss}  "
                f"modules {snap['modules']}  files {snap['files']}"
            )
            if snap["reason"]:
                click.echo(f"  │    {snap['reason'].strip().splitlines()[-1]}")
        for reason in chain["invalidations"][-3:]:
            click.echo(f"  └─ invalidated: {reason}")


def _age(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f}s"
    if seconds < 7200:
        return f"{seconds / 60:.0f}m"
    return f"{seconds / 3600:.1f}h"


@cli.command(
    context_settings={"ignore_unknown_options": True, "allow_extra_args": True},
    add_help_option=False,
)
def pytest() -> None:
    """Run `pytest ARGS` from the warm snapshot (all pytest options work).

    \b
    Example:
      snapd pytest tests/test_api.py::test_login -x --pdb
    """
    client.main(sys.argv[2:])  # reached only through `python -m snapd.commands`


@cli.command(context_settings={"ignore_unknown_options": True})
@click.option("--cold", is_flag=True, help="Profile one cold start of `pytest ARGS`; no daemon.")
@click.option("--json", "as_json", is_flag=True, help="Print the schema's JSON document.")
@click.option(
    "--html", "html_file", type=click.Path(dir_okay=False), help="Also write a report page."
)
@click.option(
    "--budget", type=click.FloatRange(min=0), metavar="SECONDS",
    help="Exit 1 when start-up takes longer: the cold start with --cold, else the slowest "
    "chain's build (base + session).",
)  # fmt: skip
@click.option("--top", type=click.IntRange(min=1), default=10, show_default=True,
              help="Rows in each slowest-first table.")  # fmt: skip
@click.option("--schema", "show_schema", is_flag=True, help="Print the JSON Schema and exit.")
@click.argument("pytest_args", nargs=-1, type=click.UNPROCESSED)
def stats(
    cold: bool,
    as_json: bool,
    html_file: str | None,
    budget: float | None,
    top: int,
    show_schema: bool,
    pytest_args: tuple[str, ...],
) -> None:
    """Where start-up time goes: imports, conftests, collection, session fixtures, memory.

    Without --cold: the running daemon's requests by layer, its snapshots' build times and
    memory (RSS, USS, PSS). With --cold: runs one instrumented cold start of `pytest ARGS`
    (configuration, conftests, collection, then the session fixtures the collected tests
    use; no test runs) and prints its breakdown. Exit codes: 0 ok, 1 over --budget,
    2 pytest stopped with an error or a session fixture failed, 3 no daemon
    running. See docs/stats.md.

    \b
    Example:
      snapd stats
      snapd stats --cold --budget 5 -- tests/test_api.py
      snapd stats --cold --json --html startup.html -- tests/ > startup.json
    """
    from snapd import report

    if show_schema:
        click.echo(json.dumps(report.SCHEMA, indent=1))
        return
    if pytest_args and not cold:
        raise click.UsageError("pytest arguments need --cold (e.g. snapd stats --cold -- tests/)")
    doc, output = _stats_document(cold, list(pytest_args), budget, top)
    _show_stats(doc, as_json, html_file, top)
    if cold and (doc["exit_code"] not in (0, 5) or doc["profile"]["failed_fixtures"]):
        # The start-up did not complete: the numbers miss what comes after the failure.
        click.echo(output.rstrip()[-4000:], err=True)
        sys.exit(2)
    if doc["over_budget"]:
        sys.exit(1)


def _stats_document(
    cold: bool, pytest_args: list[str], budget: float | None, top: int
) -> tuple[dict[str, Any], str]:
    """The stats document, and pytest's output for a cold run."""
    from snapd import report

    if cold:
        run = profile.run_cold(pytest_args, top=top)
        return report.cold_document(run, pytest_args, budget), run.output
    reply = _ask(_paths(), {"op": "status"})
    if reply is None:
        click.echo("snapd: not running (try `snapd stats --cold`)", err=True)
        sys.exit(3)
    return report.daemon_document(reply, budget), ""


def _show_stats(doc: dict[str, Any], as_json: bool, html_file: str | None, top: int) -> None:
    from snapd import report

    if as_json:
        click.echo(report.json_text(doc))
    else:
        for line in report.text_lines(doc, top):
            click.echo(line)
    if html_file:
        with open(html_file, "w", encoding="utf-8") as f:
            f.write(report.html_page(doc, top))
        click.echo(f"snapd stats: wrote {html_file}", err=True)
    if doc["over_budget"]:
        seconds = doc.get("startup_seconds") or max(
            c["startup_seconds"] or 0.0 for c in doc["chains"]
        )
        click.echo(
            f"snapd stats: start-up {seconds:.2f} s is over the budget of "
            f"{doc['budget_seconds']:.2f} s",
            err=True,
        )
