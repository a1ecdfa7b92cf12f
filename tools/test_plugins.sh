#!/usr/bin/env bash
# The plugin compatibility leg: tests/plugins, snapd against the pytest plugins people use
# (pytest-django on SQLite and on a real PostgreSQL, pytest-asyncio, hypothesis,
# pytest-randomly, pytest-mock, pytest-cov, pytest-xdist, pytest-timeout), each test showing
# plain pytest's outcomes. Those plugins change every pytest run of the environment they are
# installed in (pytest-randomly reorders and reseeds every run), so they get a venv of their
# own: .venv-plugins, from tools/plugins-requirements.txt and this package.
#
# PostgreSQL's programs come from Debian's packages (installed here when running as root and
# missing); the tests start a private cluster themselves. Every test that starts processes
# has a timeout (pytest-timeout), and the whole leg one more (PLUGINS_TIMEOUT seconds).
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
VENV=${PLUGINS_VENV:-.venv-plugins}

pg_installed() {
  command -v initdb >/dev/null || compgen -G "/usr/lib/postgresql/*/bin/initdb" >/dev/null
}
if ! pg_installed && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  echo "== apt-get install postgresql"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends postgresql \
    >/dev/null
fi
if ! pg_installed; then
  echo "PostgreSQL's programs are missing (apt-get install postgresql): cannot run the leg" >&2
  exit 1
fi

# Installed once per set of requirements: a second run of the leg installs nothing.
stamp=$(cat tools/plugins-requirements.txt pyproject.toml | sha256sum | cut -c1-16)
if [ "$(cat "$VENV/.installed" 2>/dev/null)" != "$stamp" ]; then
  echo "== install ($VENV, $("$PYTHON" --version))"
  rm -rf "$VENV"
  if [ -n "${UV:-}" ]; then # tools/test.sh passes its uv: seconds where pip takes a minute
    "$UV" venv -q -p "$PYTHON" "$VENV"
    "$UV" pip install -q -p "$VENV/bin/python" -e '.[dev]' -r tools/plugins-requirements.txt
  else
    "$PYTHON" -m venv "$VENV"
    "$VENV/bin/python" -m pip install -q -e '.[dev]' -r tools/plugins-requirements.txt
  fi
  echo "$stamp" >"$VENV/.installed"
fi
# Warm, as tools/test.sh warms its venvs: snapd's bytecode and pytest's assertion-rewritten
# copies of the plugins' modules, written once rather than redone by each of the leg's
# Python processes where PYTHONDONTWRITEBYTECODE is set.
"$VENV/bin/python" -m compileall -q snapd >/dev/null
env -u PYTHONDONTWRITEBYTECODE "$VENV/bin/python" -m pytest -qq -p no:randomly --co \
  -o asyncio_default_fixture_loop_scope=function tests/test_config.py >/dev/null

echo "== plugin tests (pytest $("$VENV/bin/python" -c 'import pytest; print(pytest.__version__)'))"
# -p no:randomly, -p no:asyncio: this run's own order and loops stay plain (the projects the
# tests write turn those plugins on where a test is about them). Exit code 5 (no test ran)
# is a failure here: the leg exists to run them.
set +e
timeout --kill-after=30 "${PLUGINS_TIMEOUT:-1200}" \
  "$VENV/bin/python" -m pytest -p no:cacheprovider -p no:randomly -p no:asyncio -q -ra \
  --durations=10 tests/plugins
code=$?
set -e
if [ "$code" = 5 ]; then
  echo "no plugin test ran: the leg's venv lacks a plugin (see tests/plugins/conftest.py)" >&2
  exit 1
fi
exit "$code"
