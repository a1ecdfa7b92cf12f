"""Which chain serves a request: split pytest arguments, and key a chain.

Options that only select tests or shape the report are per request; everything else (plugins,
ini overrides, the rootdir, options we do not know) shapes configuration and so is part of the
chain's key, with the environment minus the variables that differ between terminals and IDEs.

>>> split_args(["-x", "-k", "slow", "tests/test_a.py::test_b", "-p", "xdist"])
(['-p', 'xdist'], ['-x', '-k', 'slow', 'tests/test_a.py::test_b'])
"""

from __future__ import annotations

import fnmatch
import functools
import hashlib
import os
import re
from collections.abc import Mapping, Sequence

import msgpack

# Per-request options that take a value, long and short spellings.
_REQUEST_VALUE_OPTIONS = {
    "-k", "-m", "-r", "-W", "--maxfail", "--tb", "--capture", "--durations", "--durations-min",
    "--junitxml", "--junit-xml", "--junit-prefix", "--pythonwarnings", "--deselect", "--ignore",
    "--ignore-glob", "--color", "--code-highlight", "--log-cli-level", "--log-level",
    "--log-file", "--log-file-level", "--last-failed-no-failures", "--lfnf", "--report-log",
    "--timeout", "--pdbcls", "--show-capture", "--verbosity", "--log-format",
    "--log-date-format", "--log-cli-format", "--log-cli-date-format", "--log-file-format",
    "--log-file-date-format", "--randomly-seed", "--hypothesis-seed",
    "--hypothesis-show-statistics", "--hypothesis-verbosity", "--rootdir-relative",
}  # fmt: skip
# Per-request flags.
_REQUEST_FLAGS = {
    "-x", "-v", "-q", "-s", "-l", "-h", "-V", "--exitfirst", "--verbose", "--quiet",
    "--showlocals", "--lf", "--last-failed", "--ff", "--failed-first", "--nf", "--new-first",
    "--sw", "--stepwise", "--sw-skip", "--stepwise-skip", "--pdb", "--trace", "--co",
    "--collect-only", "--collectonly", "--no-header", "--no-summary", "--setup-show",
    "--setup-only", "--setup-plan", "--fixtures", "--funcargs", "--fixtures-per-test",
    "--runxfail", "--strict-markers", "--strict-config", "--strict", "--full-trace",
    "--disable-warnings", "--disable-pytest-warnings", "--version", "--help", "--cache-show",
    "--cache-clear", "--doctest-modules", "--doctest-continue-on-failure", "--no-showlocals",
    "--force-short-summary", "--keep-duplicates", "--continue-on-collection-errors",
    "--trace-config", "--debug", "--markers", "-vv", "-vvv", "-qq", "--sw-reset",
    "--stepwise-reset", "--log-disable", "--hypothesis-explain",
}  # fmt: skip
# Options that shape configuration and always take a value (so the next word is theirs).
_KEY_VALUE_OPTIONS = {
    "-p", "-c", "-o", "-n", "--config-file", "--rootdir", "--confcutdir", "--override-ini",
    "--basetemp", "--import-mode", "--numprocesses", "--dist", "--ds", "--dc",
    "--cov-report", "--cov-config", "--cov-fail-under", "--asyncio-mode", "--maxprocesses",
}  # fmt: skip
# Short options: flags that may be clustered (``-vx``); per-request ones taking a value
# (``-k EXPR``, ``-rA``); everything else shapes configuration.
_SHORT_FLAGS = {"x", "v", "q", "s", "l", "h", "V"}
# ``-p`` values that are safe per request: without the cache every child reads it afresh
# anyway (common in CI); snapd's own plugin does nothing inside a request child.
# pytest-randomly on or off: all it does is per run (its seed, made or read at configure
# time; the order of the run's own items; reseeding before each test), and what it did in the
# snapshot does not reach a run: Python's ``random`` is reseeded at fork, the built-in hooks
# reseed NumPy's and Faker's, and session fixtures that drew random numbers are set up by each
# run (``session._prewarm``).
_REQUEST_PLUGINS = {"no:cacheprovider", "snapd", "no:randomly", "randomly"}
_SHORT_VALUES = {"k", "m", "r", "W"}
_SHORT_KEY_VALUES = {"p", "c", "o", "n"}

DEFAULT_VOLATILE_ENV = (
    "_", "PWD", "OLDPWD", "SHLVL", "TERM", "TERM_*", "COLORTERM", "COLUMNS", "LINES", "PS1",
    "PS2", "PS4", "PROMPT_COMMAND", "DISPLAY", "WAYLAND_DISPLAY", "WINDOWID", "TMUX", "TMUX_*",
    "STY", "SSH_*", "XDG_SESSION_*", "XDG_SEAT", "XDG_VTNR", "DBUS_SESSION_BUS_ADDRESS",
    "VSCODE_*", "GIT_ASKPASS", "ITERM_*", "KONSOLE_*", "GNOME_TERMINAL_*", "VTE_VERSION",
    "WT_SESSION", "WT_PROFILE_ID", "LS_COLORS", "PYCHARM_*", "JETBRAINS_*",
    "TERMINAL_EMULATOR", "GPG_TTY", "MAIL", "PATH", "SNAPD_*", "PYTEST_CURRENT_TEST",
    "NO_COLOR", "FORCE_COLOR", "PY_COLORS", "CLICOLOR", "CLICOLOR_FORCE", "LESS", "PAGER",
    "REMOTE_CONTAINERS_*", "BROWSER", "HISTFILE", "LANGUAGE_SERVER_*", "ELECTRON_RUN_AS_NODE",
    "APPLICATION_INSIGHTS_*",
)  # fmt: skip


def split_args(args: Sequence[str], cwd: str = ".") -> tuple[list[str], list[str]]:
    """Split ``args`` into (shaping configuration: the key, per request).

    ``cwd`` is the client's: an unknown option's next word is its value unless it names a
    path there (or is an option, or a node id).
    """
    key: list[str] = []
    request: list[str] = []
    i = 0
    while i < len(args):
        arg = args[i]
        i += 1
        if arg == "--":
            request.extend(args[i - 1 :])
            break
        if not arg.startswith("-") or arg == "-":
            request.append(arg)
            continue
        if arg.startswith("-p") and _plugin(args, i) in _REQUEST_PLUGINS:
            request.extend(args[i - 1 : i + (arg == "-p")])
            i += arg == "-p"
            continue
        kind, takes = _long(arg) if arg.startswith("--") else _short(arg)
        if kind == "unknown":
            # Not known to be safe: it shapes configuration, and may take the next word.
            kind = "key"
            takes = takes and i < len(args) and _looks_like_value(args[i], cwd)
        target = key if kind == "key" else request
        target.append(arg)
        if takes and i < len(args):
            target.append(args[i])
            i += 1
    return key, request


def _plugin(args: Sequence[str], i: int) -> str:
    """The plugin named by the ``-p`` word just read (at ``i - 1``)."""
    if args[i - 1] != "-p":
        return args[i - 1][2:]
    return args[i] if i < len(args) else ""


def _long(arg: str) -> tuple[str, bool]:
    """(``request``, ``key`` or ``unknown``; whether the next word is its value)."""
    name, attached = arg.split("=", 1)[0], "=" in arg
    if name in _REQUEST_FLAGS and not attached:
        return "request", False
    if name in _REQUEST_VALUE_OPTIONS:
        return "request", not attached
    if name in _KEY_VALUE_OPTIONS:
        return "key", not attached
    return "unknown", not attached


def _short(arg: str) -> tuple[str, bool]:
    """As ``_long``, for a word of clustered short options: ``-vx``, ``-rA``, ``-vpxdist``."""
    for index, char in enumerate(arg[1:], start=2):
        if char in _SHORT_FLAGS:
            continue
        value_attached = index < len(arg)
        if char in _SHORT_VALUES:
            return "request", not value_attached
        if char in _SHORT_KEY_VALUES:
            return "key", not value_attached
        return "unknown", len(arg) == 2
    return "request", False


def _looks_like_value(arg: str, cwd: str) -> bool:
    if arg.startswith("-") or "::" in arg:
        return False
    return not os.path.exists(os.path.join(cwd, arg))


@functools.lru_cache(maxsize=16)
def _volatile(patterns: tuple[str, ...]) -> re.Pattern[str]:
    # One regex for all the globs, as fnmatchcase matches each: run on every request, a glob
    # at a time was a millisecond or more for a usual environment.
    globs = "|".join(fnmatch.translate(pattern) for pattern in patterns)
    return re.compile(globs or "(?!)")  # no globs: a regex that never matches


def stable_env(
    env: Mapping[str, str], volatile: Sequence[str] = DEFAULT_VOLATILE_ENV
) -> dict[str, str]:
    """The environment a snapshot is built with: ``env`` minus the volatile variables."""
    match = _volatile(tuple(volatile)).match
    return {name: value for name, value in env.items() if not match(name)}


def volatile_patterns(extra: Sequence[str] = ()) -> tuple[str, ...]:
    """The default patterns plus the configured ``env_ignore`` globs."""
    return (*DEFAULT_VOLATILE_ENV, *extra)


def chain_key(
    interpreter: str, key_args: Sequence[str], env: Mapping[str, str], cwd: str = ""
) -> str:
    """A short stable id for the chain that serves requests with these inputs.

    ``cwd`` counts only where the key arguments may name paths relative to it.
    """
    blob = msgpack.packb([interpreter, list(key_args), sorted(env.items()), cwd], use_bin_type=True)
    return hashlib.sha256(blob).hexdigest()[:12]
