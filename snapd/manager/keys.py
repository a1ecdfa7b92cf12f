"""Which chain serves a request: split pytest arguments, and key a chain.

Options that only select tests or shape the report are per request; everything else (plugins,
ini overrides, the rootdir, options we do not know) shapes configuration and so is part of the
chain's key, with the environment minus the variables that differ between terminals and IDEs.

>>> split_args(["-x", "-k", "slow", "tests/test_a.py::test_b", "-p", "xdist"])
(['-p', 'xdist'], ['-x', '-k', 'slow', 'tests/test_a.py::test_b'])
"""

from __future__ import annotations

import fnmatch
import hashlib
import os
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
# Short flags that may be clustered, as in ``-vx`` or ``-rA`` (where ``r`` takes the rest).
_SHORT_FLAGS = {"x", "v", "q", "s", "l", "h", "V"}
_SHORT_VALUES = {"k", "m", "r", "W"}

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


def split_args(args: Sequence[str]) -> tuple[list[str], list[str]]:
    """Split ``args`` into (shaping configuration: the key, per request)."""
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
        name = arg.split("=", 1)[0]
        if name in _REQUEST_FLAGS and "=" not in arg:
            request.append(arg)
        elif name in _REQUEST_VALUE_OPTIONS or (arg[:2] in {f"-{c}" for c in _SHORT_VALUES}):
            request.append(arg)
            if _needs_separate_value(arg) and i < len(args):
                request.append(args[i])
                i += 1
        elif _is_request_cluster(arg):
            request.append(arg)
        else:
            key.append(arg)
            if "=" not in arg and not arg.startswith("--") and len(arg) > 2:
                continue  # a short option with its value attached, like -pxdist
            if "=" not in arg and i < len(args) and _looks_like_value(args[i]):
                key.append(args[i])
                i += 1
    return key, request


def _needs_separate_value(arg: str) -> bool:
    if arg.startswith("--"):
        return "=" not in arg
    return len(arg) == 2


def _is_request_cluster(arg: str) -> bool:
    """``-vx``, ``-vvs``, ``-rA``, ``-xkfoo``: flags, then maybe one value option with its value."""
    if arg.startswith("--") or len(arg) < 2:
        return False
    for char in arg[1:]:
        if char in _SHORT_VALUES:
            return True
        if char not in _SHORT_FLAGS:
            return False
    return True


def _looks_like_value(arg: str) -> bool:
    # An unknown option's next word is its value unless it is an option or a test path.
    return not arg.startswith("-") and "::" not in arg and not os.path.exists(arg)


def _volatile(name: str, patterns: Sequence[str]) -> bool:
    return any(fnmatch.fnmatchcase(name, pattern) for pattern in patterns)


def stable_env(
    env: Mapping[str, str], volatile: Sequence[str] = DEFAULT_VOLATILE_ENV
) -> dict[str, str]:
    """The environment a snapshot is built with: ``env`` minus the volatile variables."""
    return {name: value for name, value in env.items() if not _volatile(name, volatile)}


def volatile_patterns(env: Mapping[str, str]) -> tuple[str, ...]:
    """The default patterns plus ``SNAPD_ENV_IGNORE`` (comma-separated globs) from ``env``."""
    extra = [p.strip() for p in env.get("SNAPD_ENV_IGNORE", "").split(",") if p.strip()]
    return (*DEFAULT_VOLATILE_ENV, *extra)


def chain_key(interpreter: str, key_args: Sequence[str], env: Mapping[str, str]) -> str:
    """A short stable id for the chain that serves requests with these inputs."""
    blob = msgpack.packb([interpreter, list(key_args), sorted(env.items())], use_bin_type=True)
    return hashlib.sha256(blob).hexdigest()[:12]
