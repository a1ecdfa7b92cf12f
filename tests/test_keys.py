"""Which arguments and environment variables choose a chain, and which only shape one request."""

from __future__ import annotations

import fnmatch
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from snapd.manager.keys import (
    DEFAULT_VOLATILE_ENV,
    chain_key,
    split_args,
    stable_env,
    volatile_patterns,
)

PYTHON = "/usr/local/bin/python3.12"

# -- split_args ------------------------------------------------------------------------------

REQUEST_ONLY = [
    ["tests/test_a.py::test_b"],
    ["tests/test_a.py::TestC::test_d[param-1]", "tests/test_b.py"],
    ["-k", "slow and not db"],
    ["-kslow"],
    ["-m", "not integration"],
    ["-mslow"],
    ["--tb=short"],
    ["--tb", "short"],
    ["-x"],
    ["-vx"],
    ["-vvs"],
    ["-vvvv"],
    ["-rA"],
    ["-r", "fE"],
    ["-xkfoo"],
    ["-xk", "foo"],
    ["-sW", "error"],
    ["-W", "error::DeprecationWarning"],
    ["-Werror"],
    ["--maxfail=2"],
    ["--maxfail", "2"],
    ["--durations", "10"],
    ["--junitxml", "out.xml"],
    ["--capture=no"],
    ["-q", "--lf", "--sw", "--pdb", "--co", "--no-header"],
    ["--deselect", "tests/test_a.py::test_b"],
    ["-"],
    ["-k"],
]


@pytest.mark.parametrize("args", REQUEST_ONLY, ids=" ".join)
def test_selection_and_reporting_args_are_per_request(args: list[str]) -> None:
    assert split_args(args) == ([], args)


KEY_ONLY = [
    ["-p", "xdist"],
    ["-p", "no:xdist"],
    ["-pxdist"],
    ["-o", "addopts=-x"],
    ["-o", "xfail_strict=true"],
    ["-oxfail_strict=true"],
    ["--override-ini=python_files=check_*.py"],
    ["--import-mode=importlib"],
    ["-n", "4"],
    ["--reuse-db"],
    ["--ds", "settings.test"],
    ["--cov=app"],
]


@pytest.mark.parametrize("args", KEY_ONLY, ids=" ".join)
def test_configuration_and_unknown_args_are_in_the_key(args: list[str]) -> None:
    assert split_args(args) == (args, [])


@pytest.mark.parametrize("args", [["-p", "no:cacheprovider"], ["-pno:cacheprovider"]])
def test_disabling_the_cache_is_per_request(args: list[str]) -> None:
    # Common in CI and safe: every child reads the cache afresh.
    assert split_args([*args, "t.py"]) == ([], [*args, "t.py"])


@pytest.mark.parametrize(
    "args", [["-p", "no:randomly"], ["-pno:randomly"], ["-p", "randomly"], ["-prandomly"]]
)
def test_turning_pytest_randomly_on_or_off_is_per_request(args: list[str]) -> None:
    # All it does is per run; the snapshot's random state does not reach a run.
    assert split_args(["-v", *args, "t.py"]) == ([], ["-v", *args, "t.py"])


def test_doctest_example() -> None:
    assert split_args(["-x", "-k", "slow", "tests/test_a.py::test_b", "-p", "xdist"]) == (
        ["-p", "xdist"],
        ["-x", "-k", "slow", "tests/test_a.py::test_b"],
    )


def test_mixed_args_keep_their_order_on_each_side() -> None:
    args = [
        "-x", "-p", "xdist", "tests/a.py::t", "-k", "slow", "--tb=short", "-n", "2",
        "-vv", "-o", "addopts=", "-rA", "tests/b.py",
    ]  # fmt: skip
    assert split_args(args) == (
        ["-p", "xdist", "-n", "2", "-o", "addopts="],
        ["-x", "tests/a.py::t", "-k", "slow", "--tb=short", "-vv", "-rA", "tests/b.py"],
    )


def test_value_of_a_request_option_is_not_mistaken_for_a_key_option() -> None:
    # "-p" here is the value of -k (a keyword expression), not the plugin option.
    assert split_args(["-k", "-p", "xdist"]) == ([], ["-k", "-p", "xdist"])
    assert split_args(["--tb", "no", "-p", "xdist"]) == (["-p", "xdist"], ["--tb", "no"])


def test_request_flag_with_a_value_is_not_taken_as_the_flag() -> None:
    # --lf takes no value: "--lf=x" is something pytest does not know, so it keys a chain.
    assert split_args(["--lf=x"]) == (["--lf=x"], [])


def test_unknown_option_takes_a_plain_word_as_its_value() -> None:
    assert split_args(["--myplugin-mode", "fast", "tests/a.py"]) == (
        ["--myplugin-mode", "fast"],
        ["tests/a.py"],
    )


def test_unknown_option_with_attached_value() -> None:
    assert split_args(["--myplugin-mode=fast", "fast"]) == (["--myplugin-mode=fast"], ["fast"])


def test_unknown_flag_before_a_node_id_does_not_swallow_it() -> None:
    assert split_args(["--reuse-db", "tests/test_a.py::test_b"]) == (
        ["--reuse-db"],
        ["tests/test_a.py::test_b"],
    )


def test_unknown_flag_before_an_option_does_not_swallow_it() -> None:
    assert split_args(["--reuse-db", "-x", "--nomigrations", "-p", "xdist"]) == (
        ["--reuse-db", "--nomigrations", "-p", "xdist"],
        ["-x"],
    )


def test_unknown_flag_before_an_existing_path_does_not_swallow_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "tests").mkdir()
    (tmp_path / "tests" / "test_a.py").write_text("def test_a(): pass\n")
    monkeypatch.chdir(tmp_path)
    assert split_args(["--reuse-db", "tests/test_a.py"]) == (["--reuse-db"], ["tests/test_a.py"])
    assert split_args(["--reuse-db", "tests"]) == (["--reuse-db"], ["tests"])


def test_unknown_short_option_with_attached_value_takes_nothing_more() -> None:
    assert split_args(["-n4", "tests"]) == (["-n4"], ["tests"])


def test_double_dash_makes_the_rest_per_request() -> None:
    assert split_args(["-x", "--", "-p", "xdist"]) == ([], ["-x", "--", "-p", "xdist"])
    assert split_args(["-p", "xdist", "--", "tests/a.py", "-n"]) == (
        ["-p", "xdist"],
        ["--", "tests/a.py", "-n"],
    )
    assert split_args(["--"]) == ([], ["--"])


def test_empty() -> None:
    assert split_args([]) == ([], [])


def test_split_loses_and_invents_nothing() -> None:
    args = ["-vp", "xdist", "-xkfoo", "-c", "ci.ini", "--", "-k", "x", "-o", "a=b", "-s"]
    key, request = split_args(args)
    assert sorted(key + request) == sorted(args)


# Bugs: a cluster of request flags ending in a key option that takes a separate value (-vp
# xdist = -v -p xdist), and a key option whose value names an existing path (-c ci.ini).


@pytest.mark.parametrize("cluster", ["-vp", "-xp", "-vsp"])
def test_cluster_ending_in_a_key_option_keeps_its_value_in_the_key(cluster: str) -> None:
    key, request = split_args([cluster, "xdist", "tests/a.py"])
    assert "xdist" in key
    assert "xdist" not in request
    assert split_args([cluster, "xdist"])[0] != split_args([cluster, "randomly"])[0]


@pytest.mark.parametrize("option", ["-c", "--config-file", "--rootdir", "--confcutdir"])
def test_key_option_whose_value_is_an_existing_path_keeps_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, option: str
) -> None:
    (tmp_path / "ci").mkdir()
    (tmp_path / "ci" / "pytest.ini").write_text("[pytest]\n")
    monkeypatch.chdir(tmp_path)
    value = "ci/pytest.ini" if option in ("-c", "--config-file") else "ci"
    assert split_args([option, value, "-x"]) == ([option, value], ["-x"])


# -- stable_env / volatile_patterns ----------------------------------------------------------

VOLATILE = {
    "_": "/usr/bin/env",
    "PWD": "/workspaces/app",
    "OLDPWD": "/",
    "SHLVL": "2",
    "TERM": "xterm-256color",
    "TERM_PROGRAM": "vscode",
    "TERM_PROGRAM_VERSION": "1.96.2",
    "COLORTERM": "truecolor",
    "COLUMNS": "120",
    "LINES": "40",
    "VSCODE_IPC_HOOK_CLI": "/tmp/vscode-ipc-1.sock",
    "VSCODE_GIT_IPC_HANDLE": "/tmp/vscode-git-1.sock",
    "SSH_AUTH_SOCK": "/tmp/vscode-ssh-auth-1.sock",
    "SSH_CONNECTION": "10.0.0.1 5000 10.0.0.2 22",
    "SSH_TTY": "/dev/pts/0",
    "DISPLAY": ":1",
    "WAYLAND_DISPLAY": "vscode-wayland-1.sock",
    "TMUX": "/tmp/tmux-1000/default,1,0",
    "TMUX_PANE": "%1",
    "LS_COLORS": "di=01;34",
    "GIT_ASKPASS": "/vscode/askpass.sh",
    "BROWSER": "/vscode/browser.sh",
    "REMOTE_CONTAINERS_IPC": "/tmp/vscode-remote-containers-ipc-1.sock",
    "PYTEST_CURRENT_TEST": "tests/a.py::t (call)",
    "SNAPD_ENV_IGNORE": "",
}
STABLE = {
    "HOME": "/home/vscode",
    "USER": "vscode",
    "LANG": "C.UTF-8",
    "DJANGO_SETTINGS_MODULE": "app.settings.test",
    "PYTHONPATH": "/workspaces/app/src",
    "DATABASE_URL": "postgres://db/app",
    "VIRTUAL_ENV": "/workspaces/app/.venv",
    "PYTHONHASHSEED": "0",
    "TERMS_OF_USE": "x",  # TERM and TERM_* are volatile, not every name starting with TERM
}


def test_stable_env_drops_volatile_and_keeps_the_rest() -> None:
    env = {**VOLATILE, **STABLE}
    assert stable_env(env) == STABLE


@pytest.mark.parametrize("name", sorted(VOLATILE))
def test_each_volatile_variable_is_dropped(name: str) -> None:
    assert stable_env({name: "x", "HOME": "/root"}) == {"HOME": "/root"}


@pytest.mark.parametrize("name", sorted(STABLE))
def test_each_stable_variable_is_kept(name: str) -> None:
    assert stable_env({name: "x"}) == {name: "x"}


def test_stable_env_is_case_sensitive_and_does_not_mutate() -> None:
    env = {"term": "x", "Pwd": "y", "TERM": "z"}
    assert stable_env(env) == {"term": "x", "Pwd": "y"}
    assert env == {"term": "x", "Pwd": "y", "TERM": "z"}


def test_stable_env_with_explicit_patterns() -> None:
    env = {"HOME": "/root", "TERM": "xterm", "MY_TOKEN": "1"}
    assert stable_env(env, ("MY_*",)) == {"HOME": "/root", "TERM": "xterm"}
    assert stable_env(env, ()) == env


_GLOB = st.text(alphabet="AB_*?[]!-\n", max_size=6)


@given(st.lists(_GLOB, max_size=4), st.text(alphabet="AB_*?[]!-\n", max_size=6))
def test_stable_env_matches_as_fnmatchcase_does(patterns: list[str], name: str) -> None:
    volatile = any(fnmatch.fnmatchcase(name, pattern) for pattern in patterns)
    assert stable_env({name: "x"}, patterns) == ({} if volatile else {name: "x"})


def test_volatile_patterns_default() -> None:
    assert volatile_patterns() == DEFAULT_VOLATILE_ENV
    assert volatile_patterns(()) == DEFAULT_VOLATILE_ENV


def test_volatile_patterns_add_the_configured_env_ignore() -> None:
    env = {
        "CI_JOB_ID": "42",
        "CI_JOB_NAME": "test",
        "BUILD_ID": "7",
        "BUILD_IDS": "kept: the pattern is exact",
        "CI_PIPELINE": "kept",
        "HOME": "/root",
    }
    patterns = volatile_patterns(("CI_JOB_*", "BUILD_ID"))
    assert patterns[: len(DEFAULT_VOLATILE_ENV)] == DEFAULT_VOLATILE_ENV
    assert patterns[len(DEFAULT_VOLATILE_ENV) :] == ("CI_JOB_*", "BUILD_ID")
    assert stable_env(env, patterns) == {
        "BUILD_IDS": "kept: the pattern is exact",
        "CI_PIPELINE": "kept",
        "HOME": "/root",
    }


# -- chain_key -------------------------------------------------------------------------------


def test_chain_key_is_short_hex_and_stable() -> None:
    key = chain_key(PYTHON, ["-p", "xdist"], {"HOME": "/root", "A": "1"})
    assert re.fullmatch(r"[0-9a-f]{12}", key)
    assert chain_key(PYTHON, ("-p", "xdist"), {"A": "1", "HOME": "/root"}) == key


def test_chain_key_is_the_same_in_another_process() -> None:
    # Keys name chains in logs and `snapd status` across manager restarts: no hash() salt.
    code = (
        "from snapd.manager.keys import chain_key; "
        f"print(chain_key({PYTHON!r}, ['-p', 'xdist'], {{'HOME': '/root', 'A': '1'}}))"
    )
    env = {**os.environ, "PYTHONHASHSEED": "12345"}
    result = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == chain_key(PYTHON, ["-p", "xdist"], {"A": "1", "HOME": "/root"})


@pytest.mark.parametrize(
    ("interpreter", "args", "env"),
    [
        ("/usr/bin/python3.11", ["-p", "xdist"], {"HOME": "/root"}),
        (PYTHON, ["-p", "randomly"], {"HOME": "/root"}),
        (PYTHON, ["-p", "xdist", "-n", "2"], {"HOME": "/root"}),
        (PYTHON, [], {"HOME": "/root"}),
        (PYTHON, ["-p", "xdist"], {"HOME": "/home/other"}),
        (PYTHON, ["-p", "xdist"], {"HOME": "/root", "DJANGO_SETTINGS_MODULE": "s"}),
        (PYTHON, ["-p", "xdist"], {}),
        # Boundaries between items must not blur: these are not the same inputs.
        (PYTHON, ["-p xdist"], {"HOME": "/root"}),
        (PYTHON, ["-pxdist"], {"HOME": "/root"}),
        (PYTHON, ["-p", "xdist"], {"HOME=/root": ""}),
    ],
)
def test_chain_key_differs_when_an_input_differs(
    interpreter: str, args: list[str], env: dict[str, str]
) -> None:
    base = chain_key(PYTHON, ["-p", "xdist"], {"HOME": "/root"})
    assert chain_key(interpreter, args, env) != base


def test_chain_key_depends_on_key_arg_order() -> None:
    # Plugin order can matter (hook order), so it is part of the key.
    a = chain_key(PYTHON, ["-p", "a", "-p", "b"], {})
    b = chain_key(PYTHON, ["-p", "b", "-p", "a"], {})
    assert a != b


def _key_for(args: list[str], env: dict[str, str], env_ignore: tuple[str, ...] = ()) -> str:
    """What the manager does for a request: the key of the chain that serves it."""
    key_args, _ = split_args(args)
    return chain_key(PYTHON, key_args, stable_env(env, volatile_patterns(env_ignore)))


# The environment `snapd start` gets from a devcontainer's postStartCommand.
POST_START_ENV = {
    "HOME": "/home/vscode",
    "USER": "vscode",
    "HOSTNAME": "3f2a9c1b7d4e",
    "SHELL": "/bin/bash",
    "LANG": "C.UTF-8",
    "PATH": "/workspaces/app/.venv/bin:/usr/local/bin:/usr/bin:/bin",
    "VIRTUAL_ENV": "/workspaces/app/.venv",
    "PYTHONPATH": "/workspaces/app/src",
    "DJANGO_SETTINGS_MODULE": "app.settings.test",
    "DATABASE_URL": "postgres://postgres@db/app",
    "PWD": "/workspaces/app",
    "SHLVL": "1",
    "_": "/workspaces/app/.venv/bin/snapd",
}

# The same container seen from a VS Code integrated terminal.
VSCODE_TERMINAL_ENV = {
    **POST_START_ENV,
    "PATH": "/vscode/vscode-server/bin/linux-x64/abc123/bin/remote-cli:" + POST_START_ENV["PATH"],
    "PWD": "/workspaces/app/tests",
    "OLDPWD": "/workspaces/app",
    "SHLVL": "2",
    "_": "/workspaces/app/.venv/bin/snapd",
    "TERM": "xterm-256color",
    "TERM_PROGRAM": "vscode",
    "TERM_PROGRAM_VERSION": "1.96.2",
    "COLORTERM": "truecolor",
    "COLUMNS": "187",
    "LINES": "24",
    "VSCODE_IPC_HOOK_CLI": "/tmp/vscode-ipc-3e0c.sock",
    "VSCODE_GIT_IPC_HANDLE": "/tmp/vscode-git-9a1b.sock",
    "VSCODE_GIT_ASKPASS_NODE": "/vscode/vscode-server/bin/linux-x64/abc123/node",
    "VSCODE_GIT_ASKPASS_MAIN": "/vscode/vscode-server/bin/linux-x64/abc123/askpass-main.js",
    "VSCODE_GIT_ASKPASS_EXTRA_ARGS": "",
    "VSCODE_INJECTION": "1",
    "VSCODE_NONCE": "f00d",
    "GIT_ASKPASS": "/vscode/vscode-server/bin/linux-x64/abc123/askpass.sh",
    "BROWSER": "/vscode/vscode-server/bin/linux-x64/abc123/helpers/browser.sh",
    "REMOTE_CONTAINERS_IPC": "/tmp/vscode-remote-containers-ipc-77.sock",
    "REMOTE_CONTAINERS_SOCKETS": '["/tmp/vscode-ssh-auth-77.sock"]',
    "REMOTE_CONTAINERS_DISPLAY_SOCK": "/tmp/.X11-unix/X1",
    "SSH_AUTH_SOCK": "/tmp/vscode-ssh-auth-77.sock",
    "DISPLAY": ":1",
    "WAYLAND_DISPLAY": "vscode-wayland-77.sock",
    "LS_COLORS": "rs=0:di=01;34:ln=01;36",
}


def test_devcontainer_post_start_and_vscode_terminal_share_a_chain() -> None:
    started = _key_for([], POST_START_ENV)
    assert _key_for([], VSCODE_TERMINAL_ENV) == started
    # Per-request arguments do not split it either.
    assert _key_for(
        ["tests/test_a.py::test_b", "-vv", "--tb=short", "-x"], VSCODE_TERMINAL_ENV
    ) == (started)


def test_a_stable_difference_still_splits_the_chain() -> None:
    started = _key_for([], POST_START_ENV)
    assert _key_for([], {**VSCODE_TERMINAL_ENV, "DJANGO_SETTINGS_MODULE": "app.settings.dev"}) != (
        started
    )
    assert _key_for([], {**VSCODE_TERMINAL_ENV, "PYTHONPATH": ""}) != started
    assert _key_for(["-p", "xdist"], VSCODE_TERMINAL_ENV) != started


def test_configured_env_ignore_hides_a_variable() -> None:
    post_start = {**POST_START_ENV, "CI_RUN": "1"}
    terminal = {**VSCODE_TERMINAL_ENV, "CI_RUN": "2"}
    assert _key_for([], post_start, ("CI_*",)) == _key_for([], terminal, ("CI_*",))
    # Without the setting the variable is stable, and so it splits.
    assert _key_for([], {**POST_START_ENV, "CI_RUN": "1"}) != _key_for(
        [], {**POST_START_ENV, "CI_RUN": "2"}
    )
