#!/usr/bin/env bash
# Install snapd into .venv, generate the demo project (a synthetic monolith: 250 modules of
# import work and a 2 s session fixture) into .demo/, and time cold pytest against
# snapd pytest on it: a trivial test, a test using the session fixture, the whole suite.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
"$PYTHON" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q .  # a regular install, as users have (an editable one adds its import hook)
[ -d .demo ] || .venv/bin/python tools/make_project.py .demo
# Users' machines write bytecode: time what they would see.
unset PYTHONDONTWRITEBYTECODE
exec .venv/bin/python tools/bench.py --project .demo "$@"
