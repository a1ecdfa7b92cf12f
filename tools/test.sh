#!/usr/bin/env bash
# Install snapd and its dev tools into .venv, then run every check CI runs:
# ruff, mypy --strict, the whole test suite; the core tests again on pytest 8.4 and, where pyenv
# has them, on Python 3.12 and 3.13. (tests/plugins, the plugin compatibility tests, need a venv
# of their own, since those plugins change every pytest run where they are installed: see
# tools/plugins-requirements.txt. They are not in this run yet.)
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}

# The HTML report's screenshot test needs a real browser: Debian's chromium, installed where
# this runs as root with apt, as on CI.
if ! command -v chromium >/dev/null && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  echo "== apt-get install chromium"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium >/dev/null
fi
CORE_TESTS=(tests/test_client.py tests/test_session.py)
PYTEST_ARGS=(-p no:cacheprovider -q -ra)

venv() {  # venv DIR PYTHON [extra pip args...]
  local dir=$1 python=$2
  shift 2
  "$python" -m venv "$dir"
  "$dir/bin/python" -m pip install -q --upgrade pip
  "$dir/bin/python" -m pip install -q -e '.[dev]' "$@"
}

echo "== install (.venv, $("$PYTHON" --version))"
venv .venv "$PYTHON"
echo "== ruff"
.venv/bin/ruff check snapd tests tools
.venv/bin/ruff format --check snapd tests tools
echo "== mypy --strict"
.venv/bin/mypy snapd
echo "== tests (pytest $(.venv/bin/python -c 'import pytest; print(pytest.__version__)'))"
.venv/bin/python -m pytest "${PYTEST_ARGS[@]}" --ignore=tests/plugins tests

echo "== core tests on pytest 8.4"
venv .venv-pytest8 "$PYTHON" 'pytest==8.4.*'
.venv-pytest8/bin/python -m pytest "${PYTEST_ARGS[@]}" "${CORE_TESTS[@]}"

for version in 3.12 3.13; do
  if command -v pyenv >/dev/null && prefix=$(pyenv prefix "$version" 2>/dev/null); then
    echo "== core tests on Python $version"
    venv ".venv-$version" "$prefix/bin/python3"
    ".venv-$version/bin/python" -m pytest "${PYTEST_ARGS[@]}" "${CORE_TESTS[@]}"
  else
    echo "== Python $version: not offered by pyenv here, skipped"
  fi
done

bash tools/test_plugins.sh  # the plugin compatibility leg, in a venv of its own
echo "== all checks passed"
