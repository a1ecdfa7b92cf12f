#!/usr/bin/env bash
# Install snapd and its dev tools into .venv, then run every check CI runs:
#   ruff and mypy --strict;
#   the whole test suite on 2 xdist workers, then the few `serial` tests on their own;
#   the `core` tests (what depends on the pytest or Python version: pytest internals snapd
#   uses, terminal and exit-code parity) again on pytest 8.4 and, where pyenv has them, on
#   Python 3.12 and 3.13, those three legs side by side;
#   the plugin compatibility tests (tests/plugins), in a venv of their own, since those plugins
#   change every pytest run where they are installed (tools/test_plugins.sh).
# Each "==" line says how many seconds the script had run by then.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
PYTHON=$("$PYTHON" -c 'import sys; print(sys.executable)') # past any pyenv shim
PYTEST_ARGS=(-p no:cacheprovider -q -ra --ignore=tests/plugins)
LOGS=$(mktemp -d)
trap 'rm -rf "$LOGS"' EXIT

step() { echo "== $* [${SECONDS}s]"; }

# wait_or_show PID LOG WHAT: wait for a background job; if it failed, show its log and stop.
wait_or_show() {
  if ! wait "$1"; then
    cat "$2"
    echo "== $3 failed"
    exit 1
  fi
}

# The HTML report's screenshot test needs a real browser: Debian's chromium; the plugin leg's
# PostgreSQL test, PostgreSQL's programs. Both are installed where this runs as root with apt,
# as on CI. They download while the venvs install.
packages=()
command -v chromium >/dev/null || packages+=(chromium)
command -v initdb >/dev/null || compgen -G "/usr/lib/postgresql/*/bin/initdb" >/dev/null ||
  packages+=(postgresql)
apt_pid=
if [ ${#packages[@]} -gt 0 ] && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  step "apt-get install ${packages[*]} (in the background)"
  (
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${packages[@]}"
  ) >"$LOGS/apt" 2>&1 &
  apt_pid=$!
fi

# uv installs a venv in seconds where pip took about 35 s each; it comes from PyPI, into .venv.
export UV_PYTHON_DOWNLOADS=never # the interpreters on this machine, never one downloaded
# Bytecode now, as pip compiles it: else, where PYTHONDONTWRITEBYTECODE is set, each of the
# hundreds of Python processes the tests start would compile pytest and its plugins again.
export UV_COMPILE_BYTECODE=1
export UV_LINK_MODE=copy # the cache may be on another filesystem: no warning about hardlinks

step "install (.venv, $("$PYTHON" --version))"
"$PYTHON" -m venv .venv
.venv/bin/python -m pip install -q 'uv>=0.8'
UV=$PWD/.venv/bin/uv
"$UV" pip install -q -p .venv/bin/python -e '.[dev]'

# warm VENV: cache what a user's machine has cached after its first run, and what each of the
# hundreds of Python processes the tests start would otherwise redo where
# PYTHONDONTWRITEBYTECODE is set: snapd's bytecode (an editable install has none), and
# pytest's assertion-rewritten copies of its plugins' modules. Rewriting hypothesis's alone
# took each pytest process 1.4 CPU-s more: a core leg took 115 CPU-s instead of 52.
warm() {
  "$1/bin/python" -m compileall -q snapd >/dev/null
  env -u PYTHONDONTWRITEBYTECODE "$1/bin/python" -m pytest -qq --co tests/test_config.py >/dev/null
}
warm .venv

# venv DIR PYTHON [requirement...]: a fresh, warm venv with snapd and what its tests need.
venv() {
  "$UV" venv -q --clear -p "$2" "$1"
  "$UV" pip install -q -p "$1/bin/python" -e '.[test]' "${@:3}"
  warm "$1"
}

# The core legs: their names, venvs, interpreters and what each pins.
NAMES=("pytest 8.4") VENVS=(.venv-pytest8) PYTHONS=("$PYTHON") PINS=('pytest==8.4.*')
for version in 3.12 3.13; do
  if command -v pyenv >/dev/null && prefix=$(pyenv prefix "$version" 2>/dev/null); then
    NAMES+=("Python $version") VENVS+=(".venv-$version") PYTHONS+=("$prefix/bin/python3") PINS+=("")
  else
    echo "== Python $version: not offered by pyenv here, its core leg is skipped"
  fi
done

# Their venvs install in the background while ruff and mypy run; one after another, since each
# builds snapd's editable wheel in the source tree.
step "install the venvs of the core legs (in the background)"
(
  for i in "${!NAMES[@]}"; do
    venv "${VENVS[$i]}" "${PYTHONS[$i]}" ${PINS[$i]:+"${PINS[$i]}"}
  done
) >"$LOGS/venvs" 2>&1 &
venvs_pid=$!

step "ruff"
.venv/bin/ruff check snapd tests tools
.venv/bin/ruff format --check snapd tests tools
step "mypy --strict"
.venv/bin/mypy snapd

wait_or_show "$venvs_pid" "$LOGS/venvs" "installing the core legs' venvs"
if [ -n "$apt_pid" ]; then
  wait_or_show "$apt_pid" "$LOGS/apt" "apt-get install ${packages[*]}"
fi

# The machine has 2 cores. --dist loadgroup keeps each module that shares a module-scoped
# fixture (marked xdist_group) on one worker, so the fixture is built once.
step "tests (pytest $(.venv/bin/python -c 'import pytest; print(pytest.__version__)'), 2 workers)"
.venv/bin/python -m pytest "${PYTEST_ARGS[@]}" -n 2 --dist loadgroup -m "not serial" tests
# A serial test changes snapd's own sources: every daemon running beside it would restart.
step "serial tests"
.venv/bin/python -m pytest "${PYTEST_ARGS[@]}" -m serial tests

# The core legs run side by side, one process each: together they keep both cores busy. Each
# one's output is shown whole once all have ended.
step "core tests on ${NAMES[*]} (side by side)"
pids=()
for i in "${!NAMES[@]}"; do
  "${VENVS[$i]}/bin/python" -m pytest "${PYTEST_ARGS[@]}" -m core tests >"$LOGS/core-$i" 2>&1 &
  pids+=($!)
done
failed=()
for i in "${!NAMES[@]}"; do
  if wait "${pids[$i]}"; then result=passed; else result=FAILED && failed+=("${NAMES[$i]}"); fi
  echo "== core tests on ${NAMES[$i]}: $result"
  cat "$LOGS/core-$i"
done
if [ ${#failed[@]} -gt 0 ]; then
  echo "== core tests failed on: ${failed[*]} [${SECONDS}s]"
  exit 1
fi

# The plugin compatibility leg, in a venv of its own that this uv installs (see the script).
step "plugin tests"
PYTHON=$PYTHON UV=$UV bash tools/test_plugins.sh

step "all checks passed"
